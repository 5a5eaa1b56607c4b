/**
 * The grammar library's tables and how a file is brought to the version this code writes.
 *
 * As in @lmserve/store: Kysely builds and compiles every statement (typed against
 * `GrammarDatabase`), better-sqlite3 runs them synchronously in the library's worker thread,
 * so a write is one transaction with nothing interleaved.
 */
import type Database from 'better-sqlite3';
import { all, compileOnly, run, type SchemaVersionTable } from '@lmserve/store';

/** `grammars` as SQLite holds it. Times are unix seconds; `builtin` is 0 or 1. */
export interface GrammarsTable {
  name: string;
  description: string;
  content: string;
  root: string;
  version: number;
  builtin: number;
  created_at: number;
  updated_at: number;
}

export interface GrammarDatabase {
  grammars: GrammarsTable;
  schema_version: SchemaVersionTable;
}

/** One row of `grammars`, as the thread and the library pass it around. */
export type GrammarRow = GrammarsTable;

/** A query builder that never executes: it only compiles to SQLite's dialect. */
export const builder = compileOnly<GrammarDatabase>();

export { all, run };

/**
 * Each version's migration, applied in order inside one transaction together with the
 * schema_version update. A new version appends a function here; a shipped one is never edited.
 */
export const MIGRATIONS: ReadonlyMap<number, (db: Database.Database) => void> = new Map([
  [
    1,
    (db: Database.Database) => {
      run(
        db,
        builder.schema
          .createTable('grammars')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('content', 'text', (c) => c.notNull())
          .addColumn('root', 'text', (c) => c.notNull().defaultTo('root'))
          .addColumn('version', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('builtin', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', 'real', (c) => c.notNull())
          .addColumn('updated_at', 'real', (c) => c.notNull()),
      );
    },
  ],
]);

/** The version this code writes: the last migration's. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.keys());
