/**
 * A worker's audit trail: every request end and lifecycle event as a row of its SQLite file.
 *
 * The caller's thread only maps a record to a tuple and pushes it onto an in-memory batch; the
 * batch is posted to the writer thread at most once per event-loop turn (the EventOutbox
 * pattern of the host), and the writer commits it. So recording costs the caller a few
 * microseconds and never waits on the disk, and a failing disk never fails the caller: the
 * store stops recording, counts what it loses, reports the episode once through onError, and
 * retries.
 */
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { EventQuery, EventRow, RequestEnd, RequestQuery, RequestRow, ServiceEvent, WorkerRecords } from '@lmserve/core';
import { LmError } from '@lmserve/protocol';
import type { StoreToWriter, WriterCounters, WriterSettings, WriterToStore } from './messages.js';
import { eventValues, requestValues, type EventValues, type RequestValues } from './rows.js';

export interface AuditStoreOptions {
  /** The SQLite file (its directory is created). */
  path: string;
  /** The worker's model name, for error messages. */
  model: string;
  /** LOG_BODIES: false stores input and output as NULL. */
  logBodies: boolean;
  /** Rows older than this are pruned (default 30). */
  retentionDays?: number;
  /** The newest rows kept per table (default 1,000,000). */
  maxRows?: number;
  /** How long rows wait in the writer before their transaction (default 200 ms). */
  flushMs?: number;
  /** Called once per failure episode (the file cannot be opened or written); never awaited. */
  onError?: (error: LmError) => void;
  /** Wait before retrying after a failure (default 30 s). */
  retryMs?: number;
  /** Pruning period (default 5 minutes); pruning also runs at open. */
  pruneIntervalMs?: number;
  /** SQLite busy timeout when another connection holds the lock (default 5 s). */
  busyTimeoutMs?: number;
}

export interface AuditStoreStats {
  /** Rows committed to the file. */
  written: number;
  /** Rows lost: not recording, a failed transaction, recorded after close. */
  dropped: number;
  /** Failed attempts to open, write or prune the file. */
  writeErrors: number;
  /** Rows recorded and neither committed nor dropped yet. */
  pending: number;
  recording: boolean;
  lastError: string | null;
}

export const AUDIT_DEFAULTS = {
  retentionDays: 30,
  maxRows: 1_000_000,
  flushMs: 200,
  batchRows: 500,
  retryMs: 30_000,
  pruneIntervalMs: 5 * 60_000,
  pruneChunk: 500,
  busyTimeoutMs: 5_000,
} as const;

type Reply = Extract<WriterToStore, { id: number }>;

export class AuditStore implements WorkerRecords {
  /** Absolute path of the SQLite file. */
  readonly path: string;
  readonly #settings: WriterSettings;
  readonly #logBodies: boolean;
  readonly #onError: ((error: LmError) => void) | undefined;
  #worker: Worker | null = null;
  #requests: RequestValues[] = [];
  #events: EventValues[] = [];
  #scheduled = false;
  readonly #waiting = new Map<number, (reply: Reply | null) => void>();
  #nextId = 1;
  #refed = true;
  #closing: Promise<void> | null = null;
  #restartTimer: NodeJS.Timeout | null = null;
  /** Rows handed to the writer (or batched for it), counted once each. */
  #recorded = 0;
  /** Rows lost on this side: unmappable, unpostable, recorded after close, or in a dead thread. */
  #lostHere = 0;
  /** The current writer thread's counters, as of its last message. */
  #counters: WriterCounters = { written: 0, dropped: 0, writeErrors: 0, recording: false, lastError: null };
  /** What earlier writer threads (ones that died) had counted. */
  #writerBase: WriterCounters = { written: 0, dropped: 0, writeErrors: 0, recording: false, lastError: null };

