/**
 * What every SQLite file of the service shares (the audit trails, the grammar library): Kysely
 * only compiles statements and better-sqlite3 runs them synchronously in the thread that owns
 * the connection; a `schema_version` table; a file that is not ours or is newer than this code
 * is refused untouched; an older one is migrated in one IMMEDIATE transaction; WAL.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  DummyDriver,
  Kysely,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type ColumnType,
  type Compilable,
} from 'kysely';

/** Refusals that retrying cannot fix by itself (the file belongs to someone else or is newer). */
export class RefusedFile extends Error {
  override readonly name = 'RefusedFile';
}

export interface SchemaVersionTable {
  version: ColumnType<number, number, number>;
}

/** A query builder that never executes: it only compiles to SQLite's dialect. */
export function compileOnly<DB>(): Kysely<DB> {
  return new Kysely<DB>({
    dialect: {
      createAdapter: () => new SqliteAdapter(),
      createDriver: () => new DummyDriver(),
      createIntrospector: (db) => new SqliteIntrospector(db),
      createQueryCompiler: () => new SqliteQueryCompiler(),
    },
  });
}

/** Runs one compiled statement that returns no rows. */
export function run(db: Database.Database, query: Compilable): Database.RunResult {
  const compiled = query.compile();
  return db.prepare(compiled.sql).run(...(compiled.parameters as unknown[]));
}

/** Runs one compiled statement and returns its rows. */
export function all<T>(db: Database.Database, query: Compilable): T[] {
  const compiled = query.compile();
  return db.prepare(compiled.sql).all(...(compiled.parameters as unknown[])) as T[];
}

export interface VersionedSchema {
  /** What the file is, in messages: "audit file", "grammar library". */
  kind: string;
  /** How its version is named in messages: "audit schema version". */
  versionName: string;
  /** Where to point instead, in messages: "point GRAMMARS_DB at another file". */
  elsewhere: string;
  /** Each version's migration, applied in order; the last key is the version this code writes. */
  migrations: ReadonlyMap<number, (db: Database.Database) => void>;
  /** A file without schema_version whose tables are these may be adopted as version 0. */
  adopt?: (db: Database.Database, tables: readonly string[]) => boolean;
}

const versionTable = compileOnly<{ schema_version: SchemaVersionTable }>();

export function schemaVersion(schema: VersionedSchema): number {
  return Math.max(...schema.migrations.keys());
}

/** The file's schema version: 0 for an empty file (or one `adopt` accepts). */
function currentVersion(db: Database.Database, path: string, schema: VersionedSchema): number {
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .pluck()
    .all() as string[];
  if (tables.includes('schema_version')) {
    const version = db.prepare('SELECT max(version) FROM schema_version').pluck().get();
    return typeof version === 'number' ? version : 0;
  }
  if (tables.length === 0 || schema.adopt?.(db, tables)) return 0;
  throw new RefusedFile(
    `${path} is not an lmserve ${schema.kind} (it has the tables ${tables.join(', ')} and no schema_version): ` +
      `refusing to use or change it; ${schema.elsewhere} or move this one away`,
  );
}

function newerRefusal(path: string, version: number, schema: VersionedSchema): RefusedFile {
  return new RefusedFile(
    `${path} has ${schema.versionName} ${version}, newer than this lmserve's (${schemaVersion(schema)}): ` +
      `refusing to use or change it; upgrade lmserve or ${schema.elsewhere}`,
  );
}

/** Every missing version in one IMMEDIATE transaction, with the version re-read under the lock. */
function migrate(db: Database.Database, path: string, schema: VersionedSchema): void {
  const target = schemaVersion(schema);
  db.transaction(() => {
    // Another process may have migrated between our look and this lock.
    const version = currentVersion(db, path, schema);
    if (version > target) throw newerRefusal(path, version, schema);
    run(db, versionTable.schema.createTable('schema_version').ifNotExists().addColumn('version', 'integer', (c) => c.notNull()));
    for (let v = version + 1; v <= target; v++) {
      const step = schema.migrations.get(v);
      if (step === undefined) throw new Error(`no migration to ${schema.versionName} ${v}`);
      step(db);
    }
    run(db, versionTable.deleteFrom('schema_version'));
    run(db, versionTable.insertInto('schema_version').values({ version: target }));
  }).immediate();
}

/**
 * Opens (creating the directory and the file), refuses a file that is not ours or is newer
 * than this code (left untouched), migrates an older one, and switches to WAL. `then` finishes
 * the open (e.g. a probe write); if anything throws, the connection is closed.
 */
export function openVersioned<T>(path: string, busyTimeoutMs: number, schema: VersionedSchema, then: (db: Database.Database) => T): T {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { timeout: busyTimeoutMs });
  try {
    // Look before writing anything: a refused file is left exactly as it was (the WAL pragma
    // below would already change its header).
    const version = currentVersion(db, path, schema);
    if (version > schemaVersion(schema)) throw newerRefusal(path, version, schema);
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (String(mode).toLowerCase() !== 'wal') throw new Error(`cannot switch ${path} to WAL (journal_mode is ${String(mode)})`);
    // NORMAL in WAL mode: a commit survives a crash of the process (kill -9); only a power cut
    // can take the last transactions back, never the file's consistency.
    db.pragma('synchronous = NORMAL');
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    if (version < schemaVersion(schema)) migrate(db, path, schema);
    return then(db);
  } catch (err) {
    try {
      db.close();
    } catch {
      // closing a connection that failed to open: nothing more to do
    }
    throw err;
  }
}

/** An error as one line for a thread's reply: SQLite's code first when the message lacks it. Never throws. */
export function describeError(err: unknown): string {
  try {
    if (err instanceof Error) {
      const code = (err as { code?: unknown }).code;
      return typeof code === 'string' && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
    }
    return String(err);
  } catch {
    return 'an error that could not be described';
  }
}
