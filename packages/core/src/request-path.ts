/**
 * The request path every transport takes to a model. A transport calls `begin()` as soon as a
 * request arrives (the core creates its id), then either `fail()` (it could not be parsed or
 * was refused at the door) or `run()`. Either way the request's end is published exactly once
 * to the observer, with its outcome, usage and timings. Nothing a backend or a transport
 * callback throws escapes as anything but an LmError.
 */
import {
  ErrorStatus,
  LmError,
  toLmError,
  type GenerateInput,
  type GenerationParams,
  type GenerationResult,
  type Logger,
  type PublishTarget,
} from '@lmserve/protocol';
import { isInlineGrammar, type DirectStream, type GrammarResolver, type ModelBackend, type TokenSink } from './backend.js';
import { inputLength } from './generate-body.js';
import { MAX_INTER_TOKEN_SAMPLES, type RequestEnd, type RequestStatus, type ServiceObserver } from './observer.js';
import { newRequestId } from './request-id.js';

export interface RunRequest {
  input: GenerateInput;
  params: GenerationParams;
  raw: boolean;
  /**
   * A streamed request's tokens may wait this long after its first ones to be sent together (the
   * transport's choice: each event costs every process it crosses a wake-up). Absent: the model
   * host's default (LMSERVE_RELAY_INTERVAL_MS). A direct HTTP stream has its own pace.
   */
  tokenIntervalMs?: number;
  /** A streamed NATS request's reply subject and token headers: the model host may publish the tokens itself. */
  publish?: PublishTarget;
}

export interface RequestPathOptions {
  backend: ModelBackend;
  observer: ServiceObserver;
  log: Logger;
  /** Resolves `params.grammar` names (absent: every grammar must be inline). */
  grammars?: GrammarResolver;
  /** The worker's request limits, read at each request (a reload changes them). Absent: none. */
  limits?: () => RequestLimits;
}

/** Limits every transport's requests share. */
export interface RequestLimits {
  /** REQUEST_TIMEOUT_MS: a request running longer (queue wait included) ends with TIMEOUT and frees its slot. 0: never. */
  timeoutMs: number;
  /** MAX_TOKENS: params.max_tokens above it is refused; absent (or -1) it becomes this. 0: no cap. */
  maxTokens: number;
  /** MAX_STOP_STRINGS, MAX_STOP_LENGTH, MAX_MESSAGES, MAX_GRAMMAR_BYTES: at most the built-in limits (absent: those). */
  maxStopStrings?: number;
  maxStopLength?: number;
  maxMessages?: number;
  maxGrammarBytes?: number;
}

const NO_LIMITS: RequestLimits = { timeoutMs: 0, maxTokens: 0 };

/**
 * The worker's own limits on stop strings, chat turns and grammar size, below the built-in ones
 * the edge has checked already: INVALID_REQUEST (INVALID_GRAMMAR for the grammar) naming the
 * field and the key.
 */
export function checkRequestLimits(input: GenerateInput, params: GenerationParams, limits: RequestLimits): void {
  const { maxStopStrings, maxStopLength, maxMessages, maxGrammarBytes } = limits;
  const stops = params.stop === undefined ? [] : typeof params.stop === 'string' ? [params.stop] : params.stop;
  if (maxStopStrings !== undefined && stops.length > maxStopStrings) {
    throw new LmError('INVALID_REQUEST', `params.stop has ${stops.length} strings; this model allows at most ${maxStopStrings} (MAX_STOP_STRINGS)`, { field: 'params.stop' });
  }
  if (maxStopLength !== undefined) {
    const long = stops.findIndex((s) => s.length > maxStopLength);
    if (long >= 0) {
      throw new LmError('INVALID_REQUEST', `params.stop[${long}] is longer than ${maxStopLength} characters (MAX_STOP_LENGTH)`, { field: 'params.stop' });
    }
  }
  if (maxMessages !== undefined && Array.isArray(input) && input.length > maxMessages) {
    throw new LmError('INVALID_REQUEST', `input has ${input.length} messages; this model allows at most ${maxMessages} (MAX_MESSAGES)`, { field: 'input' });
  }
  if (maxGrammarBytes !== undefined && params.grammar !== undefined && Buffer.byteLength(params.grammar) > maxGrammarBytes) {
    throw new LmError('INVALID_GRAMMAR', `params.grammar is larger than ${maxGrammarBytes} bytes (MAX_GRAMMAR_BYTES)`, { field: 'params.grammar' });
  }
}

/** params.max_tokens against MAX_TOKENS: refused above it, set to it when absent or -1 (until the context is full). */
export function capMaxTokens(params: GenerationParams, cap: number): GenerationParams {
  if (cap <= 0) return params;
  const asked = params.maxTokens;
  if (asked === undefined || asked < 0) return { ...params, maxTokens: cap };
  if (asked > cap) {
    throw new LmError('INVALID_REQUEST', `params.max_tokens is ${asked}; this model allows at most ${cap} (MAX_TOKENS)`, { field: 'params.max_tokens' });
  }
  return params;
}

