/**
 * The database thread of one GrammarLibrary: it owns the SQLite connection, so no statement
 * ever runs on the supervisor's event loop. Requests are handled one at a time in arrival
 * order; each is answered once. A failure fails that request, never the thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GrammarDb, RefusedFile, WriteConflict } from './grammar-db.js';
import type { DbThreadSettings, DbToLibrary, LibraryToDb } from './messages.js';
import { describeError as describe } from '@lmserve/store';

class DbThread {
  readonly #settings: DbThreadSettings;
  readonly #send: (message: DbToLibrary) => void;
  #db: GrammarDb | null = null;

  constructor(settings: DbThreadSettings, send: (message: DbToLibrary) => void) {
    this.#settings = settings;
    this.#send = send;
  }

  handle(message: LibraryToDb): void {
    try {
      switch (message.type) {
        case 'open': {
          const db = this.#db ?? GrammarDb.open(this.#settings.path, this.#settings.busyTimeoutMs);
          this.#db = db;
          const seeded = message.builtins === null ? null : db.seed(message.builtins, message.now);
          this.#send({ type: 'opened', id: message.id, rows: db.all(), seeded });
          return;
        }
        case 'insert':
          this.#open().insert(message.row);
          break;
        case 'update':
          this.#open().update(message.row, message.expectVersion);
          break;
        case 'delete':
          this.#open().delete(message.name);
          break;
        case 'close':
          this.#close();
          this.#send({ type: 'done', id: message.id });
          parentPort?.close();
          return;
      }
      this.#send({ type: 'done', id: message.id });
    } catch (err) {
      const kind = err instanceof WriteConflict ? err.kind : err instanceof RefusedFile ? 'refused' : 'failed';
      // The file's own failure (I/O, disk full, replaced): the next request opens it afresh.
      if (kind === 'failed') this.#close();
      this.#send({ type: 'failed', id: message.id, kind, message: describe(err) });
    }
  }

  #open(): GrammarDb {
    this.#db ??= GrammarDb.open(this.#settings.path, this.#settings.busyTimeoutMs);
    return this.#db;
  }

  #close(): void {
    const db = this.#db;
    this.#db = null;
    try {
      db?.close();
    } catch {
      // a connection that failed underneath: it is gone either way
    }
  }
}

if (parentPort !== null) {
  const port = parentPort;
  const thread = new DbThread(workerData as DbThreadSettings, (message) => port.postMessage(message));
  port.on('message', (message: LibraryToDb) => thread.handle(message));
}
