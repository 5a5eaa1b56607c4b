/**
 * One open audit file: open (check, migrate, probe), insert a batch in one transaction, read,
 * prune in chunks. Synchronous and used only by the writer thread, which owns the connection;
 * every method throws on failure and the thread decides what a failure means.
 */
import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { EventQuery, EventRow, RequestQuery, RequestRow } from '@lmserve/core';
import type { EventValues, RequestValues } from './rows.js';
import {
  EVENT_INSERT_COLUMNS,
  MIGRATIONS,
  REQUEST_INSERT_COLUMNS,
  SCHEMA_VERSION,
  V1_COLUMNS,
  builder,
  run,
} from './schema.js';

/** Refusals that retrying cannot fix by itself (the file belongs to someone else or is newer). */
export class RefusedFile extends Error {
  override readonly name = 'RefusedFile';
}

/** Limits a read to 1..1000 rows; a limit that is not a number reads 100. */
export function clampLimit(limit: unknown): number {
  if (typeof limit !== 'number' || !Number.isFinite(limit)) return 100;
  return Math.min(1000, Math.max(1, Math.floor(limit)));
}

export interface PruneCutoffs {
  /** Unix seconds: rows older than this go. */
  ts: number;
  /** Rows with an id at or below these go (beyond maxRows); null: under the cap. */
  requestsId: number | null;
  eventsId: number | null;
}

export class AuditDb {
  readonly #db: Database.Database;
  readonly #path: string;
  readonly #ino: number;
  readonly #dev: number;
  readonly #insertRequest: Database.Statement;
  readonly #insertEvent: Database.Statement;
  readonly #reads = new Map<string, Database.Statement>();
  readonly #insertBatch: (requests: RequestValues[], events: EventValues[]) => number;

  private constructor(db: Database.Database, path: string) {
    this.#db = db;
    this.#path = path;
    const stat = statSync(path);
    this.#ino = stat.ino;
    this.#dev = stat.dev;
    this.#insertRequest = db.prepare(insertSql('requests', REQUEST_INSERT_COLUMNS));
    this.#insertEvent = db.prepare(insertSql('events', EVENT_INSERT_COLUMNS));
    this.#insertBatch = db.transaction((requests: RequestValues[], events: EventValues[]) => {
      let written = 0;
      for (const values of requests) written += this.#insertOne(this.#insertRequest, values);
      for (const values of events) written += this.#insertOne(this.#insertEvent, values);
      return written;
    });
  }

  /**
   * Opens (creating the directory and the file), refuses a file that is not ours or is newer
   * than this code, migrates an older one, and proves the file writable with a write of its
   * own, so an open that returns means rows can be committed.
   */
  static open(path: string, busyTimeoutMs: number): AuditDb {
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path, { timeout: busyTimeoutMs });
    try {
      // Look before writing anything: a refused file is left exactly as it was (the WAL pragma
      // below would already change its header).
      const version = currentVersion(db, path);
      if (version > SCHEMA_VERSION) throw newerRefusal(path, version);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (String(mode).toLowerCase() !== 'wal') throw new Error(`cannot switch ${path} to WAL (journal_mode is ${String(mode)})`);
      // NORMAL in WAL mode: a commit survives a crash of the process (kill -9); only a power cut
      // can take the last transactions back, never the file's consistency.
      db.pragma('synchronous = NORMAL');
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
      if (version < SCHEMA_VERSION) migrate(db, path);
      const audit = new AuditDb(db, path);
      audit.probe();
      return audit;
    } catch (err) {
      try {
        db.close();
      } catch {
        // closing a connection that failed to open: nothing more to do
      }
      throw err;
    }
  }

  /** A write of nothing (schema_version onto itself): fails where a real batch would. */
  probe(): void {
    run(this.#db, builder.updateTable('schema_version').set((eb) => ({ version: eb.ref('version') })));
  }

  /**
   * False when the path no longer names the file this connection has open (deleted, replaced,
   * its directory gone): the connection would go on writing to an unlinked inode, and those
   * rows would be lost without an error.
   */
  sameFile(): boolean {
    try {
      const stat = statSync(this.#path);
      return stat.ino === this.#ino && stat.dev === this.#dev;
    } catch {
      return false;
    }
  }

  /** One transaction for the whole batch; returns the rows written (malformed rows are skipped). */
  insert(requests: RequestValues[], events: EventValues[]): number {
    return this.#insertBatch(requests, events);
  }

  #insertOne(statement: Database.Statement, values: unknown[]): number {
    try {
      statement.run(values);
      return 1;
    } catch (err) {
      // A value SQLite cannot bind (TypeError/RangeError) spoils one row, not the batch; an
      // SQLite error (disk full, read-only, I/O) is the file's and fails the transaction.
      if (err instanceof TypeError || err instanceof RangeError) return 0;
      throw err;
    }
  }

  readRequests(query: RequestQuery): RequestRow[] {
    let q = builder.selectFrom('requests').selectAll();
    if (query.status != null) q = q.where('status', '=', query.status);
    if (query.transport != null) q = q.where('transport', '=', query.transport);
    if (query.since != null) q = q.where('ts', '>=', query.since);
    if (query.afterId != null) q = q.where('id', '>', query.afterId);
    return this.#all(q.orderBy('id', 'desc').limit(clampLimit(query.limit))) as RequestRow[];
  }

  readEvents(query: EventQuery): EventRow[] {
    let q = builder.selectFrom('events').selectAll();
    if (query.level != null) q = q.where('level', '=', query.level);
    if (query.code != null) q = q.where('code', '=', query.code);
    if (query.since != null) q = q.where('ts', '>=', query.since);
    if (query.afterId != null) q = q.where('id', '>', query.afterId);
    return this.#all(q.orderBy('id', 'desc').limit(clampLimit(query.limit))) as EventRow[];
  }

  #all(query: { compile(): { sql: string; parameters: readonly unknown[] } }): unknown[] {
    const compiled = query.compile();
    let statement = this.#reads.get(compiled.sql);
    if (statement === undefined) {
      // A handful of shapes (each filter present or not): prepared once per connection.
      statement = this.#db.prepare(compiled.sql);
      this.#reads.set(compiled.sql, statement);
    }
    return statement.all(...(compiled.parameters as unknown[]));
  }

  /** Where this pruning pass stops: computed once, so each chunk is a cheap indexed delete. */
  pruneCutoffs(nowMs: number, retentionDays: number, maxRows: number): PruneCutoffs {
    const capId = (table: 'requests' | 'events'): number | null => {
      // The newest row beyond the cap: it and everything older go.
      const compiled = builder.selectFrom(table).select('id').orderBy('id', 'desc').limit(1).offset(maxRows).compile();
      const id = this.#db.prepare(compiled.sql).pluck().get(...(compiled.parameters as unknown[]));
      return typeof id === 'number' ? id : null;
    };
    return { ts: nowMs / 1000 - retentionDays * 86_400, requestsId: capId('requests'), eventsId: capId('events') };
  }

  /** Deletes at most `chunk` rows of one kind (age first, then the cap); 0 when nothing is left. */
  pruneChunk(cutoffs: PruneCutoffs, chunk: number): number {
    for (const table of ['requests', 'events'] as const) {
      const old = run(
        this.#db,
        builder.deleteFrom(table).where('id', 'in', (eb) => eb.selectFrom(table).select('id').where('ts', '<', cutoffs.ts).limit(chunk)),
      ).changes;
      if (old > 0) return old;
      const capId = table === 'requests' ? cutoffs.requestsId : cutoffs.eventsId;
      if (capId === null) continue;
      const over = run(
        this.#db,
        builder.deleteFrom(table).where('id', 'in', (eb) => eb.selectFrom(table).select('id').where('id', '<=', capId).orderBy('id').limit(chunk)),
      ).changes;
      if (over > 0) return over;
    }
    return 0;
  }

  close(): void {
    this.#db.close();
  }
}

