/**
 * The writer thread of one AuditStore: it owns the SQLite connection, so no write, read or
 * prune ever runs on the caller's event loop.
 *
 * Rows arrive in batches (one message per caller turn) and wait here until flushMs has passed
 * or batchRows are pending; then they are committed in one transaction. A flush, a read or a
 * close first commits whatever is pending, so each sees every row recorded before it.
 *
 * Failures degrade, never end the thread: when the file cannot be opened or written, the rows
 * of that attempt are counted as dropped, the connection is closed, and rows that arrive before
 * the next attempt (retryMs later) are dropped at once. A failure episode is reported once; a
 * commit ends it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { AuditDb, RefusedFile, type PruneCutoffs } from './audit-db.js';
import type { StoreToWriter, WriterCounters, WriterSettings, WriterToStore } from './messages.js';
import type { EventValues, RequestValues } from './rows.js';
import { describeError as describe } from './versioned-sqlite.js';

class AuditWriter {
  readonly #settings: WriterSettings;
  readonly #send: (message: WriterToStore) => void;
  #db: AuditDb | null = null;
  #requests: RequestValues[] = [];
  #events: EventValues[] = [];
  #flushTimer: NodeJS.Timeout | null = null;
  #retryTimer: NodeJS.Timeout | null = null;
  #pruneTimer: NodeJS.Timeout | null = null;
  #pruning: PruneCutoffs | null = null;
  /** A pruning pass is under way (its chunks chained with setImmediate). */
  #pruneActive = false;
  /** No attempt before this time (ms) after a failure. */
  #retryAt = 0;
  #inFailure = false;
  #closed = false;
  readonly #counters: WriterCounters = { written: 0, dropped: 0, writeErrors: 0, recording: false, lastError: null };

  constructor(settings: WriterSettings, send: (message: WriterToStore) => void) {
    this.#settings = settings;
    this.#send = send;
  }

  start(): void {
    // #open schedules the first pruning pass when it succeeds.
    if (this.#open()) this.#report();
  }

  handle(message: StoreToWriter): void {
    switch (message.type) {
      case 'rows':
        this.#accept(message.requests, message.events);
        return;
      case 'flush':
        this.#write();
        this.#send({ type: 'flushed', id: message.id, counters: { ...this.#counters } });
        return;
      case 'read-requests':
      case 'read-events':
        this.#write();
        this.#read(message);
        return;
      case 'close':
        this.#write();
        this.#close();
        this.#send({ type: 'closed', id: message.id, counters: { ...this.#counters } });
        parentPort?.close();
        return;
    }
  }

  #accept(requests: RequestValues[], events: EventValues[]): void {
    if (this.#closed) return;
    for (const r of requests) this.#requests.push(r);
    for (const e of events) this.#events.push(e);
    const pending = this.#requests.length + this.#events.length;
    if (pending >= this.#settings.batchRows) this.#write();
    else if (this.#flushTimer === null) this.#flushTimer = setTimeout(() => this.#write(), this.#settings.flushMs);
  }

  /** Commits everything pending in one transaction (or drops it while not recording). */
  #write(): void {
    if (this.#flushTimer !== null) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = null;
    }
    const requests = this.#requests;
    const events = this.#events;
    const count = requests.length + events.length;
    if (count === 0) return;
    this.#requests = [];
    this.#events = [];
    if (this.#db !== null && !this.#db.sameFile()) {
      // Deleted or replaced under us: reopen at the path instead of writing into a lost inode.
      this.#closeDb();
      this.#retryAt = 0;
    }
    if (this.#db === null && (Date.now() < this.#retryAt || !this.#open())) {
      this.#counters.dropped += count;
      this.#report();
      return;
    }
    try {
      const written = (this.#db as AuditDb).insert(requests, events);
      this.#counters.written += written;
      this.#counters.dropped += count - written;
      this.#recovered();
    } catch (err) {
      this.#counters.dropped += count;
      this.#fail(`cannot write to ${this.#settings.path}`, err);
      return;
    }
    this.#report();
  }

  /** Opens the file; on failure enters (or stays in) the failure episode and returns false. */
  #open(): boolean {
    if (this.#closed) return false;
    if (this.#db !== null) return true;
    try {
      this.#db = AuditDb.open(this.#settings.path, this.#settings.busyTimeoutMs);
    } catch (err) {
      // A refusal's message already names the file and says why.
      this.#fail(err instanceof RefusedFile ? null : `cannot open ${this.#settings.path}`, err);
      return false;
    }
    this.#recovered();
    // Pruning at open (and at every reopen: a file that was unwritable for a while is due).
    if (!this.#pruneActive) this.#schedulePrune(0);
    return true;
  }

  #recovered(): void {
    this.#inFailure = false;
    this.#counters.recording = true;
    if (this.#retryTimer !== null) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
  }

  #fail(what: string | null, err: unknown): void {
    this.#closeDb();
    this.#counters.writeErrors++;
    this.#counters.recording = false;
    this.#counters.lastError = `audit store of model "${this.#settings.model}": ${what === null ? '' : `${what}: `}${describe(err)}`;
    this.#retryAt = Date.now() + this.#settings.retryMs;
    // Retry on a timer too, so a fixed disk shows as recording again without waiting for rows.
    if (this.#retryTimer === null && !this.#closed) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        if (this.#open()) this.#report();
      }, this.#settings.retryMs);
    }
    if (this.#inFailure) {
      this.#report();
      return;
    }
    this.#inFailure = true;
    this.#send({
      type: 'failure',
      message: `${this.#counters.lastError}; not recording, retrying every ${Math.round(this.#settings.retryMs / 1000)} s`,
      counters: { ...this.#counters },
    });
  }

  #read(message: Extract<StoreToWriter, { type: 'read-requests' | 'read-events' }>): void {
    if (this.#db === null) {
      this.#send({ type: 'read-failed', id: message.id, message: `audit store of model "${this.#settings.model}" is not available: ${this.#counters.lastError ?? 'closed'}` });
      return;
    }
    try {
      const rows = message.type === 'read-requests' ? this.#db.readRequests(message.query) : this.#db.readEvents(message.query);
      this.#send({ type: 'rows', id: message.id, rows });
    } catch (err) {
      this.#send({ type: 'read-failed', id: message.id, message: `cannot read ${this.#settings.path}: ${describe(err)}` });
    }
  }

  #schedulePrune(delayMs: number): void {
    if (this.#closed) return;
    if (this.#pruneTimer !== null) clearTimeout(this.#pruneTimer);
    this.#pruneTimer = setTimeout(() => {
      this.#pruneTimer = null;
      this.#pruneStep();
    }, delayMs);
  }

  /**
   * One chunk per turn of this thread's loop: batches and reads arriving meanwhile are served
   * between chunks, and no single DELETE holds the write lock for long.
   */
  #pruneStep(): void {
    if (this.#closed) return;
    this.#pruneActive = true;
    const db = this.#db;
    let more = false;
    if (db !== null) {
      try {
        this.#pruning ??= db.pruneCutoffs(Date.now(), this.#settings.retentionDays, this.#settings.maxRows);
        more = db.pruneChunk(this.#pruning, this.#settings.pruneChunk) > 0;
      } catch (err) {
        this.#fail(`cannot prune ${this.#settings.path}`, err);
      }
    }
    if (more) {
      setImmediate(() => this.#pruneStep());
      return;
    }
    this.#pruning = null;
    this.#pruneActive = false;
    this.#schedulePrune(this.#settings.pruneIntervalMs);
  }

  #report(): void {
    this.#send({ type: 'counters', counters: { ...this.#counters } });
  }

  #closeDb(): void {
    const db = this.#db;
    this.#db = null;
    this.#pruning = null;
    if (db === null) return;
    try {
      db.close();
    } catch {
      // a connection that failed underneath: it is gone either way
    }
  }

  #close(): void {
    this.#closed = true;
    for (const timer of [this.#flushTimer, this.#retryTimer, this.#pruneTimer]) if (timer !== null) clearTimeout(timer);
    this.#flushTimer = this.#retryTimer = this.#pruneTimer = null;
    this.#closeDb();
    this.#counters.recording = false;
  }
}

if (parentPort !== null) {
  const port = parentPort;
  const writer = new AuditWriter(workerData as WriterSettings, (message) => port.postMessage(message));
  port.on('message', (message: StoreToWriter) => writer.handle(message));
  writer.start();
}
