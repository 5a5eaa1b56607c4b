/**
 * One open grammar file: open (check, migrate), seed the built-ins, insert, update, delete,
 * read everything. Synchronous and used only by the library's worker thread, which owns the
 * connection; every method throws on failure.
 */
import type Database from 'better-sqlite3';
import { openVersioned, type VersionedSchema } from '@lmserve/store';
import { MIGRATIONS, all, builder, run, type GrammarRow } from './schema.js';

export { RefusedFile } from '@lmserve/store';

/** The write lost a race (the row is gone, exists already, or changed since it was read). */
export class WriteConflict extends Error {
  override readonly name = 'WriteConflict';
  constructor(
    readonly kind: 'exists' | 'missing' | 'changed',
    message: string,
  ) {
    super(message);
  }
}

/** A built-in as the code ships it (times and version are the file's business). */
export interface BuiltinSeed {
  name: string;
  description: string;
  content: string;
  root: string;
}

/** What seeding changed, for the library's log. */
export interface SeedReport {
  /** Built-ins written for the first time. */
  added: string[];
  /** Built-ins whose text changed (an upgrade): a new version. */
  updated: string[];
  /** User grammars that had a built-in's name and were replaced by it. */
  replaced: string[];
  /** Built-ins of an earlier release that this one no longer ships. */
  removed: string[];
}

export class GrammarDb {
  readonly #db: Database.Database;

  private constructor(db: Database.Database) {
    this.#db = db;
  }

  /**
   * Opens (creating the directory and the file), refuses a file that is not ours or is newer
   * than this code (left untouched), and migrates an older one.
   */
  static open(path: string, busyTimeoutMs: number): GrammarDb {
    return openVersioned(path, busyTimeoutMs, GRAMMAR_SCHEMA, (db) => new GrammarDb(db));
  }

  /**
   * Writes the built-ins the code ships (one transaction): new ones are added, changed ones get
   * a new version (created_at kept), a user grammar holding a built-in's name is replaced, and
   * built-ins this release no longer ships are removed.
   */
  seed(builtins: readonly BuiltinSeed[], now: number): SeedReport {
    const report: SeedReport = { added: [], updated: [], replaced: [], removed: [] };
    this.#db
      .transaction(() => {
        const existing = new Map(all<GrammarRow>(this.#db, builder.selectFrom('grammars').selectAll()).map((row) => [row.name, row]));
        for (const seed of builtins) {
          const row = existing.get(seed.name);
          if (row === undefined) {
            run(
              this.#db,
              builder
                .insertInto('grammars')
                .values({ name: seed.name, description: seed.description, content: seed.content, root: seed.root, version: 1, builtin: 1, created_at: now, updated_at: now }),
            );
            report.added.push(seed.name);
            continue;
          }
          const same = row.builtin === 1 && row.description === seed.description && row.content === seed.content && row.root === seed.root;
          if (same) continue;
          if (row.builtin !== 1) report.replaced.push(seed.name);
          else report.updated.push(seed.name);
          run(
            this.#db,
            builder
              .updateTable('grammars')
              .set({ description: seed.description, content: seed.content, root: seed.root, builtin: 1, version: row.version + 1, updated_at: Math.max(now, row.updated_at) })
              .where('name', '=', seed.name),
          );
        }
        const shipped = new Set(builtins.map((b) => b.name));
        for (const row of existing.values()) {
          if (row.builtin === 1 && !shipped.has(row.name)) {
            run(this.#db, builder.deleteFrom('grammars').where('name', '=', row.name));
            report.removed.push(row.name);
          }
        }
      })
      .immediate();
    return report;
  }

  /** Every grammar, by name. */
  all(): GrammarRow[] {
    return all<GrammarRow>(this.#db, builder.selectFrom('grammars').selectAll().orderBy('name'));
  }

  insert(row: GrammarRow): void {
    try {
      const { name, description, content, root, version, builtin, created_at, updated_at } = row;
      run(this.#db, builder.insertInto('grammars').values({ name, description, content, root, version, builtin, created_at, updated_at }));
    } catch (err) {
      if ((err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new WriteConflict('exists', `a grammar named "${row.name}" already exists`);
      }
      throw err;
    }
  }

  /** Writes `row` over the user grammar of its name if that is still at `expectVersion`. */
  update(row: GrammarRow, expectVersion: number): void {
    const result = run(
      this.#db,
      builder
        .updateTable('grammars')
        .set({ description: row.description, content: row.content, root: row.root, version: row.version, updated_at: row.updated_at })
        .where('name', '=', row.name)
        .where('version', '=', expectVersion)
        .where('builtin', '=', 0),
    );
    if (result.changes === 0) {
      throw new WriteConflict('changed', `the grammar "${row.name}" changed or was deleted meanwhile (by another process on the same file)`);
    }
  }

  /** Deletes the user grammar `name`. */
  delete(name: string): void {
    const result = run(this.#db, builder.deleteFrom('grammars').where('name', '=', name).where('builtin', '=', 0));
    if (result.changes === 0) throw new WriteConflict('missing', `the grammar "${name}" was deleted meanwhile (by another process on the same file)`);
  }

  close(): void {
    this.#db.close();
  }
}

const GRAMMAR_SCHEMA: VersionedSchema = {
  kind: 'grammar library',
  versionName: 'grammar library schema version',
  elsewhere: 'point GRAMMARS_DB at another file',
  migrations: MIGRATIONS,
};
