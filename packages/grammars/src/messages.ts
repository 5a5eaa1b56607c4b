/**
 * The typed messages between a GrammarLibrary (the caller's thread) and its database thread,
 * which owns the SQLite connection. Every request carries an id and gets exactly one answer,
 * in the order the requests were sent.
 */
import type { BuiltinSeed, SeedReport } from './grammar-db.js';
import type { GrammarRow } from './schema.js';

/** What the thread is started with (its workerData). */
export interface DbThreadSettings {
  /** Absolute path of the SQLite file. */
  path: string;
  busyTimeoutMs: number;
}

/** library -> thread */
export type LibraryToDb =
  /** Opens the file; seeds the built-ins when given; answers with every row. */
  | { type: 'open'; id: number; builtins: BuiltinSeed[] | null; now: number }
  | { type: 'insert'; id: number; row: GrammarRow }
  | { type: 'update'; id: number; row: GrammarRow; expectVersion: number }
  | { type: 'delete'; id: number; name: string }
  | { type: 'close'; id: number };

/** Why a request failed: a refused file, a lost race, or anything else (the disk, SQLite). */
export type DbFailure = 'refused' | 'exists' | 'missing' | 'changed' | 'failed';

/** thread -> library */
export type DbToLibrary =
  | { type: 'opened'; id: number; rows: GrammarRow[]; seeded: SeedReport | null }
  | { type: 'done'; id: number }
  | { type: 'failed'; id: number; kind: DbFailure; message: string };