export class RequestPath {
  readonly backend: ModelBackend;
  readonly #observer: ServiceObserver;
  readonly #log: Logger;
  readonly #grammars: GrammarResolver | undefined;
  readonly #limits: () => RequestLimits;

  constructor(options: RequestPathOptions) {
    this.backend = options.backend;
    this.#observer = options.observer;
    this.#log = options.log;
    this.#grammars = options.grammars;
    this.#limits = options.limits ?? (() => NO_LIMITS);
  }

  get worker(): string {
    return this.backend.name;
  }

  /** Starts a request of `transport` (e.g. "http", "nats", "jobs"): its id is created here. */
  begin(transport: string, clientId: string | null = null): ActiveRequest {
    return new ActiveRequest(newRequestId(transport), transport, clientId, this.backend, this.#observer, this.#log, this.#grammars, this.#limits());
  }
}

function statusOf(code: LmError['code']): RequestStatus {
  if (code === 'CANCELLED') return 'cancelled';
  if (code === 'QUEUE_FULL') return 'rejected';
  return 'failed';
}

export class ActiveRequest {
  readonly id: string;
  readonly transport: string;
  readonly clientId: string | null;
  readonly startedAt = Date.now();
  readonly #started = performance.now();
  readonly #backend: ModelBackend;
  readonly #observer: ServiceObserver;
  readonly #log: Logger;
  readonly #grammars: GrammarResolver | undefined;
  readonly #limits: RequestLimits;
  #ended = false;
  #running = false;
  #request: RunRequest | null = null;
  #firstTokenMs: number | null = null;
  #lastTokenMs = 0;
  #interTokenMs: number[] = [];
  #output: string[] = [];

  constructor(
    id: string,
    transport: string,
    clientId: string | null,
    backend: ModelBackend,
    observer: ServiceObserver,
    log: Logger,
    grammars?: GrammarResolver,
    limits: RequestLimits = NO_LIMITS,
  ) {
    this.id = id;
    this.#grammars = grammars;
    this.#limits = limits;
    this.transport = transport;
    this.clientId = clientId;
    this.#backend = backend;
    this.#observer = observer;
    this.#log = log.child({ reqId: id });
  }

  /** A logger whose every line carries this request's id. */
  get log(): Logger {
    return this.#log;
  }

  /**
   * Ends a request that never ran (invalid, unauthorized, refused at the door): publishes its
   * end and returns the error as an LmError for the transport to report.
   */
  fail(err: unknown, partial: Partial<RunRequest> = {}): LmError {
    const error = toLmError(err);
    if (!this.#running) {
      this.#request ??= { input: partial.input ?? null, params: partial.params ?? null, raw: partial.raw ?? false } as RunRequest;
      this.#end({ error });
    }
    return error;
  }

