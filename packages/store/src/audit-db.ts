/**
 * One open audit file: open (check, migrate, probe), insert a batch in one transaction, read,
 * prune in chunks. Synchronous and used only by the writer thread, which owns the connection;
 * every method throws on failure and the thread decides what a failure means.
 */
import { statSync } from 'node:fs';
import type Database from 'better-sqlite3';
import type { EventQuery, EventRow, RequestQuery, RequestRow } from '@lmserve/core';
import type { EventValues, RequestValues } from './rows.js';
import { openVersioned, type VersionedSchema } from './versioned-sqlite.js';
import {
  EVENT_INSERT_COLUMNS,
  MIGRATIONS,
  REQUEST_INSERT_COLUMNS,
  V1_COLUMNS,
  builder,
  run,
} from './schema.js';

export { RefusedFile } from './versioned-sqlite.js';

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
    return openVersioned(path, busyTimeoutMs, AUDIT_SCHEMA, (db) => {
      const audit = new AuditDb(db, path);
      audit.probe();
      return audit;
    });
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
    if (query.clientId != null) q = q.where('client_id', '=', query.clientId);
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

/** The audit file: version 1 also adopts a file of the original service (its two tables, all their columns). */
const AUDIT_SCHEMA: VersionedSchema = {
  kind: 'audit file',
  versionName: 'audit schema version',
  elsewhere: 'point the store at another file',
  migrations: MIGRATIONS,
  adopt: (db, tables) =>
    tables.every((table) => {
      if (table !== 'requests' && table !== 'events') return false;
      const columns = new Set((db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).map((c) => c.name));
      return V1_COLUMNS[table].every((c) => columns.has(c));
    }),
};
