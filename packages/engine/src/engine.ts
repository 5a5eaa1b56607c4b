import type { DeviceMemory } from './binding.js';
import { LmError, type EngineStats, type GenerationParams } from '@lmserve/protocol';
import type {
  Delivery,
  DirectOutput,
  GrammarSamplingStats,
  SamplingStats,
  PrefixSharingStats,
  NativeEngine,
  NativeEngineOptions,
  NativeEvent,
  NativeModel,
  NativeParams,
} from './binding.js';
import { nativeError } from './errors.js';
import { Generation } from './generation.js';

/**
 * Receives one engine request's events synchronously, as the decode thread hands each step over
 * (no promise, no queue per chunk): `tokens` any number of times, then `done` or `error` once.
 * `fail` reports an error raised on this side (the engine disposed).
 */
export interface GenerationListener {
  handle(event: NativeEvent): void;
  fail(error: LmError): void;
}

export interface EngineOptions {
  /** Parallel sequences decoded together (WORKER_CONCURRENCY). Default 4. */
  slots?: number;
  /** Tokens each sequence may hold, prompt and output together. Default 2048. */
  contextSize?: number;
  /** Tokens per decode step: one per generating sequence plus prompt chunks. Default 512. */
  batchSize?: number;
  /** CPU threads; 0 or undefined lets llama.cpp choose. */
  threads?: number;
  /** Requests that may wait for a slot before submit() fails with QUEUE_FULL. Default 64. */
  maxQueue?: number;
  /** One KV buffer shared by all sequences (default false: one per sequence). */
  kvUnified?: boolean;
  /**
   * With kvUnified: total KV cells shared by all sequences (default slots × contextSize). Smaller
   * values oversubscribe: when the cache fills, idle prompt caches are dropped first, then the
   * newest prompt waits in the queue again, then the longest sequence ends with "length".
   */
  kvSize?: number;
  flashAttention?: 'auto' | 'on' | 'off';
  /**
   * A new request starts from the longest prompt prefix any slot's KV cache holds (copied into
   * its own sequence), and waits briefly for one another slot is prefilling, so N requests with
   * the same system prompt prefill it once. Default true; false reuses only the chosen slot's cache.
   */
  prefixSharing?: boolean;
  /**
   * Models with sliding-window attention (gemma 2/3, gpt-oss, ...): keep every position for the
   * window layers too. Default false, as llama-server: those layers keep the window plus a batch
   * per sequence (a fraction of the KV memory, attention over the window only), and a cached
   * prompt is reused only while the cells its window needs are still there.
   */
  swaFull?: boolean;
  /**
   * Host memory (MiB) for prompt states, as llama-server's --cache-ram. A slot picked for a prompt
   * that shares less than half of what it holds saves that state first; a later prompt that
   * starts the same way (a system prompt after other requests went through every slot, a
   * conversation's next turn, a repeated request) restores it and prefills only the rest (its
   * usage.cachedTokens). Oldest entries leave first. Default 0: none.
   */
  promptCacheMiB?: number;
  /**
   * A request whose sampling keeps top-k (1..128) or is greedy after its repetition penalties,
   * with no grammar, reads only the k best logits of each step (one pass over the row; biased and
   * penalized tokens join them) instead of building llama.cpp's candidate array of the whole
   * vocabulary: the same tokens, at a fraction of the cost per token (a large vocabulary, many
   * sequences a step). Default true; false samples as llama.cpp's common sampler does, for
   * comparisons.
   */
  bestLogitsOnly?: boolean;
  /**
   * A step with 8 or more sequences without a grammar samples them on up to `threads` threads
   * (the decode's OpenMP pool, which waits meanwhile), a thread per 4 sequences at least. Each
   * sequence has its own chain and seed, so its tokens do not change. Default: true where the
   * build sees a GPU (the step is short and the CPU's cores wait meanwhile), false on a CPU-only
   * machine (the same cores decode; measured no faster on 2 cores). false samples every sequence
   * on the engine's thread, one after another (as llama-server does).
   */
  parallelSampling?: boolean;
}

/**
 * A templated prompt in parts: even indices are the template's markup (its control tokens are
 * parsed), odd indices are message content, tokenized as plain text (addon TokenizeTemplated).
 */
export interface TemplatedPrompt {
  parts: readonly string[];
}