  /**
   * Runs the request on the model. `onTokens` sees each batch of text; if it throws (a client
   * gone mid-write), the generation is cancelled. Null: the transport answers with the result
   * alone, so no per-step events are produced (time to first token and the gaps between tokens
   * then come from the engine's timings). Rejects only with an LmError. `direct`: the backend
   * may write the tokens to the client's connection itself (DirectStream); `onTokens` then sees
   * none, and the timings come from the engine as for a request that does not stream.
   */
  async run(request: RunRequest, onTokens: TokenSink | null, signal: AbortSignal, direct?: DirectStream): Promise<GenerationResult> {
    if (this.#ended || this.#running) throw new LmError('INTERNAL', `request ${this.id} was already run`);
    this.#running = true;
    this.#request = request;
    const abort = new AbortController();
    const forward = () => abort.abort();
    if (signal.aborted) abort.abort();
    else signal.addEventListener('abort', forward, { once: true });
    const sink: TokenSink = (text, ids, logprobs) => {
      const now = performance.now() - this.#started;
      if (this.#firstTokenMs === null) {
        this.#firstTokenMs = now;
      } else if (ids.length > 0 && this.#interTokenMs.length < MAX_INTER_TOKEN_SAMPLES) {
        const each = (now - this.#lastTokenMs) / ids.length;
        for (let i = 0; i < ids.length && this.#interTokenMs.length < MAX_INTER_TOKEN_SAMPLES; i++) this.#interTokenMs.push(each);
      }
      if (ids.length > 0) this.#lastTokenMs = now;
      this.#output.push(text);
      try {
        onTokens?.(text, ids, logprobs);
      } catch (err) {
        this.#log.warn('the transport could not deliver tokens; cancelling', { error: toLmError(err).message });
        abort.abort();
      }
    };
    let result: GenerationResult;
    const { timeoutMs } = this.#limits;
    let timedOut = false;
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            abort.abort();
          }, timeoutMs)
        : undefined;
    const timeout = () => new LmError('TIMEOUT', `the request ran longer than ${timeoutMs} ms (REQUEST_TIMEOUT_MS) and was stopped`);
    try {
      this.#log.debug('request started', { transport: this.transport, worker: this.#backend.name });
      const params = capMaxTokens(this.#resolveGrammar(request.params), this.#limits.maxTokens);
      checkRequestLimits(request.input, params, this.#limits);
      result = checkResult(
        await this.#backend.complete({ id: this.id, input: request.input, params, raw: request.raw, ...(request.tokenIntervalMs !== undefined ? { eventIntervalMs: request.tokenIntervalMs } : {}), ...(request.publish && onTokens !== null ? { publish: request.publish } : {}) }, onTokens === null ? null : sink, abort.signal, onTokens === null ? undefined : direct),
      );
      if (timedOut && result.finishReason === 'cancelled') throw timeout();
      this.#timingsFromResult(result);
    } catch (err) {
      const error = timedOut && toLmError(err).code === 'CANCELLED' ? timeout() : toLmError(err);
      this.#end({ error });
      throw error;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', forward);
    }
    this.#end({ result });
    return result;
  }

  /**
   * A request that did not stream (or streamed directly) saw no tokens arrive: its time to first token is when the
   * first token would have reached this process (our elapsed time less what the engine spent
   * after its first token), and its gaps are the engine's mean decode gap, one per token.
   */
  #timingsFromResult(result: GenerationResult): void {
    const { usage, timings } = result;
    if (usage.tokensOut === 0 || this.#firstTokenMs !== null) return;
    const elapsed = performance.now() - this.#started;
    const afterFirst = Math.max(0, timings.totalMs - timings.ttftMs);
    this.#firstTokenMs = Math.max(0, elapsed - afterFirst);
    const gaps = usage.tokensOut - 1;
    if (gaps <= 0) return;
    const each = timings.decodeMs / gaps;
    for (let i = 0; i < gaps && this.#interTokenMs.length < MAX_INTER_TOKEN_SAMPLES; i++) this.#interTokenMs.push(each);
  }

  /** A grammar given by name becomes the library's content, before any work is queued. */
  #resolveGrammar(params: GenerationParams): GenerationParams {
    const { grammar } = params;
    if (grammar === undefined || isInlineGrammar(grammar)) return params;
    const found = this.#grammars?.resolve(grammar) ?? null;
    if (!found) {
      throw new LmError('GRAMMAR_NOT_FOUND', `params.grammar names no grammar of the library: "${grammar.slice(0, 64)}"`, { field: 'params.grammar' });
    }
    return { ...params, grammar: found.content, grammarRoot: params.grammarRoot ?? found.root };
  }

  #end(outcome: { result?: GenerationResult; error?: LmError }): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.#observer.publishRequest(this.#record(outcome));
    } catch (err) {
      this.#log.error('could not publish the end of a request', { error: toLmError(err).message });
    }
  }

  #record({ result, error }: { result?: GenerationResult; error?: LmError }): RequestEnd {
    const totalMs = performance.now() - this.#started;
    const request = this.#request;
    const status: RequestStatus = error ? statusOf(error.code) : result?.finishReason === 'cancelled' ? 'cancelled' : 'completed';
    const input = request?.input ?? null;
    const end: RequestEnd = {
      reqId: this.id,
      clientId: this.clientId,
      transport: this.transport,
      worker: this.#backend.name,
      model: this.#backend.model,
      hostPid: this.#backend.hostPid,
      startedAt: this.startedAt,
      endedAt: this.startedAt + Math.round(totalMs),
      status,
      httpStatus: error ? error.status : status === 'cancelled' ? ErrorStatus.CANCELLED : 200,
      errorCode: error?.code ?? null,
      error: error?.message ?? null,
      finishReason: result?.finishReason ?? null,
      input,
      inputLen: input === null ? 0 : inputLength(input),
      params: request?.params ?? null,
      output: result ? result.text : this.#output.length > 0 ? this.#output.join('') : null,
      usage: {
        tokensIn: result?.usage.tokensIn ?? 0,
        tokensOut: result?.usage.tokensOut ?? 0,
        cachedTokens: result?.usage.cachedTokens ?? 0,
      },
      timings: { queueMs: result?.timings.queueMs ?? null, ttftMs: this.#firstTokenMs, totalMs },
      interTokenMs: this.#interTokenMs,
    };
    const level = error && error.status >= 500 ? 'warn' : 'debug';
    this.#log[level]('request ended', {
      status,
      code: end.errorCode,
      tokensIn: end.usage.tokensIn,
      tokensOut: end.usage.tokensOut,
      ms: Math.round(totalMs),
      ...(error && error.status >= 500 ? { reason: error.message } : {}),
    });
    return end;
  }
}

/** A backend's result is checked before anyone reads it: a malformed one is an INTERNAL error. */
function checkResult(result: GenerationResult): GenerationResult {
  const ok =
    typeof result === 'object' &&
    result !== null &&
    typeof result.text === 'string' &&
    typeof result.finishReason === 'string' &&
    typeof result.usage?.tokensIn === 'number' &&
    typeof result.usage?.tokensOut === 'number' &&
    typeof result.timings?.totalMs === 'number';
  if (!ok) throw new LmError('INTERNAL', 'the model returned a malformed result');
  return result;
}
