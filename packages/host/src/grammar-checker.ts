/**
 * Checks each distinct grammar once, in a process of its own, before a replica builds a
 * sampler from it. llama.cpp's grammar parser trusts its input; a grammar that crashes it,
 * hangs it or makes it allocate without end must cost one 400, never a model host. Verdicts
 * are cached by content hash, so a grammar used again costs a map lookup.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Logger } from '@lmserve/protocol';
import type { CheckerJob, CheckerReply, CheckerRequest } from './grammar-check-main.js';

export interface GrammarCheckerOptions {
  modelPath: string;
  log: Logger;
  /** A parse that takes longer is refused (the checker is killed and restarted). */
  timeoutMs?: number;
  /** Verdicts kept (least recently used first out). */
  cacheSize?: number;
}

/** What the checker process answers: a parse verdict, or a schema converted to GBNF. */
export type Verdict = { ok: true; grammar?: string } | { ok: false; reason: string };

interface Job {
  id: number;
  key: string;
  request: CheckerJob;
  resolve: (verdict: Verdict) => void;
  reject: (error: Error) => void;
}

/** A checker that dies this many times in a row before it is ready is given up on. */
const MAX_START_FAILURES = 3;

/** Raised when the checker itself cannot run (its vocabulary failed to load). */
export class GrammarCheckerUnavailable extends Error {}

export class GrammarChecker {
  readonly #modelPath: string;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #cacheSize: number;
  readonly #cache = new Map<string, Verdict>();
  readonly #inflight = new Map<string, Promise<Verdict>>();
  readonly #queue: Job[] = [];
  #child: ChildProcess | undefined;
  #ready = false;
  #current: Job | undefined;
  #timer: NodeJS.Timeout | undefined;
  #nextId = 1;
  #unavailable: string | undefined;
  #startFailures = 0;
  #closed = false;
  readonly #stats = { parsed: 0, cacheHits: 0, crashes: 0, timeouts: 0 };

  constructor(options: GrammarCheckerOptions) {
    this.#modelPath = options.modelPath;
    this.#log = options.log;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#cacheSize = options.cacheSize ?? 1024;
  }

  /** null when llama.cpp parses the grammar, else the reason it is refused. */
  async check(grammar: string, root: string): Promise<string | null> {
    const verdict = await this.#ask({ kind: 'grammar', grammar, root });
    return verdict.ok ? null : verdict.reason;
  }

  /** A JSON schema (its JSON text) as GBNF, by llama.cpp's converter; or why it cannot be converted. */
  convertSchema(schemaJson: string): Promise<Verdict> {
    return this.#ask({ kind: 'schema', schema: schemaJson });
  }

  #ask(request: CheckerJob): Promise<Verdict> {
    const hash = createHash('sha256').update(request.kind).update('\0');
    if (request.kind === 'grammar') hash.update(request.root).update('\0').update(request.grammar);
    else hash.update(request.schema);
    const key = hash.digest('hex');
    const cached = this.#cache.get(key);
    if (cached) {
      this.#stats.cacheHits++;
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return Promise.resolve(cached);
    }
    const running = this.#inflight.get(key);
    if (running) return running;
    if (this.#unavailable !== undefined) return Promise.reject(new GrammarCheckerUnavailable(this.#unavailable));
    const promise = new Promise<Verdict>((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, key, request, resolve, reject });
    });
    this.#inflight.set(key, promise);
    this.#pump();
    return promise;
  }

  /** Parses done by the checker process, answers from the cache, parses that killed it or timed out. */
  stats(): { parsed: number; cacheHits: number; crashes: number; timeouts: number } {
    return { ...this.#stats };
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#child?.kill('SIGKILL');
    this.#child = undefined;
  }

  #remember(job: Job, verdict: Verdict): void {
    this.#inflight.delete(job.key);
    this.#cache.set(job.key, verdict);
    if (this.#cache.size > this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value as string);
    job.resolve(verdict);
  }

  #pump(): void {
    if (this.#closed || this.#current || this.#queue.length === 0) return;
    if (!this.#child) {
      this.#spawn();
      return;
    }
    if (!this.#ready) return;
    const job = this.#queue.shift() as Job;
    this.#current = job;
    this.#stats.parsed++;
    this.#timer = setTimeout(() => {
      this.#stats.timeouts++;
      this.#log.warn('grammar check timed out; restarting the checker', { timeoutMs: this.#timeoutMs });
      this.#finishCurrent({ ok: false, reason: `parsing it took longer than ${this.#timeoutMs / 1000} s` });
      this.#child?.kill('SIGKILL');
    }, this.#timeoutMs);
    const request = { ...job.request, id: job.id } as CheckerRequest;
    try {
      this.#child.send(request);
    } catch {
      // the child is dying: its exit reports the job
    }
  }

  #finishCurrent(verdict: Verdict): void {
    const job = this.#current;
    if (!job) return;
    clearTimeout(this.#timer);
    this.#current = undefined;
    this.#remember(job, verdict);
  }

  #spawn(): void {
    const child = fork(new URL('./grammar-check-main.js', import.meta.url), [this.#modelPath], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
      execArgv: [],
    });
    this.#child = child;
    this.#ready = false;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    child.on('error', () => undefined);
    child.on('message', (reply: CheckerReply) => {
      if (reply.type === 'ready') {
        this.#ready = true;
        this.#startFailures = 0;
        this.#pump();
      } else if (reply.type === 'failed') {
        this.#unavailable = `the grammar checker cannot load the vocabulary: ${reply.message}`;
      } else if (reply.type === 'verdict' && this.#current?.id === reply.id) {
        this.#finishCurrent(reply.reason === null ? { ok: true } : { ok: false, reason: reply.reason });
        this.#pump();
      } else if (reply.type === 'converted' && this.#current?.id === reply.id) {
        this.#finishCurrent(reply.grammar !== null ? { ok: true, grammar: reply.grammar } : { ok: false, reason: reply.reason ?? 'cannot be converted' });
        this.#pump();
      }
    });
    child.once('exit', (code, signal) => {
      if (this.#child === child) this.#child = undefined;
      if (!this.#ready && this.#unavailable === undefined && ++this.#startFailures >= MAX_START_FAILURES) {
        this.#unavailable = `the grammar checker exited ${this.#startFailures} times while starting (${signal ?? `code ${code}`})`;
      }
      this.#ready = false;
      if (this.#current) {
        const how = signal ? `killed the parser (${signal})` : `made the parser exit (code ${code})`;
        this.#stats.crashes++;
        this.#log.warn('a grammar crashed the checker', { signal, code });
        this.#finishCurrent({ ok: false, reason: `it ${how}` });
      }
      if (this.#unavailable !== undefined) {
        const reason = this.#unavailable;
        for (const job of this.#queue.splice(0)) {
          this.#inflight.delete(job.key);
          job.reject(new GrammarCheckerUnavailable(reason));
        }
        this.#log.error('grammar checker unavailable', { reason, stderr: stderr.trim() });
        return;
      }
      this.#pump();
    });
  }
}