export interface SubmitRequest {
  /** Text (tokenized with the model's BOS and special tokens), a templated prompt in parts, or token ids. */
  prompt: string | TemplatedPrompt | readonly number[] | Int32Array;
  params?: GenerationParams;
  signal?: AbortSignal;
  /** Whether special-token text in a string prompt is parsed as special tokens. Default true. */
  parseSpecial?: boolean;
  /** submitTo only: how the output leaves the engine (binding.ts Delivery). Default 'events'. */
  delivery?: Delivery;
  /** With delivery 'direct': where and how the decode thread writes each step. */
  direct?: DirectOutput;
  /**
   * Delivery 'events': after the first tokens event, the engine holds a request's tokens and
   * lets them go together at most every this many milliseconds (0, the default: every decode
   * step), and always before its end. Fewer, larger events: fewer wake-ups of whoever relays
   * them (a streamed request relayed to NATS, say).
   */
  eventIntervalMs?: number;
}

function positiveInt(name: string, value: unknown, min = 1): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new LmError('INVALID_REQUEST', `options.${name} must be an integer >= ${min}`, { field: `options.${name}` });
  }
  return value;
}

function optionalBoolean(name: string, value: unknown): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') {
    throw new LmError('INVALID_REQUEST', `options.${name} must be a boolean`, { field: `options.${name}` });
  }
  return value;
}

/** The options createEngine takes (memoryBytes is only reported). */
export type NativeEngineConfig = Partial<Omit<NativeEngineOptions, 'memoryBytes'>>;

export function nativeEngineOptions(options: EngineOptions): NativeEngineConfig {
  const out: NativeEngineConfig = {};
  const slots = positiveInt('slots', options.slots);
  const contextSize = positiveInt('contextSize', options.contextSize, 16);
  const batchSize = positiveInt('batchSize', options.batchSize);
  const threads = positiveInt('threads', options.threads, 0);
  const maxQueue = positiveInt('maxQueue', options.maxQueue, 0);
  if (slots !== undefined) out.slots = slots;
  if (contextSize !== undefined) out.contextSize = contextSize;
  out.batchSize = batchSize ?? Math.max(512, slots ?? 4);
  if (threads !== undefined) out.threads = threads;
  if (maxQueue !== undefined) out.maxQueue = maxQueue;
  const kvUnified = optionalBoolean('kvUnified', options.kvUnified);
  if (kvUnified !== undefined) out.kvUnified = kvUnified;
  const promptCacheMiB = positiveInt('promptCacheMiB', options.promptCacheMiB, 0);
  if (promptCacheMiB !== undefined) out.promptCacheMiB = promptCacheMiB;
  const prefixSharing = optionalBoolean('prefixSharing', options.prefixSharing);
  if (prefixSharing !== undefined) out.prefixSharing = prefixSharing;
  const swaFull = optionalBoolean('swaFull', options.swaFull);
  if (swaFull !== undefined) out.swaFull = swaFull;
  const bestLogitsOnly = optionalBoolean('bestLogitsOnly', options.bestLogitsOnly);
  if (bestLogitsOnly !== undefined) out.bestLogitsOnly = bestLogitsOnly;
  const parallelSampling = optionalBoolean('parallelSampling', options.parallelSampling);
  if (parallelSampling !== undefined) out.parallelSampling = parallelSampling;
  const kvSize = positiveInt('kvSize', options.kvSize, 0);
  if (kvSize !== undefined) out.kvSize = kvSize;
  if (options.flashAttention !== undefined) {
    const map = { auto: -1, off: 0, on: 1 } as const;
    if (!(options.flashAttention in map)) {
      throw new LmError('INVALID_REQUEST', 'options.flashAttention must be auto, on or off', { field: 'options.flashAttention' });
    }
    out.flashAttention = map[options.flashAttention];
  }
  return out;
}

/** GenerationParams as the addon takes them (validated there, with field names). */
export function nativeParams(params: GenerationParams = {}): NativeParams {
  if (typeof params !== 'object' || params === null) {
    throw new LmError('INVALID_REQUEST', 'params must be an object', { field: 'params' });
  }
  const { logitBias, stop, ...rest } = params;
  const out: NativeParams = { ...rest };
  if (stop !== undefined) out.stop = typeof stop === 'string' ? [stop] : [...stop];
  if (logitBias !== undefined) {
    if (Array.isArray(logitBias)) {
      out.logitBias = logitBias.map((pair) => [pair[0], pair[1]] as [number, number]);
    } else if (typeof logitBias === 'object' && logitBias !== null) {
      out.logitBias = Object.entries(logitBias).map(([k, v]) => {
        const id = Number(k);
        if (!/^\d+$/.test(k)) {
          throw new LmError('INVALID_REQUEST', `params.logitBias key "${k}" is not a token id`, { field: 'params.logitBias' });
        }
        return [id, v] as [number, number];
      });
    } else {
      throw new LmError('INVALID_REQUEST', 'params.logitBias must be an object of token id to bias', {
        field: 'params.logitBias',
      });
    }
  }
  return out;
}

