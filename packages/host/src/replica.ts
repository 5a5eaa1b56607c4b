/**
 * A pool worker thread: loads the model, owns one continuous-batching Engine and serves the
 * requests its host sends over a MessagePort. Its piscina task lasts as long as the replica,
 * so each replica keeps a thread of its own.
 */
import type { MessagePort } from 'node:worker_threads';
import {
  generationResult,
  loadModel,
  nativeEventError,
  type Delivery,
  type Engine,
  type GenerationListener,
  type Model,
} from '@lmserve/engine';
import {
  createLogger,
  toLmError,
  type DeviceUsage,
  type ErrorCode,
  type LoadReport,
  type Logger,
  type GenerateRequest,
  type HostSpec,
  type HostToReplica,
  type ModelSummary,
  type ReplicaExit,
  type ReplicaToHost,
} from '@lmserve/protocol';
import { buildPrompt } from './prompt.js';
import { RelayWriter } from './relay-writer.js';
import { eventInterval, relayIntervalMs } from './relay-interval.js';
import { StreamPublisher } from './stream-publisher.js';

export interface ReplicaTask {
  spec: HostSpec;
  replica: number;
  port: MessagePort;
}

/** How often a replica with requests checks its stats: a change of its busy slots or queue goes out then. */
const STATS_INTERVAL_MS = 500;
/**
 * Otherwise one report this often (and an idle engine checks only this often): each report wakes
 * this thread, the host and the supervisor, and each wake-up costs a decode thread its core on a
 * small machine (a report every 500 ms during one stream cost the supervisor about 1.5 ms of CPU
 * per 128-token request). It carries the token count, the KV fill and the host's process figures
 * (CPU, memory) to the metrics.
 */
const STATS_QUIET_MS = 5000;

function summarize(model: Model): ModelSummary {
  const { info } = model;
  return {
    architecture: info.architecture,
    parameterCount: info.parameterCount,
    sizeBytes: info.sizeBytes,
    trainedContextLength: info.trainedContextLength,
    vocabSize: info.vocabSize,
    hasChatTemplate: info.chatTemplate !== null && info.chatTemplate !== '',
  };
}

/**
 * Where the model went, from llama.cpp's memory breakdown of the loaded model and this context:
 * the devices holding any of it (host memory last), the backend of the first GPU-like device
 * holding weights (else cpu), and how many of the model's layers (its repeating layers and the
 * output layer, as llama.cpp counts n_gpu_layers) sit on GPU devices: GPU_LAYERS (or the fit's
 * choice) capped at that count, 0 when no GPU device holds weights.
 */
function loadReport(spec: HostSpec, seconds: number, model: Model, engine: Engine): LoadReport {
  const layers = model.info.layerCount + 1;
  let memory: DeviceUsage[] = [];
  try {
    memory = engine.memory().map((d) => ({
      name: d.name,
      description: d.description,
      backend: d.backend,
      modelBytes: d.modelBytes,
      contextBytes: d.contextBytes,
      computeBytes: d.computeBytes,
    }));
  } catch {
    // the breakdown is informative only
  }
  const used = memory.filter((d) => d.modelBytes + d.contextBytes + d.computeBytes > 0);
  const gpu = used.find((d) => d.name !== 'CPU' && d.modelBytes > 0);
  const asked = spec.gpuLayers === 'auto' || spec.gpuLayers < 0 ? layers : spec.gpuLayers;
  return {
    seconds,
    backend: gpu ? gpu.backend.toLowerCase() : 'cpu',
    devices: used.map((d) => d.name),
    gpuLayers: gpu ? Math.min(asked, layers) : 0,
    layers,
    memory: used,
  };
}

class Replica {
  readonly #spec: HostSpec;
  readonly #log: Logger;
  readonly #port: MessagePort;
  readonly #relay: RelayWriter;
  readonly #relayIntervalMs = relayIntervalMs();
  /** Running generations: request id -> cancel. */
  readonly #live = new Map<string, () => void>();
  /** This replica's NATS connection, when its worker is on NATS (HostSpec.nats). */
  readonly #publisher: StreamPublisher | undefined;
  /** Ends of published streams waiting for the NATS server to take their tokens. */
  readonly #settling = new Set<Promise<void>>();
  #idle: (() => void) | undefined;
  #model: Model | undefined;
  #engine: Engine | undefined;
  #shutdown: Promise<void> | undefined;
  #stopped!: () => void;
  #statsTimer: NodeJS.Timeout | undefined;
  /** When the next stats check is due (performance.now()). */
  #statsDue = 0;
  #lastStats = '';
  #lastStatsAt = 0;
  readonly #stoppedPromise = new Promise<void>((resolve) => (this.#stopped = resolve));

