/**
 * The one place that publishes what the service did: the end of every request (of every
 * transport, whatever its outcome) and every worker lifecycle event. The audit store, the
 * metrics and the logs subscribe; the request path and the supervisor never call a sink
 * directly. A subscriber that throws is reported and skipped: a broken sink never breaks a
 * request or a worker.
 */
import type { ErrorCode, FinishReason, GenerateInput, GenerationParams, LogLevel, Logger } from '@lmserve/protocol';

/** How a request ended. `rejected`: refused for load (QUEUE_FULL) before any work. */
export type RequestStatus = 'completed' | 'failed' | 'cancelled' | 'rejected';

export interface RequestEnd {
  /** `<transport>-<uuid>`, created by the core. */
  reqId: string;
  /** An id the client gave (a JetStream job id, a Nats-Msg-Id), when there is one. */
  clientId: string | null;
  transport: string;
  worker: string;
  model: string;
  /** Pid of the model host that served it (null when none did). */
  hostPid: number | null;
  /** Unix milliseconds: when the transport handed the request to the core, and when it ended. */
  startedAt: number;
  endedAt: number;
  status: RequestStatus;
  /** The status a client of the original HTTP API sees (200, 400, 429, 499, 503...). */
  httpStatus: number;
  errorCode: ErrorCode | null;
  error: string | null;
  finishReason: FinishReason | null;
  /** null when the request never got past validation. */
  input: GenerateInput | null;
  /** Characters of input text. */
  inputLen: number;
  params: GenerationParams | null;
  /** The text returned to the client (null when none was). */
  output: string | null;
  usage: { tokensIn: number; tokensOut: number; cachedTokens: number };
  /** Milliseconds: queue wait in the engine, time to first token and total, as the core saw them. */
  timings: { queueMs: number | null; ttftMs: number | null; totalMs: number };
  /**
   * Milliseconds between consecutive tokens as the core relayed them (a batch of n tokens after a
   * gap of g ms counts as n samples of g/n). At most MAX_INTER_TOKEN_SAMPLES, the first ones.
   */
  interTokenMs: number[];
}

export const MAX_INTER_TOKEN_SAMPLES = 4096;

/** Lifecycle event codes (the original service's `startup`, `model.loading`, ... and ours). */
export type EventCode =
  | 'startup'
  | 'config.loaded'
  | 'config.invalid'
  | 'host.spawned'
  | 'host.spawn_failed'
  | 'model.missing'
  | 'model.loading'
  | 'model.loaded'
  | 'model.load_failed'
  | 'model.download.started'
  | 'model.download.progress'
  | 'model.download.completed'
  | 'model.download.failed'
  | 'services.init'
  | 'server.ready'
  | 'port.failed'
  | 'crash'
  | 'restart'
  | 'stop'
  | 'shutdown'
  | 'audit.failed'
  | 'nats.connected'
  | 'nats.disconnected'
  | 'nats.reconnected'
  | 'nats.error'
  | 'jobs.ready'
  | 'jobs.malformed'
  | 'jobs.duplicate'
  | 'jobs.redelivered'
  | 'jobs.dead_letter'
  | 'jobs.error'
  | 'internal.error';

export interface ServiceEvent {
  /** Unix milliseconds. */
  ts: number;
  level: LogLevel;
  code: EventCode;
  /** The worker it concerns (null: the supervisor as a whole). */
  worker: string | null;
  msg: string;
  data: Record<string, unknown>;
}

export type RequestListener = (end: RequestEnd) => void;
export type EventListener = (event: ServiceEvent) => void;

export class ServiceObserver {
  readonly #requestListeners = new Set<RequestListener>();
  readonly #eventListeners = new Set<EventListener>();
  readonly #log: Logger | undefined;

  constructor(options: { log?: Logger } = {}) {
    this.#log = options.log;
  }

  /** Subscribes to request ends; returns the unsubscribe function. */
  onRequest(listener: RequestListener): () => void {
    this.#requestListeners.add(listener);
    return () => this.#requestListeners.delete(listener);
  }

  /** Subscribes to lifecycle events; returns the unsubscribe function. */
  onEvent(listener: EventListener): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  publishRequest(end: RequestEnd): void {
    for (const listener of this.#requestListeners) this.#call(listener, end, 'request');
  }

  event(code: EventCode, worker: string | null, msg: string, data: Record<string, unknown> = {}, level: LogLevel = 'info'): void {
    const event: ServiceEvent = { ts: Date.now(), level, code, worker, msg, data };
    for (const listener of this.#eventListeners) this.#call(listener, event, 'event');
  }

  #call<T>(listener: (value: T) => void, value: T, kind: string): void {
    try {
      listener(value);
    } catch (err) {
      try {
        this.#log?.error('an observer subscriber failed', { kind, error: err instanceof Error ? err.message : String(err) });
      } catch {
        // the log itself failed: nothing left to report to
      }
    }
  }
}

/** The last `capacity` entries of a stream, with a sequence number each, for /admin reads and tests. */
export class RecentLog<T> {
  readonly #capacity: number;
  #items: Array<{ seq: number; item: T }> = [];
  #seq = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  push(item: T): void {
    this.#items.push({ seq: ++this.#seq, item });
    if (this.#items.length > this.#capacity) this.#items.splice(0, this.#items.length - this.#capacity);
  }

  /** Entries after `since` (a seq), oldest first, optionally filtered. */
  since(since = 0, filter: (item: T) => boolean = () => true): Array<{ seq: number; item: T }> {
    return this.#items.filter((e) => e.seq > since && filter(e.item));
  }
}