function insertSql(table: 'requests' | 'events', columns: readonly string[]): string {
  // Compiled once from Kysely with one placeholder per column, in the order of the values tuples.
  const values = Object.fromEntries(columns.map((c) => [c, null]));
  return builder.insertInto(table).values(values as never).compile().sql;
}

/** The file's schema version: 0 for an empty file or one of the original service (adopted). */
function currentVersion(db: Database.Database, path: string): number {
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .pluck()
    .all() as string[];
  if (tables.includes('schema_version')) {
    const version = db.prepare('SELECT max(version) FROM schema_version').pluck().get();
    return typeof version === 'number' ? version : 0;
  }
  if (tables.length === 0) return 0;
  const original = tables.every((table) => {
    if (table !== 'requests' && table !== 'events') return false;
    const columns = new Set((db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).map((c) => c.name));
    return V1_COLUMNS[table].every((c) => columns.has(c));
  });
  if (!original) {
    throw new RefusedFile(
      `${path} is not an lmserve audit file (it has the tables ${tables.join(', ')} and no schema_version): ` +
        'refusing to use or change it; point the store at another file or move this one away',
    );
  }
  return 0;
}

function newerRefusal(path: string, version: number): RefusedFile {
  return new RefusedFile(
    `${path} has audit schema version ${version}, newer than this lmserve's (${SCHEMA_VERSION}): ` +
      'refusing to use or change it; upgrade lmserve or point the store at another file',
  );
}

/** Every missing version in one IMMEDIATE transaction, with the version re-read under the lock. */
function migrate(db: Database.Database, path: string): void {
  db.transaction(() => {
    // Another process may have migrated between our look and this lock.
    const version = currentVersion(db, path);
    if (version > SCHEMA_VERSION) throw newerRefusal(path, version);
    run(db, builder.schema.createTable('schema_version').ifNotExists().addColumn('version', 'integer', (c) => c.notNull()));
    for (let v = version + 1; v <= SCHEMA_VERSION; v++) {
      const step = MIGRATIONS.get(v);
      if (step === undefined) throw new Error(`no migration to audit schema version ${v}`);
      step(db);
    }
    run(db, builder.deleteFrom('schema_version'));
    run(db, builder.insertInto('schema_version').values({ version: SCHEMA_VERSION }));
  }).immediate();
}
