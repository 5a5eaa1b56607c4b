/**
 * The service's grammar library: named GBNF grammars in one SQLite file, with read-only
 * built-ins.
 *
 * Every grammar is held in memory after open, so `get`, `resolve` and `list` are synchronous
 * (a map lookup: the request path resolves a grammar name on every request that names one).
 * Writes are validated here (name, sizes, the core's guard, the root rule, then the injected
 * parser check), committed by a worker thread that owns the SQLite connection (the caller's
 * event loop never runs a statement), and only then applied to the map. Writes to one name
 * are serialized, so concurrent updates never lose one another.
 */
import { resolve as resolvePath } from 'node:path';
import { Worker } from 'node:worker_threads';
import { LmError, type Logger } from '@lmserve/protocol';
import { BUILTIN_GRAMMARS } from './builtins.js';
import type { BuiltinSeed, SeedReport } from './grammar-db.js';
import type { DbFailure, DbThreadSettings, DbToLibrary, LibraryToDb } from './messages.js';
import type { GrammarRow } from './schema.js';
import {
  checkContent,
  checkDefinesRoot,
  checkGrammarName,
  checkListOptions,
  isGrammarName,
  parseGrammarBody,
  type GrammarInput,
  type GrammarPatch,
  type ListOptions,
} from './validate.js';

/** A stored grammar as the library returns it (and the HTTP layer sends it). Times are ISO-8601. */
export interface Grammar {
  name: string;
  description: string;
  /** The GBNF text. */
  content: string;
  /** The start rule. */
  root: string;
  /** 1 when created; +1 at every update. */
  version: number;
  /** A built-in: read-only. */
  builtin: boolean;
  created_at: string;
  updated_at: string;
}

/** A grammar without its text, as `list` returns it unless asked for the content. */
export type GrammarSummary = Omit<Grammar, 'content'>;

export interface GrammarListPage {
  /** Sorted by name. */
  grammars: Array<Grammar | GrammarSummary>;
  /** Grammars in the library. */
  total: number;
  offset: number;
  limit: number;
}

/**
 * Parses a grammar the way a model host will: null when it parses, else the parser's reason.
 * In the service, a GrammarChecker (a process of its own); may reject when it cannot run.
 */
export type GrammarCheck = (content: string, root: string) => Promise<string | null>;

export interface GrammarLibraryOptions {
  /** The SQLite file (its directory is created); the supervisor's GRAMMARS_DB. */
  path: string;
  check: GrammarCheck;
  log: Logger;
  /** SQLite busy timeout when another connection holds the write lock (default 5 s). */
  busyTimeoutMs?: number;
  /** An open that has not finished by then (a file locked for that long, a hung file system) fails (default 30 s). */
  openTimeoutMs?: number;
  /** The built-ins to seed (default: BUILTIN_GRAMMARS). For tests of upgrades. */
  builtins?: readonly BuiltinSeed[];
}

interface Entry {
  row: GrammarRow;
  full: Grammar;
  summary: GrammarSummary;
}

interface Waiter {
  resolve: (reply: DbToLibrary) => void;
  reject: (error: LmError) => void;
}

export class GrammarLibrary {
  /** Absolute path of the SQLite file. */
  readonly path: string;
  readonly #check: GrammarCheck;
  readonly #log: Logger;
  readonly #settings: DbThreadSettings;
  readonly #builtins: readonly BuiltinSeed[];
  readonly #openTimeoutMs: number;
  readonly #entries = new Map<string, Entry>();
  /** Entries sorted by name; null after a write until the next list. */
  #sorted: Entry[] | null = null;
  /** The tail of each name's chain of writes. */
  readonly #locks = new Map<string, Promise<void>>();
  #worker: Worker | null = null;
  readonly #waiting = new Map<number, Waiter>();
  #nextId = 1;
  #closing: Promise<void> | null = null;

  private constructor(options: GrammarLibraryOptions) {
    this.path = resolvePath(options.path);
    this.#check = options.check;
    this.#log = options.log;
    this.#builtins = options.builtins ?? BUILTIN_GRAMMARS;
    const busy = options.busyTimeoutMs;
    const openTimeout = options.openTimeoutMs;
    this.#openTimeoutMs = typeof openTimeout === 'number' && Number.isFinite(openTimeout) && openTimeout > 0 ? openTimeout : 30_000;
    this.#settings = { path: this.path, busyTimeoutMs: typeof busy === 'number' && Number.isFinite(busy) && busy >= 0 ? busy : 5_000 };
  }

