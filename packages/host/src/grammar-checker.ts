/**
 * Checks each distinct grammar once, in a process of its own, before a replica builds a
 * sampler from it. llama.cpp's grammar parser trusts its input; a grammar that crashes it,
 * hangs it or makes it allocate without end must cost one 400, never a model host. Verdicts
 * are cached by content hash, so a grammar used again costs a map lookup.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Logger } from '@lmserve/protocol';
import type { CheckerReply, CheckerRequest } from './grammar-check-main.js';

export interface GrammarCheckerOptions {
  modelPath: string;
  log: Logger;
  /** A parse that takes longer is refused (the checker is killed and restarted). */
  timeoutMs?: number;
  /** Verdicts kept (least recently used first out). */
  cacheSize?: number;
}

interface Job {
  id: number;
  key: string;
  grammar: string;
  root: string;
  resolve: (reason: string | null) => void;
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
  readonly #cache = new Map<string, string | null>();
  readonly #inflight = new Map<string, Promise<string | null>>();
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
  check(grammar: string, root: string): Promise<string | null> {
    const key = createHash('sha256').update(root).update('\0').update(grammar).digest('hex');
    if (this.#cache.has(key)) {
      this.#stats.cacheHits++;
      const verdict = this.#cache.get(key) as string | null;
      this.#cache.delete(key);
      this.#cache.set(key, verdict);
      return Promise.resolve(verdict);
    }
    const running = this.#inflight.get(key);
    if (running) return running;
    if (this.#unavailable !== undefined) return Promise.reject(new GrammarCheckerUnavailable(this.#unavailable));
    const promise = new Promise<string | null>((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, key, grammar, root, resolve, reject });
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

  #remember(job: Job, reason: string | null): void {
    this.#inflight.delete(job.key);
    this.#cache.set(job.key, reason);
    if (this.#cache.size > this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value as string);
    job.resolve(reason);
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
      this.#finishCurrent(`parsing it took longer than ${this.#timeoutMs / 1000} s`);
      this.#child?.kill('SIGKILL');
    }, this.#timeoutMs);
    const request: CheckerRequest = { id: job.id, grammar: job.grammar, root: job.root };
    try {
      this.#child.send(request);
    } catch {
      // the child is dying: its exit reports the job
    }
  }

  #finishCurrent(reason: string | null): void {
    const job = this.#current;
    if (!job) return;
    clearTimeout(this.#timer);
    this.#current = undefined;
    this.#remember(job, reason);
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
        this.#finishCurrent(reply.reason);
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
        this.#finishCurrent(`the grammar ${how}`);
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