  constructor(spec: HostSpec, port: MessagePort, index: number) {
    this.#spec = spec;
    this.#log = createLogger({ component: 'replica', pid: process.pid, worker: spec.name, replica: index }, { level: spec.logLevel });
    this.#port = port;
    const fd = spec.relayFds[index];
    if (fd === undefined) throw new Error(`replica ${index} has no relay pipe (HostSpec.relayFds: ${JSON.stringify(spec.relayFds)})`);
    this.#relay = new RelayWriter({
      fd,
      onEnded: (ids) => this.#post({ type: 'ended', ids }),
      onError: (err) => this.#log.warn('the token relay to the supervisor failed', { error: err.message }),
    });
    this.#publisher = spec.nats ? new StreamPublisher(spec.nats, this.#log, `lmserve-host ${spec.name} ${index}`) : undefined;
    port.on('message', (message: HostToReplica) => this.#onMessage(message));
  }

  async run(): Promise<ReplicaExit> {
    const started = performance.now();
    try {
      const spec = this.#spec;
      this.#model = await loadModel(spec.modelPath, {
        gpuLayers: spec.gpuLayers,
        ...(spec.tensorSplit ? { tensorSplit: spec.tensorSplit } : {}),
        ...(spec.cpuTensors ? { cpuTensors: spec.cpuTensors } : {}),
        onProgress: (progress) => this.#post({ type: 'loading', progress }),
      });
      this.#engine = await this.#model.createEngine({
        slots: spec.slots,
        contextSize: spec.contextSize,
        ...(spec.batchSize > 0 ? { batchSize: spec.batchSize } : {}),
        ...(spec.prefixSharing !== undefined ? { prefixSharing: spec.prefixSharing } : {}),
        ...(spec.swaFull !== undefined ? { swaFull: spec.swaFull } : {}),
        ...(spec.promptCacheMiB !== undefined ? { promptCacheMiB: spec.promptCacheMiB } : {}),
        threads: spec.threads,
        maxQueue: spec.maxQueue,
      });
    } catch (err) {
      const error = toLmError(err);
      this.#model?.dispose();
      await this.#relay.close();
      await this.#publisher?.close();
      this.#port.close();
      return { type: 'failed', code: error.code, message: error.message };
    }
    this.#engine.onBatchEnd = () => this.#relay.stepEnded();
    if (this.#shutdown) {
      // Shut down while loading: nothing ran, free the engine at once.
      await this.#shutdown;
      this.#engine.dispose();
      this.#model.dispose();
      await this.#relay.close();
      await this.#publisher?.close();
      return { type: 'stopped' };
    }
    this.#post({ type: 'ready', model: summarize(this.#model), load: loadReport(this.#spec, (performance.now() - started) / 1000, this.#model, this.#engine) });
    this.#scheduleStats(STATS_INTERVAL_MS);
    await this.#stoppedPromise;
    clearTimeout(this.#statsTimer);
    this.#statsTimer = undefined;
    return { type: 'stopped' };
  }

  #post(message: ReplicaToHost): void {
    this.#port.postMessage(message);
  }

  #scheduleStats(ms: number): void {
    clearTimeout(this.#statsTimer);
    this.#statsDue = performance.now() + ms;
    this.#statsTimer = setTimeout(() => {
      const changed = this.#postStats();
      this.#scheduleStats(changed || this.#live.size > 0 ? STATS_INTERVAL_MS : STATS_QUIET_MS);
    }, ms);
  }

  /** Posts the engine's stats when they changed or STATS_QUIET_MS passed; true when they changed. */
  #postStats(): boolean {
    const engine = this.#engine;
    if (!engine || engine.disposed) return false;
    const s = engine.stats();
    // Busy slots and the queue are what readers act on (admin, routing, tests that wait for a
    // request to start); the token count and the KV fill change every step and ride along.
    const key = `${s.slotsBusy} ${s.queued}`;
    const now = performance.now();
    const changed = key !== this.#lastStats;
    if (!changed && now - this.#lastStatsAt < STATS_QUIET_MS - 50) return false;
    this.#lastStats = key;
    this.#lastStatsAt = now;
    this.#post({
      type: 'stats',
      stats: {
        replicas: 1,
        slots: s.slots,
        slotsBusy: s.slotsBusy,
        queued: s.queued,
        kvUsedRatio: s.kvUsedRatio,
        tokensGenerated: s.tokensGenerated,
        promptCache: { bytes: s.promptCacheBytes, entries: s.promptCacheEntries, restores: s.promptCacheRestores, tokensRestored: s.promptCacheTokensRestored },
      },
    });
    return changed;
  }

  #onMessage(message: HostToReplica): void {
    switch (message.type) {
      case 'generate':
        this.#generate(message.request);
        break;
      case 'cancel':
        this.#live.get(message.id)?.();
        break;
      case 'shutdown':
        this.#shutdown ??= this.#drain(message.graceMs);
        break;
    }
  }

  #generate(request: GenerateRequest): void {
    const { id } = request;
    const engine = this.#engine;
    if (!engine || this.#shutdown) {
      this.#refuse(id, 'MODEL_NOT_READY', 'the model is not serving');
      return;
    }
    // A quiet engine checks its stats every STATS_QUIET_MS: a request brings the check back to
    // STATS_INTERVAL_MS, so its slot shows busy within that.
    if (this.#statsTimer !== undefined && this.#statsDue - performance.now() > STATS_INTERVAL_MS) this.#scheduleStats(STATS_INTERVAL_MS);
    const stream = request.stream !== false;
    const logprobs = (request.params.logprobs ?? -1) >= 0;
    // Who carries the text: the engine itself (the decode thread collects it, and a direct
    // stream also writes it to the client's connection), or `tokens` events relayed step by
    // step (a stream that is not direct, and any request that asked for log-probabilities).
    const direct = stream && !logprobs && request.direct?.fd !== undefined ? request.direct : undefined;
    const delivery: Delivery = direct ? 'direct' : !stream && !logprobs ? 'final' : 'events';
    // A NATS stream whose token messages this replica publishes itself (stream-publisher.ts).
    const published = stream && !logprobs && !direct && request.publish ? (this.#publisher?.open(request.publish, id) ?? null) : null;
    // A request that does not stream but asked for log-probabilities keeps its text here, and
    // so does a published stream (its `done` carries the whole text).
    const texts: string[] = [];
    let first = true;
    /** Some of a published stream's tokens went through the relay after all (a publish failed). */
    let relayed = false;
    const end = () => {
      this.#live.delete(id);
      if (this.#live.size === 0) this.#idle?.();
    };
    // A published stream's end leaves once the NATS server has its tokens (the supervisor's
    // final message must follow them); any other end leaves with its decode step.
    const finish = (event: Parameters<RelayWriter['final']>[0]) => {
      if (!published) {
        this.#relay.final(event);
        return;
      }
      const settling = published.settled().then(() => {
        this.#settling.delete(settling);
        this.#relay.final(event);
        this.#relay.flush();
      });
      this.#settling.add(settling);
    };
    const listener: GenerationListener = {
      handle: (event) => {
        if (event.type === 'tokens') {
          if (published) {
            texts.push(event.text);
            if (!published.tokens(event.text, event.tokens)) {
              relayed = true;
              this.#relay.tokens(id, event.text, event.tokens, event.logprobs, first);
            }
          } else if (stream) this.#relay.tokens(id, event.text, event.tokens, event.logprobs, first);
          else texts.push(event.text);
          first = false;
          return;
        }
        end();
        if (event.type === 'done') {
          const { finishReason, stopString, usage, timings } = generationResult(event, '');
          this.#log.debug('generation ended', { reqId: id, finishReason, tokensIn: usage.tokensIn, tokensOut: usage.tokensOut });
          const text = delivery === 'events' ? (stream && !published ? undefined : texts.join('')) : (event.text ?? '');
          finish({
            type: 'done',
            id,
            ...(text !== undefined ? { text } : {}),
            finishReason,
            ...(stopString !== undefined ? { stopString } : {}),
            usage,
            timings,
            ...(event.tail ? { tail: event.tail } : {}),
            ...(published && !relayed ? { published: true as const } : {}),
          });
        } else {
          const error = nativeEventError(event.code, event.message);
          this.#log.debug('generation failed', { reqId: id, code: error.code, reason: error.message });
          finish({ type: 'error', id, code: error.code, message: error.message, ...(event.tail ? { tail: event.tail } : {}) });
        }
      },
      fail: (err) => {
        end();
        finish({ type: 'error', id, code: err.code, message: err.message });
        this.#relay.flush();
      },
    };
    try {
      const prompt = buildPrompt(this.#model as Model, this.#spec.promptTemplate, request);
      const output = direct
        ? { delivery, direct: { ...direct, fd: direct.fd as number } }
        : { delivery, ...(delivery === 'events' && stream ? { eventIntervalMs: eventInterval(request.eventIntervalMs, this.#relayIntervalMs) } : {}) };
      this.#live.set(id, engine.submitTo(listener, { prompt, params: request.params, ...output }));
    } catch (err) {
      this.#live.delete(id);
      const error = toLmError(err);
      this.#log.debug('generation refused', { reqId: id, code: error.code, reason: error.message });
      this.#refuse(id, error.code, error.message);
      return;
    }
    this.#log.debug('generation queued', { reqId: id });
  }

  /** A request that never reached the engine: its error leaves at once (no decode step follows). */
  #refuse(id: string, code: ErrorCode, message: string): void {
    this.#relay.final({ type: 'error', id, code, message });
    this.#relay.flush();
  }

  /** Lets running generations finish for up to graceMs, cancels the rest, then frees the engine. */
  async #drain(graceMs: number): Promise<void> {
    const idle = () =>
      this.#live.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#idle = resolve));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([idle(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const cancel of [...this.#live.values()]) cancel();
    // A cancelled generation ends at its next decode step; dispose() fails whatever is left.
    await Promise.race([idle(), new Promise((resolve) => setTimeout(resolve, 5000))]);
    this.#engine?.dispose();
    this.#model?.dispose();
    // Published streams' ends still waiting for the NATS server go out before the relay closes.
    await Promise.allSettled([...this.#settling]);
    await this.#relay.close();
    await this.#publisher?.close();
    this.#port.close();
    this.#stopped();
  }
}

export default async function runReplica(task: ReplicaTask): Promise<ReplicaExit> {
  return new Replica(task.spec, task.port, task.replica).run();
}