/**
 * Continuous batching over one llama_context: every submitted request gets a sequence slot (or
 * waits in a bounded queue), and all running sequences advance together, one decode per step.
 */
export class Engine {
  readonly #native: NativeEngine;
  readonly #live = new Map<number, GenerationListener>();
  /** Called after each batch of events (one decode step) has been handed to the listeners. */
  onBatchEnd: (() => void) | undefined;
  #nextId = 1;
  #disposed = false;
  #onDispose: (() => void) | undefined;

  private constructor(native: NativeEngine) {
    this.#native = native;
  }

  /** @internal Use Model.createEngine(). */
  static async create(model: NativeModel, options: EngineOptions, onDispose?: () => void): Promise<Engine> {
    const nativeOptions = nativeEngineOptions(options);
    // Events only follow a submit(), so `engine` is always set when the callback runs.
    let engine: Engine | undefined;
    let native: NativeEngine;
    try {
      // Bad options (and a vocab-only model) throw synchronously, a failed context rejects.
      native = await model.createEngine(nativeOptions, (events) => {
        if (engine) engine.#dispatch(events);
      });
    } catch (err) {
      throw nativeError(err);
    }
    engine = new Engine(native);
    engine.#onDispose = onDispose;
    return engine;
  }

  /** The options in effect, and `memoryBytes`: what the engine holds beyond the model (estimated). */
  get options(): NativeEngineOptions {
    this.#check();
    return this.#native.options();
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** What the context holds per device (host memory last), as llama.cpp accounts it. */
  memory(): DeviceMemory[] {
    this.#check();
    return this.#native.memory();
  }

  /**
   * Queues a generation. Throws LmError at once for QUEUE_FULL, CONTEXT_OVERFLOW,
   * INVALID_GRAMMAR and INVALID_REQUEST; everything later arrives through the Generation.
   */
  submit(request: SubmitRequest): Generation {
    const generation = new Generation(request.signal);
    this.submitInto(generation, request);
    return generation;
  }

  /** @internal Feeds an existing Generation (used by Model.generate). */
  submitInto(generation: Generation, request: SubmitRequest): void {
    generation.attach(this.submitTo(generation, request));
  }

  /**
   * Queues a generation whose events go straight to `listener` (see GenerationListener); the
   * lowest-cost way to relay a step. Returns the function that cancels it. Throws like submit().
   */
  submitTo(listener: GenerationListener, request: SubmitRequest): () => void {
    this.#check();
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xfffffff0 ? 1 : this.#nextId + 1;
    const given = request.prompt;
    const prompt =
      typeof given === 'string' || given instanceof Int32Array
        ? given
        : 'parts' in given
          ? [...given.parts]
          : Int32Array.from(given);
    try {
      this.#native.submit(id, prompt, nativeParams(request.params), {
        parseSpecial: request.parseSpecial ?? true,
        ...(request.delivery !== undefined && request.delivery !== 'events' ? { delivery: request.delivery, direct: request.direct } : {}),
        ...(request.eventIntervalMs ? { eventIntervalMs: request.eventIntervalMs } : {}),
      });
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
    this.#live.set(id, listener);
    return () => {
      if (!this.#disposed && this.#live.has(id)) this.#native.cancel(id);
    };
  }

  /** The engine's counters, with the grammar sampling counters (fast path, full path, skipped steps), the model's grammar cache hits and misses, and the shared-prefix counters. */
  stats(): EngineStats & SamplingStats & GrammarSamplingStats & PrefixSharingStats {
    this.#check();
    try {
      return this.#native.stats();
    } catch (err) {
      throw nativeError(err);
    }
  }

  /** Stops the decode thread and frees the context. Running and queued generations fail with DISPOSED. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#native.dispose();
    for (const generation of this.#live.values()) {
      generation.fail(new LmError('DISPOSED', 'the engine was disposed'));
    }
    this.#live.clear();
    this.#onDispose?.();
  }

  #check(): void {
    if (this.#disposed) throw new LmError('DISPOSED', 'the engine has been disposed');
  }

  #dispatch(events: NativeEvent[]): void {
    for (const event of events) {
      const listener = this.#live.get(event.id);
      if (!listener) continue;
      if (event.type !== 'tokens') this.#live.delete(event.id);
      try {
        listener.handle(event);
      } catch {
        // a listener's failure is its own; the other sequences of the step still get theirs
      }
    }
    this.onBatchEnd?.();
  }
}
