/**
 * The audit file's tables and how a file is brought to the version this code writes.
 *
 * Kysely builds and compiles every statement (typed against `AuditDatabase`); better-sqlite3
 * runs them synchronously in the writer thread. Synchronous execution is the point: a batch of
 * rows is one transaction with nothing interleaved, and a read queued after a batch sees it.
 * Kysely's own async executor would hand the connection around between awaits.
 */
import type Database from 'better-sqlite3';
import type { Generated } from 'kysely';
import { compileOnly, run, type SchemaVersionTable } from './versioned-sqlite.js';

/** `requests` as SQLite holds it (the original service's columns, so its one-liners keep working). */
export interface RequestsTable {
  id: Generated<number>;
  req_id: string;
  /** Unix seconds. */
  ts: number;
  model: string;
  transport: string;
  input_len: number;
  tokens_in: number;
  tokens_out: number;
  ttft_ms: number | null;
  dur_ms: number;
  queue_ms: number | null;
  status: string;
  error_code: string | null;
  error: string | null;
  params: string | null;
  input: string | null;
  output: string | null;
  /** The id the client gave (a JetStream job id), from version 2 on. */
  client_id: string | null;
}

export interface EventsTable {
  id: Generated<number>;
  ts: number;
  level: string;
  code: string;
  msg: string;
  data: string;
}

export interface AuditDatabase {
  requests: RequestsTable;
  events: EventsTable;
  schema_version: SchemaVersionTable;
}

/**
 * A query builder that never executes: it only compiles to SQLite's dialect. Statements run
 * through better-sqlite3 (see the file comment).
 */
export const builder = compileOnly<AuditDatabase>();

export { run };

/**
 * Each version's migration, applied in order inside one transaction together with the
 * schema_version update, so a file is at one version or the next, never in between. A new
 * version appends a function here; a shipped one is never edited (files in the field ran it).
 */
export const MIGRATIONS: ReadonlyMap<number, (db: Database.Database) => void> = new Map([
  [
    1,
    (db: Database.Database) => {
      // ifNotExists everywhere: version 1 also adopts a file of the original service, which has
      // these tables (checked column by column in openAudit) but no schema_version.
      run(
        db,
        builder.schema
          .createTable('requests')
          .ifNotExists()
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('req_id', 'text')
          .addColumn('ts', 'real')
          .addColumn('model', 'text')
          .addColumn('transport', 'text')
          .addColumn('input_len', 'integer')
          .addColumn('tokens_in', 'integer')
          .addColumn('tokens_out', 'integer')
          .addColumn('ttft_ms', 'real')
          .addColumn('dur_ms', 'real')
          .addColumn('queue_ms', 'real')
          .addColumn('status', 'text')
          .addColumn('error_code', 'text')
          .addColumn('error', 'text')
          .addColumn('params', 'text')
          .addColumn('input', 'text')
          .addColumn('output', 'text'),
      );
      run(
        db,
        builder.schema
          .createTable('events')
          .ifNotExists()
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('ts', 'real')
          .addColumn('level', 'text')
          .addColumn('code', 'text')
          .addColumn('msg', 'text')
          .addColumn('data', 'text'),
      );
      run(db, builder.schema.createIndex('requests_ts').ifNotExists().on('requests').column('ts'));
      run(db, builder.schema.createIndex('requests_status').ifNotExists().on('requests').column('status'));
      run(db, builder.schema.createIndex('requests_req_id').ifNotExists().on('requests').column('req_id'));
      run(db, builder.schema.createIndex('events_ts').ifNotExists().on('events').column('ts'));
    },
  ],
  [
    2,
    (db: Database.Database) => {
      // The id a client gave the request (a JetStream job's id): jobs are found by it.
      run(db, builder.schema.alterTable('requests').addColumn('client_id', 'text'));
      run(db, builder.schema.createIndex('requests_client_id').ifNotExists().on('requests').column('client_id'));
    },
  ],
]);

/** The version this code writes: the last migration's. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.keys());

/** Columns of version 1, for recognising a file of the original service (no schema_version). */
export const V1_COLUMNS: Readonly<Record<'requests' | 'events', readonly string[]>> = {
  requests: [
    'id', 'req_id', 'ts', 'model', 'transport', 'input_len', 'tokens_in', 'tokens_out', 'ttft_ms',
    'dur_ms', 'queue_ms', 'status', 'error_code', 'error', 'params', 'input', 'output',
  ],
  events: ['id', 'ts', 'level', 'code', 'msg', 'data'],
};

/** The columns a row is inserted with, in the order of the values tuples (rows.ts). */
export const REQUEST_INSERT_COLUMNS = [...V1_COLUMNS.requests.slice(1), 'client_id'] as Array<Exclude<keyof RequestsTable, 'id'>>;
export const EVENT_INSERT_COLUMNS = V1_COLUMNS.events.slice(1) as Array<Exclude<keyof EventsTable, 'id'>>;