  private constructor(options: AuditStoreOptions) {
    this.path = resolve(options.path);
    this.#logBodies = options.logBodies;
    this.#onError = options.onError;
    this.#settings = {
      path: this.path,
      model: String(options.model),
      retentionDays: positive(options.retentionDays, AUDIT_DEFAULTS.retentionDays),
      maxRows: Math.floor(positive(options.maxRows, AUDIT_DEFAULTS.maxRows)),
      flushMs: positive(options.flushMs, AUDIT_DEFAULTS.flushMs),
      batchRows: AUDIT_DEFAULTS.batchRows,
      retryMs: positive(options.retryMs, AUDIT_DEFAULTS.retryMs),
      pruneIntervalMs: positive(options.pruneIntervalMs, AUDIT_DEFAULTS.pruneIntervalMs),
      pruneChunk: AUDIT_DEFAULTS.pruneChunk,
      busyTimeoutMs: positive(options.busyTimeoutMs, AUDIT_DEFAULTS.busyTimeoutMs),
    };
  }

  /**
   * Starts the writer thread, which opens the file. Never throws for the file's sake: a file
   * that cannot be opened surfaces through onError and stats(), and is retried.
   */
  static open(options: AuditStoreOptions): AuditStore {
    const store = new AuditStore(options);
    store.#start();
    return store;
  }

  /** Records one request end. Never throws; the row is committed within flushMs. */
  recordRequest(end: RequestEnd): void {
    if (this.#closing !== null) {
      this.#lostHere++;
      return;
    }
    let values: RequestValues;
    try {
      values = requestValues(end, this.#logBodies);
    } catch {
      // a record whose fields throw (a hostile getter): lost and counted, never the caller's problem
      this.#lostHere++;
      return;
    }
    this.#requests.push(values);
    this.#recorded++;
    this.#schedule();
  }

  /** Records one lifecycle event. Never throws. */
  recordEvent(event: ServiceEvent): void {
    if (this.#closing !== null) {
      this.#lostHere++;
      return;
    }
    let values: EventValues;
    try {
      values = eventValues(event);
    } catch {
      // a record whose fields throw (a hostile getter): lost and counted, never the caller's problem
      this.#lostHere++;
      return;
    }
    this.#events.push(values);
    this.#recorded++;
    this.#schedule();
  }

  /** Resolves when everything recorded so far is committed (or counted as dropped). Never rejects. */
  async flush(): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    await this.#ask((id) => ({ type: 'flush', id }));
  }

  /** Flushes, closes the file and ends the thread: a graceful shutdown loses nothing. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#restartTimer !== null) clearTimeout(this.#restartTimer);
      const worker = this.#worker;
      if (worker === null) {
        this.#post(); // no thread to take them: counted as dropped
        return;
      }
      await this.#ask((id) => ({ type: 'close', id }));
      this.#worker = null;
      await worker.terminate().catch(() => undefined);
      this.#counters.recording = false;
    })();
    return this.#closing;
  }

  stats(): AuditStoreStats {
    const c = this.#counters;
    const written = this.#writerBase.written + c.written;
    const dropped = this.#writerBase.dropped + c.dropped;
    return {
      written,
      dropped: dropped + this.#lostHere,
      writeErrors: this.#writerBase.writeErrors + c.writeErrors,
      pending: Math.max(0, this.#recorded - written - dropped),
      recording: c.recording,
      lastError: c.lastError ?? this.#writerBase.lastError,
    };
  }

  /** Newest first; sees every row recorded before the call. Rejects when the file cannot be read. */
  async requests(query: RequestQuery): Promise<RequestRow[]> {
    return (await this.#read((id) => ({ type: 'read-requests', id, query: plain(query) }))) as RequestRow[];
  }

  async events(query: EventQuery): Promise<EventRow[]> {
    return (await this.#read((id) => ({ type: 'read-events', id, query: plain(query) }))) as EventRow[];
  }

  async #read(message: (id: number) => StoreToWriter): Promise<RequestRow[] | EventRow[]> {
    if (this.#closing !== null) throw new LmError('DISPOSED', `the audit store ${this.path} is closed`);
    const reply = await this.#ask(message);
    if (reply?.type === 'rows') return reply.rows;
    throw new LmError('INTERNAL', reply?.type === 'read-failed' ? reply.message : `the audit store ${this.path} is not available`);
  }

  #start(): void {
    this.#restartTimer = null;
    let worker: Worker;
    try {
      worker = new Worker(writerUrl(), {
        workerData: this.#settings,
        name: `audit-store:${this.#settings.model}`,
        // The writer is plain JS next to this file; a loader the caller runs under (tsx in
        // tests) is not needed there and would only slow its start.
        execArgv: import.meta.url.endsWith('.ts') ? undefined : [],
      });
    } catch (err) {
      this.#writerFailed(err);
      return;
    }
    this.#worker = worker;
    this.#refed = true; // a new Worker starts referenced
    worker.on('message', (message: WriterToStore) => this.#receive(message));
    worker.on('error', (err) => this.#writerFailed(err));
    worker.on('exit', (code) => {
      if (this.#worker !== worker) return;
      if (this.#closing !== null && code === 0) {
        // Closed as asked: whoever still waits gets its answer (the 'closed' reply came first).
        this.#worker = null;
        for (const [, answer] of this.#waiting) answer(null);
        this.#waiting.clear();
        return;
      }
      this.#writerFailed(new Error(`the writer thread exited with code ${code}`));
    });
    this.#updateRef();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    this.#updateRef();
    setImmediate(() => this.#post());
  }

  /** Sends the batch of this turn. */
  #post(): void {
    this.#scheduled = false;
    const count = this.#requests.length + this.#events.length;
    if (count === 0) return;
    const requests = this.#requests;
    const events = this.#events;
    this.#requests = [];
    this.#events = [];
    const worker = this.#worker;
    try {
      if (worker === null) throw new Error('no writer thread');
      worker.postMessage({ type: 'rows', requests, events } satisfies StoreToWriter);
    } catch {
      this.#recorded -= count;
      this.#lostHere += count;
    }
    this.#updateRef();
  }

  /** Posts the pending batch, then a message that expects a reply; null when the writer is gone. */
  #ask(message: (id: number) => StoreToWriter): Promise<Reply | null> {
    this.#post();
    const worker = this.#worker;
    if (worker === null) return Promise.resolve(null);
    const id = this.#nextId++;
    return new Promise((resolvePromise) => {
      this.#waiting.set(id, resolvePromise);
      try {
        worker.postMessage(message(id));
      } catch {
        this.#waiting.delete(id);
        resolvePromise(null);
      }
      this.#updateRef();
    });
  }

  #receive(message: WriterToStore): void {
    if ('counters' in message) this.#counters = message.counters;
    if (message.type === 'failure') this.#reportError(new LmError('INTERNAL', message.message));
    if ('id' in message) {
      const resolveReply = this.#waiting.get(message.id);
      this.#waiting.delete(message.id);
      resolveReply?.(message);
    }
    this.#updateRef();
  }

  /**
   * The thread itself died (not a failing file: that is handled inside it). What it had not
   * settled is lost; waiting callers are answered; a new thread starts after retryMs.
   */
  #writerFailed(err: unknown): void {
    const worker = this.#worker;
    this.#worker = null;
    worker?.removeAllListeners();
    void worker?.terminate().catch(() => undefined);
    this.#writerBase = {
      written: this.#writerBase.written + this.#counters.written,
      dropped: this.#writerBase.dropped + this.#counters.dropped,
      writeErrors: this.#writerBase.writeErrors + this.#counters.writeErrors + 1,
      recording: false,
      lastError: `audit store of model "${this.#settings.model}": the writer thread failed: ${err instanceof Error ? err.message : String(err)}`,
    };
    // Everything posted to the dead thread and not settled by it is lost.
    const lost = this.#recorded - this.#requests.length - this.#events.length - this.#writerBase.written - this.#writerBase.dropped;
    this.#writerBase.dropped += Math.max(0, lost);
    this.#counters = { written: 0, dropped: 0, writeErrors: 0, recording: false, lastError: this.#writerBase.lastError };
    for (const [, answer] of this.#waiting) answer(null);
    this.#waiting.clear();
    this.#reportError(new LmError('INTERNAL', `${this.#writerBase.lastError}; not recording, restarting it in ${Math.round(this.#settings.retryMs / 1000)} s`, { cause: err }));
    if (this.#closing === null) {
      this.#restartTimer = setTimeout(() => this.#start(), this.#settings.retryMs);
      this.#restartTimer.unref();
    }
    this.#updateRef();
  }

  #reportError(error: LmError): void {
    try {
      this.#onError?.(error);
    } catch {
      // the callback is the caller's; a throw there must not reach the writer's message loop
    }
  }

  /**
   * The thread keeps the process alive only while it holds something of the caller's (rows not
   * yet committed, a flush or read in flight), so an idle store never blocks a process from
   * exiting and a busy one never lets it exit before its rows are written.
   */
  #updateRef(): void {
    const worker = this.#worker;
    if (worker === null) return;
    const busy = this.#scheduled || this.#waiting.size > 0 || this.stats().pending > 0;
    if (busy === this.#refed) return;
    this.#refed = busy;
    if (busy) worker.ref();
    else worker.unref();
  }
}

/** The writer thread's file, beside this one (dist/*.js, or src/*.ts under a TypeScript loader). */
function writerUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './writer-thread.ts' : './writer-thread.js', import.meta.url);
}

function positive(value: number | undefined, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** The query's own fields only: a caller's object may carry things that cannot be posted. */
function plain<T extends RequestQuery | EventQuery>(query: T): T {
  const out: Record<string, unknown> = {};
  for (const key of ['limit', 'status', 'transport', 'clientId', 'since', 'afterId', 'level', 'code']) {
    const value = (query as unknown as Record<string, unknown>)[key];
    if (value !== undefined) out[key] = typeof value === 'number' || typeof value === 'string' || value === null ? value : String(value);
  }
  return out as T;
}