  /**
   * Checks every built-in with `check` (one that does not parse is a bug: open rejects with
   * INTERNAL naming it), opens the file in the database thread (created, migrated; a file of a
   * newer schema or not ours is refused untouched: STORE_UNAVAILABLE with the reason), writes
   * the built-ins (an upgrade updates them) and loads every grammar into memory.
   */
  static async open(options: GrammarLibraryOptions): Promise<GrammarLibrary> {
    if (typeof options?.path !== 'string' || options.path === '') throw new LmError('INVALID_REQUEST', 'the grammar library needs a path', { field: 'path' });
    if (typeof options.check !== 'function') throw new LmError('INVALID_REQUEST', 'the grammar library needs a check function', { field: 'check' });
    const library = new GrammarLibrary(options);
    await library.#checkBuiltins();
    await library.#load();
    return library;
  }

  /** The grammar `name`. Synchronous. NOT_FOUND (404) when there is none; INVALID_REQUEST for a name no grammar can have. */
  get(name: string): Grammar {
    const entry = this.#entries.get(name);
    if (entry !== undefined) return entry.full;
    if (!isGrammarName(name)) checkGrammarName(name);
    throw new LmError('NOT_FOUND', `no grammar named "${name}"`, { field: 'name' });
  }

  /**
   * The grammar a request names, for the request path: a map lookup. GRAMMAR_NOT_FOUND (400:
   * the request is at fault, not the URL) naming `field` when there is none.
   */
  resolve(name: string, field = 'grammar'): Grammar {
    const entry = this.#entries.get(name);
    if (entry !== undefined) return entry.full;
    const shown = typeof name === 'string' ? JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name) : `(${typeof name})`;
    throw new LmError('GRAMMAR_NOT_FOUND', `${field}: no grammar named ${shown} in the grammar library`, { field });
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** Grammars in the library, built-ins included. */
  get size(): number {
    return this.#entries.size;
  }

  /** A page of grammars sorted by name, without their content unless `withContent`. INVALID_REQUEST for bad options. */
  list(options: ListOptions = {}): GrammarListPage {
    const { offset, limit, withContent } = checkListOptions(options);
    this.#sorted ??= [...this.#entries.values()].sort((a, b) => (a.row.name < b.row.name ? -1 : a.row.name > b.row.name ? 1 : 0));
    const page = this.#sorted.slice(offset, offset + limit).map((e) => (withContent ? e.full : e.summary));
    return { grammars: page, total: this.#sorted.length, offset, limit };
  }

  /**
   * Stores a new grammar (version 1). Errors: INVALID_REQUEST (a bad or unknown field, named),
   * PAYLOAD_TOO_LARGE (content over 64 KiB), INVALID_GRAMMAR (the guard, the root rule missing,
   * or the parser's reason), CONFLICT (the name is taken, built-ins included),
   * STORE_UNAVAILABLE (the file cannot be written), DISPOSED (closed).
   */
  async create(input: GrammarInput): Promise<Grammar> {
    const parsed = parseGrammarBody(input, { partial: false });
    this.#checkOpen();
    this.#refuseTaken(parsed.name);
    return this.#serial(parsed.name, async () => {
      this.#refuseTaken(parsed.name);
      await this.#parse(parsed.content, parsed.root);
      const now = nowMs() / 1000;
      const row: GrammarRow = { ...parsed, version: 1, builtin: 0, created_at: now, updated_at: now };
      await this.#write({ type: 'insert', id: 0, row });
      this.#log.info('grammar created', { grammar: row.name, bytes: Buffer.byteLength(row.content) });
      return this.#put(row).full;
    });
  }

  /**
   * Changes a grammar's description, content or root: version + 1, a new updated_at,
   * created_at kept. Errors as create, plus NOT_FOUND and READ_ONLY (403: a built-in).
   */
  async update(name: string, patch: GrammarPatch): Promise<Grammar> {
    checkGrammarName(name);
    const parsed = parseGrammarBody(patch, { partial: true, name });
    this.#checkOpen();
    this.#writable(name);
    return this.#serial(name, async () => {
      const current = this.#writable(name).row;
      const content = parsed.content ?? current.content;
      const root = parsed.root ?? current.root;
      checkDefinesRoot(content, root);
      if (content !== current.content || root !== current.root) await this.#parse(content, root);
      const row: GrammarRow = {
        ...current,
        description: parsed.description ?? current.description,
        content,
        root,
        version: current.version + 1,
        // Strictly later than the last update, to the millisecond the ISO form shows.
        updated_at: Math.max(nowMs(), Math.round(current.updated_at * 1000) + 1) / 1000,
      };
      await this.#write({ type: 'update', id: 0, row, expectVersion: current.version });
      this.#log.info('grammar updated', { grammar: name, version: row.version });
      return this.#put(row).full;
    });
  }

  /** Deletes a grammar and returns what it was. NOT_FOUND, READ_ONLY (a built-in), STORE_UNAVAILABLE, DISPOSED. */
  async delete(name: string): Promise<Grammar> {
    checkGrammarName(name);
    this.#checkOpen();
    this.#writable(name);
    return this.#serial(name, async () => {
      const entry = this.#writable(name);
      await this.#write({ type: 'delete', id: 0, name });
      this.#entries.delete(name);
      this.#sorted = null;
      this.#log.info('grammar deleted', { grammar: name, version: entry.row.version });
      return entry.full;
    });
  }

  /**
   * Lets the writes already accepted finish, closes the file and ends the thread. Reads keep answering
   * from memory; writes after close are DISPOSED. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // Each write holds its name's lock until it is committed: wait for every chain.
      while (this.#locks.size > 0) await Promise.all([...this.#locks.values()]);
      const worker = this.#worker;
      if (worker === null) return;
      await this.#ask({ type: 'close', id: 0 }).catch(() => undefined);
      this.#worker = null;
      await worker.terminate().catch(() => undefined);
    })();
    return this.#closing;
  }

  async #checkBuiltins(): Promise<void> {
    const verdicts = await Promise.all(
      this.#builtins.map(async (b) => {
        try {
          checkGrammarName(b.name);
          checkContent(b.content);
          checkDefinesRoot(b.content, b.root);
          return await this.#check(b.content, b.root);
        } catch (err) {
          return err instanceof Error ? err.message : String(err);
        }
      }),
    );
    const bad = this.#builtins.map((b, i) => [b.name, verdicts[i]] as const).filter(([, v]) => v !== null);
    if (bad.length > 0) {
      const list = bad.map(([n, v]) => `"${n}": ${String(v)}`).join('; ');
      this.#log.error('a built-in grammar does not parse', { grammars: bad.map(([n]) => n), reason: list });
      throw new LmError('INTERNAL', `built-in grammar${bad.length > 1 ? 's' : ''} ${list} (a bug in @lmserve/grammars)`);
    }
  }

  async #load(): Promise<void> {
    let reply: DbToLibrary;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new LmError('STORE_UNAVAILABLE', `the grammar library ${this.path} did not open within ${this.#openTimeoutMs / 1000} s`)),
          this.#openTimeoutMs,
        );
      });
      reply = await Promise.race([this.#ask({ type: 'open', id: 0, builtins: this.#builtins.map((b) => ({ ...b })), now: nowMs() / 1000 }), timeout]);
    } catch (err) {
      const worker = this.#worker;
      this.#worker = null;
      worker?.removeAllListeners();
      this.#waiting.clear();
      // Not awaited: a thread stuck in a native call stops only when that call returns.
      void worker?.terminate().catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (reply.type !== 'opened') throw new LmError('INTERNAL', `unexpected answer ${reply.type} from the grammar library's thread`);
    for (const row of reply.rows) this.#put(row);
    this.#logSeed(reply.seeded);
    this.#log.info('grammar library open', { path: this.path, grammars: this.#entries.size, builtins: this.#builtins.length });
  }

  #logSeed(seeded: SeedReport | null): void {
    if (seeded === null) return;
    if (seeded.added.length > 0) this.#log.info('built-in grammars added', { grammars: seeded.added });
    if (seeded.updated.length > 0) this.#log.info('built-in grammars updated', { grammars: seeded.updated });
    if (seeded.removed.length > 0) this.#log.info('built-in grammars of an earlier release removed', { grammars: seeded.removed });
    if (seeded.replaced.length > 0) {
      this.#log.warn('user grammars replaced by built-ins of the same name', { grammars: seeded.replaced });
    }
  }

  #put(row: GrammarRow): Entry {
    const summary: GrammarSummary = Object.freeze({
      name: row.name,
      description: row.description,
      root: row.root,
      version: row.version,
      builtin: row.builtin === 1,
      created_at: iso(row.created_at),
      updated_at: iso(row.updated_at),
    });
    const full: Grammar = Object.freeze({
      name: summary.name,
      description: summary.description,
      content: row.content,
      root: summary.root,
      version: summary.version,
      builtin: summary.builtin,
      created_at: summary.created_at,
      updated_at: summary.updated_at,
    });
    const entry = { row: Object.freeze({ ...row }), full, summary };
    this.#entries.set(row.name, entry);
    this.#sorted = null;
    return entry;
  }

  #checkOpen(): void {
    if (this.#closing !== null) throw new LmError('DISPOSED', `the grammar library ${this.path} is closed`);
  }

  #refuseTaken(name: string): void {
    const entry = this.#entries.get(name);
    if (entry === undefined) return;
    const what = entry.row.builtin === 1 ? 'a built-in grammar' : 'a grammar';
    throw new LmError('CONFLICT', `${what} named "${name}" already exists`, { field: 'name' });
  }

  /** The user grammar `name`, or NOT_FOUND / READ_ONLY. */
  #writable(name: string): Entry {
    const entry = this.#entries.get(name);
    if (entry === undefined) throw new LmError('NOT_FOUND', `no grammar named "${name}"`, { field: 'name' });
    if (entry.row.builtin === 1) throw new LmError('READ_ONLY', `"${name}" is a built-in grammar: it cannot be changed or deleted`, { field: 'name' });
    return entry;
  }

  /** The injected parser check: INVALID_GRAMMAR (field content) with its reason. */
  async #parse(content: string, root: string): Promise<void> {
    let verdict: unknown;
    try {
      verdict = await this.#check(content, root);
    } catch (err) {
      if (err instanceof LmError) throw err;
      throw new LmError('INTERNAL', `the grammar could not be checked: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (verdict === null || verdict === undefined) return;
    throw new LmError('INVALID_GRAMMAR', `content does not parse: ${String(verdict)}`, { field: 'content' });
  }

  /** Runs `fn` after every earlier write to `name` has settled. */
  async #serial<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(name);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = (previous ?? Promise.resolve()).then(() => mine);
    this.#locks.set(name, tail);
    try {
      if (previous !== undefined) await previous;
      return await fn();
    } finally {
      release();
      if (this.#locks.get(name) === tail) this.#locks.delete(name);
    }
  }

  /** A write in the thread; a failure becomes the LmError its kind means. */
  async #write(message: Extract<LibraryToDb, { type: 'insert' | 'update' | 'delete' }>): Promise<void> {
    await this.#ask(message);
  }

  #ask(message: LibraryToDb): Promise<DbToLibrary> {
    const id = this.#nextId++;
    const worker = this.#worker ?? this.#start();
    return new Promise<DbToLibrary>((resolve, reject) => {
      this.#waiting.set(id, {
        resolve: (reply) => (reply.type === 'failed' ? reject(failure(reply.kind, reply.message, this.path, message.type)) : resolve(reply)),
        reject,
      });
      this.#updateRef();
      try {
        worker.postMessage({ ...message, id } as LibraryToDb);
      } catch (err) {
        this.#waiting.delete(id);
        this.#updateRef();
        reject(new LmError('STORE_UNAVAILABLE', `the grammar library's thread cannot be reached: ${String(err)}`));
      }
    });
  }

  #start(): Worker {
    const worker = new Worker(threadUrl(), {
      workerData: this.#settings,
      name: 'grammar-library',
      // The thread is plain JS next to this file; the caller's loader (tsx in tests) would only slow its start.
      execArgv: import.meta.url.endsWith('.ts') ? undefined : [],
    });
    this.#worker = worker;
    worker.on('message', (reply: DbToLibrary) => {
      const waiter = this.#waiting.get(reply.id);
      this.#waiting.delete(reply.id);
      this.#updateRef();
      waiter?.resolve(reply);
    });
    const died = (why: string) => {
      if (this.#worker !== worker) return;
      // The next write starts a new thread (which opens the file again); these fail.
      this.#worker = null;
      worker.removeAllListeners();
      const error = new LmError('STORE_UNAVAILABLE', `the grammar library's thread ${why}; the write may not have been committed`);
      for (const [, waiter] of this.#waiting) waiter.reject(error);
      this.#waiting.clear();
      if (this.#closing === null) this.#log.error('grammar library thread failed', { path: this.path, reason: why });
    };
    worker.on('error', (err) => died(`failed: ${err instanceof Error ? err.message : String(err)}`));
    worker.on('exit', (code) => died(`exited with code ${code}`));
    return worker;
  }

  /** The thread keeps the process alive only while a request waits on it. */
  #updateRef(): void {
    const worker = this.#worker;
    if (worker === null) return;
    if (this.#waiting.size > 0) worker.ref();
    else worker.unref();
  }
}

function failure(kind: DbFailure, message: string, path: string, request: LibraryToDb['type']): LmError {
  switch (kind) {
    case 'exists':
    case 'changed':
      return new LmError('CONFLICT', message, { field: 'name' });
    case 'missing':
      return new LmError('NOT_FOUND', message, { field: 'name' });
    case 'refused':
      return new LmError('STORE_UNAVAILABLE', message);
    case 'failed':
      return new LmError('STORE_UNAVAILABLE', `the grammar library ${path} cannot be ${request === 'open' ? 'opened' : 'written'}: ${message}`);
  }
}

function nowMs(): number {
  return Date.now();
}

function iso(seconds: number): string {
  return new Date(Math.round(seconds * 1000)).toISOString();
}

/** The thread's file, beside this one (dist/*.js, or src/*.ts under a TypeScript loader). */
function threadUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './db-thread.ts' : './db-thread.js', import.meta.url);
}
