/**
 * Downloads one GGUF file over HTTP(S) into `<dest>.part` beside its destination and renames it
 * into place only once it is whole, starts with the GGUF magic and matches its SHA-256: a half
 * file never sits at the destination. An interrupted transfer resumes with a Range request (also
 * after a restart of the process: the partial file and `<dest>.part.json`, which remembers the
 * URL and the server's validator, stay on disk), re-hashing what is already there chunk by chunk.
 * Transient failures (a dropped connection, a stall, 5xx, 429) are retried with exponential
 * backoff; a 404, an HTML page or a wrong checksum fail at once. `<dest>.part.lock` keeps a second
 * process from writing the same partial file: it waits for the first instead.
 *
 * Runs anywhere; the supervisor runs it in a worker thread (download-thread.ts) so that neither
 * the transfer nor the hashing ever occupies its event loop.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { open, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { mkdir } from 'node:fs/promises';

/** Why a download failed; `permanent` ones are not retried. */
export type DownloadFailure =
  | 'http-status'
  | 'not-gguf'
  | 'checksum'
  | 'size'
  | 'stalled'
  | 'network'
  | 'io'
  | 'aborted';

export class DownloadError extends Error {
  readonly code: DownloadFailure;
  /** Retrying cannot help (404, HTML, checksum, a disk error). */
  readonly permanent: boolean;
  /** The failure's facts (status, expected and actual hashes, ...). */
  readonly details: Record<string, unknown>;

  constructor(code: DownloadFailure, message: string, options: { permanent?: boolean; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DownloadError';
    this.code = code;
    this.permanent = options.permanent ?? false;
    this.details = options.details ?? {};
  }
}

export interface DownloadSpec {
  url: string;
  /** The final path (MODEL_PATH). */
  dest: string;
  /** Lower-case hex SHA-256 the file must have; null: not checked (the hash is still reported). */
  sha256: string | null;
  /** No byte for this long ends the attempt (retried). Default 30 s. */
  stallTimeoutMs?: number;
  /** Failed attempts in a row (without a byte of progress) before giving up. Default 5. */
  retries?: number;
  /** First retry delay; doubles up to maxBackoffMs. Default 1 s. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

export interface DownloadProgress {
  url: string;
  dest: string;
  /** Bytes on disk so far (the resumed part included). */
  bytes: number;
  /** The file's size; null while the server has not said. */
  totalBytes: number | null;
  /** Over the last few seconds; 0 before the first chunk. */
  bytesPerSecond: number;
  /** Seconds left at that rate; null when unknown. */
  etaSeconds: number | null;
  /** Bytes that were already on disk when this download (or its current attempt) began. */
  resumedFrom: number;
  /** Attempt number, 1-based. */
  attempt: number;
}

export interface DownloadResult {
  dest: string;
  bytes: number;
  sha256: string;
  seconds: number;
  /** Bytes that were already on disk when the download started. */
  resumedFrom: number;
  /** Attempts it took (1: no retry). */
  attempts: number;
  /** True when another process downloaded it while this one waited on its lock. */
  byOtherProcess: boolean;
}

export interface DownloadHooks {
  onProgress?: (progress: DownloadProgress) => void;
  /** An attempt failed and another follows after `delayMs`. */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string; code: DownloadFailure }) => void;
  /** Waiting for another process that holds the lock. */
  onWaiting?: (info: { pid: number; host: string }) => void;
  signal?: AbortSignal;
}

/** `<dest>.part`: where the bytes go until the file is complete and verified. */
export function partPath(dest: string): string {
  return `${dest}.part`;
}

const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
const PROGRESS_EVERY_MS = 250;
const RATE_WINDOW_MS = 5_000;

interface PartMeta {
  url: string;
  etag: string | null;
  lastModified: string | null;
  totalBytes: number | null;
}

/** Downloads `spec.url` to `spec.dest` (see the module comment). Rejects with a DownloadError. */
export async function downloadModel(spec: DownloadSpec, hooks: DownloadHooks = {}): Promise<DownloadResult> {
  const started = Date.now();
  await mkdir(dirname(spec.dest), { recursive: true }).catch((err) => {
    throw new DownloadError('io', `cannot create ${dirname(spec.dest)}: ${(err as Error).message}`, { permanent: true, cause: err });
  });
  const lock = await acquireLock(spec.dest, hooks);
  if (lock.state === 'done') {
    const bytes = (await stat(spec.dest)).size;
    return { dest: spec.dest, bytes, sha256: '', seconds: (Date.now() - started) / 1000, resumedFrom: bytes, attempts: 0, byOtherProcess: true };
  }
  try {
    return await new Transfer(spec, hooks, started).run();
  } finally {
    await releaseLock(spec.dest, lock.token);
  }
}

class Transfer {
  readonly #spec: Required<DownloadSpec>;
  readonly #hooks: DownloadHooks;
  readonly #started: number;
  readonly #part: string;
  readonly #metaFile: string;
  #hash: Hash = createHash('sha256');
  #bytes = 0;
  #totalBytes: number | null = null;
  #resumedFrom = 0;
  #firstResumedFrom = -1;
  #attempt = 0;
  #samples: Array<[number, number]> = [];
  #lastReport = 0;

  constructor(spec: DownloadSpec, hooks: DownloadHooks, started: number) {
    this.#spec = { stallTimeoutMs: 30_000, retries: 5, backoffMs: 1000, maxBackoffMs: 30_000, ...spec };
    this.#hooks = hooks;
    this.#started = started;
    this.#part = partPath(spec.dest);
    this.#metaFile = `${this.#part}.json`;
  }

  async run(): Promise<DownloadResult> {
    let failuresInARow = 0;
    for (;;) {
      this.#checkAborted();
      this.#attempt++;
      const before = this.#bytes;
      try {
        await this.#attemptOnce();
        return await this.#finish();
      } catch (err) {
        const error = asDownloadError(err);
        // What came is not the model: nothing of it is worth resuming.
        if (error.code === 'not-gguf') await this.#discardPart();
        if (error.permanent || error.code === 'aborted') throw error;
        failuresInARow = this.#bytes > before ? 1 : failuresInARow + 1;
        if (failuresInARow > this.#spec.retries) {
          throw new DownloadError(error.code, `${error.message} (gave up after ${failuresInARow} failed attempts in a row)`, { details: error.details, cause: error });
        }
        const delayMs = Math.min(this.#spec.maxBackoffMs, this.#spec.backoffMs * 2 ** (failuresInARow - 1));
        this.#hooks.onRetry?.({ attempt: this.#attempt, delayMs, reason: error.message, code: error.code });
        await sleep(delayMs, this.#hooks.signal);
      }
    }
  }

  /** Resumes from what is on disk (re-hashed) and appends the rest of the body to it. */
  async #attemptOnce(): Promise<void> {
    const meta = await this.#readMeta();
    let offset = await this.#resumeOffset(meta);
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    this.#hooks.signal?.addEventListener('abort', onAbort, { once: true });
    let stallTimer: NodeJS.Timeout | undefined;
    let stalled = false;
    const armStall = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stalled = true;
        controller.abort();
      }, this.#spec.stallTimeoutMs);
    };
    let file: FileHandle | undefined;
    try {
      const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'lmserve' };
      if (offset > 0) {
        headers.range = `bytes=${offset}-`;
        const validator = meta?.etag && !meta.etag.startsWith('W/') ? meta.etag : meta?.lastModified;
        if (validator) headers['if-range'] = validator;
      }
      armStall();
      let res: Response;
      try {
        res = await fetch(this.#spec.url, { headers, signal: controller.signal, redirect: 'follow' });
      } catch (err) {
        throw this.#transportError(err, stalled, 'connecting');
      }
      if (res.status === 416 && offset > 0) {
        // Nothing after `offset`: the partial file is already whole when the server says so.
        void res.body?.cancel().catch(() => undefined);
        const total = contentRangeTotal(res.headers.get('content-range'));
        if (total === offset) {
          this.#totalBytes = total;
          return;
        }
        await this.#discardPart();
        throw new DownloadError('network', `the server refused the range from byte ${offset}; starting over`);
      }
      if (!res.ok) {
        void res.body?.cancel().catch(() => undefined);
        const retryable = res.status >= 500 || res.status === 429 || res.status === 408;
        throw new DownloadError('http-status', `${this.#spec.url} answered HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`, {
          permanent: !retryable,
          details: { status: res.status },
        });
      }
      const type = res.headers.get('content-type') ?? '';
      if (/^\s*text\/html/i.test(type)) {
        void res.body?.cancel().catch(() => undefined);
        throw new DownloadError('not-gguf', `${this.#spec.url} answered with an HTML page (Content-Type: ${type}), not a GGUF file`, { permanent: true, details: { contentType: type } });
      }
      if (res.status === 206) {
        const range = parseContentRange(res.headers.get('content-range'));
        if (!range || range.start !== offset) {
          void res.body?.cancel().catch(() => undefined);
          await this.#discardPart();
          throw new DownloadError('network', `the server sent another range than asked (${res.headers.get('content-range')}); starting over`);
        }
        this.#totalBytes = range.total;
      } else {
        // 200: the whole file (the server ignores Range, or the file changed since the partial one).
        if (offset > 0) await this.#discardPart();
        offset = 0;
        const length = Number(res.headers.get('content-length'));
        this.#totalBytes = Number.isFinite(length) && res.headers.has('content-length') ? length : null;
      }
      await this.#writeMeta({
        url: this.#spec.url,
        etag: res.headers.get('etag'),
        lastModified: res.headers.get('last-modified'),
        totalBytes: this.#totalBytes,
      });
      this.#resumedFrom = offset;
      if (this.#firstResumedFrom < 0) this.#firstResumedFrom = offset;
      this.#samples = [[Date.now(), this.#bytes]];
      this.#report(true);
      if (!res.body) throw new DownloadError('network', `${this.#spec.url} answered without a body`);
      try {
        file = await open(this.#part, offset === 0 ? 'w' : 'r+');
      } catch (err) {
        throw new DownloadError('io', `cannot write ${this.#part}: ${(err as Error).message}`, { permanent: true, cause: err });
      }
      let head = Buffer.alloc(0);
      try {
        for await (const value of res.body as unknown as AsyncIterable<Uint8Array>) {
          armStall();
          const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
          if (this.#bytes < GGUF_MAGIC.length) {
            head = Buffer.concat([head, chunk.subarray(0, GGUF_MAGIC.length - this.#bytes)]);
            if (head.length >= GGUF_MAGIC.length || chunk.length === 0) this.#checkMagic(head);
          }
          await writeAll(file, chunk, this.#bytes, this.#part);
          this.#hash.update(chunk);
          this.#bytes += chunk.length;
          this.#report(false);
        }
      } catch (err) {
        if (err instanceof DownloadError) throw err;
        throw this.#transportError(err, stalled, 'reading');
      }
      if (this.#bytes < GGUF_MAGIC.length) this.#checkMagic(head);
      if (this.#totalBytes !== null && this.#bytes < this.#totalBytes) {
        throw new DownloadError('network', `the connection closed after ${this.#bytes} of ${this.#totalBytes} bytes`);
      }
      await file.sync().catch(() => undefined);
    } finally {
      clearTimeout(stallTimer);
      this.#hooks.signal?.removeEventListener('abort', onAbort);
      await file?.close().catch(() => undefined);
    }
  }

  /** Verifies size, magic and checksum, then renames the partial file into place. */
  async #finish(): Promise<DownloadResult> {
    if (this.#totalBytes !== null && this.#bytes !== this.#totalBytes) {
      await this.#discardPart();
      throw new DownloadError('size', `the download has ${this.#bytes} bytes, the server announced ${this.#totalBytes}`, { details: { bytes: this.#bytes, totalBytes: this.#totalBytes } });
    }
    const sha256 = this.#hash.digest('hex');
    const expected = this.#spec.sha256?.toLowerCase() ?? null;
    if (expected !== null && sha256 !== expected) {
      await this.#discardPart();
      throw new DownloadError(
        'checksum',
        `checksum mismatch: MODEL_SHA256 is ${expected} but the downloaded file's SHA-256 is ${sha256}; the temporary file was deleted`,
        { permanent: true, details: { expected, actual: sha256 } },
      );
    }
    try {
      await rename(this.#part, this.#spec.dest);
    } catch (err) {
      throw new DownloadError('io', `cannot rename ${this.#part} to ${this.#spec.dest}: ${(err as Error).message}`, { permanent: true, cause: err });
    }
    await rm(this.#metaFile, { force: true }).catch(() => undefined);
    this.#report(true);
    return {
      dest: this.#spec.dest,
      bytes: this.#bytes,
      sha256,
      seconds: (Date.now() - this.#started) / 1000,
      resumedFrom: Math.max(0, this.#firstResumedFrom),
      attempts: this.#attempt,
      byOtherProcess: false,
    };
  }

  /** Bytes to resume from: the partial file's size once re-hashed (0 when it belongs to another URL). */
  async #resumeOffset(meta: PartMeta | null): Promise<number> {
    let size = 0;
    try {
      size = (await stat(this.#part)).size;
    } catch {
      size = 0;
    }
    if (size > 0 && (meta === null || meta.url !== this.#spec.url || (meta.totalBytes !== null && size > meta.totalBytes))) {
      await this.#discardPart();
      size = 0;
    }
    if (size === this.#bytes) return size;
    // A new attempt, or a partial file from an earlier run: hash what is there, in chunks.
    this.#hash = createHash('sha256');
    this.#bytes = 0;
    const head: Buffer[] = [];
    for await (const chunk of createReadStream(this.#part, { end: size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      if (this.#bytes < GGUF_MAGIC.length) head.push(chunk.subarray(0, GGUF_MAGIC.length));
      this.#hash.update(chunk);
      this.#bytes += chunk.length;
      this.#checkAborted();
    }
    if (this.#bytes >= GGUF_MAGIC.length && !Buffer.concat(head).subarray(0, 4).equals(GGUF_MAGIC)) {
      await this.#discardPart();
      return 0;
    }
    return this.#bytes;
  }

  #checkMagic(head: Buffer): void {
    if (head.subarray(0, GGUF_MAGIC.length).equals(GGUF_MAGIC)) return;
    const text = head.toString('latin1').replace(/[^\x20-\x7e]/g, '.');
    throw new DownloadError('not-gguf', `${this.#spec.url} is not a GGUF file: it starts with "${text}", not "GGUF"`, { permanent: true, details: { head: text } });
  }

  async #discardPart(): Promise<void> {
    await rm(this.#part, { force: true }).catch(() => undefined);
    await rm(this.#metaFile, { force: true }).catch(() => undefined);
    this.#hash = createHash('sha256');
    this.#bytes = 0;
  }

  async #readMeta(): Promise<PartMeta | null> {
    try {
      const meta = JSON.parse(await readFile(this.#metaFile, 'utf8')) as PartMeta;
      return typeof meta.url === 'string' ? meta : null;
    } catch {
      return null;
    }
  }

  async #writeMeta(meta: PartMeta): Promise<void> {
    try {
      await writeFile(this.#metaFile, JSON.stringify(meta));
    } catch (err) {
      throw new DownloadError('io', `cannot write ${this.#metaFile}: ${(err as Error).message}`, { permanent: true, cause: err });
    }
  }

  #transportError(err: unknown, stalled: boolean, when: string): DownloadError {
    if (this.#hooks.signal?.aborted) return new DownloadError('aborted', 'the download was stopped');
    if (stalled) return new DownloadError('stalled', `no data from ${this.#spec.url} for ${this.#spec.stallTimeoutMs} ms while ${when}`);
    const cause = (err as { cause?: { message?: string; code?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    return new DownloadError('network', `${when} ${this.#spec.url} failed: ${why}`, { cause: err });
  }

  #checkAborted(): void {
    if (this.#hooks.signal?.aborted) throw new DownloadError('aborted', 'the download was stopped');
  }

  #report(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.#lastReport < PROGRESS_EVERY_MS) return;
    this.#lastReport = now;
    this.#samples.push([now, this.#bytes]);
    while (this.#samples.length > 2 && now - (this.#samples[0] as [number, number])[0] > RATE_WINDOW_MS) this.#samples.shift();
    const [t0, b0] = this.#samples[0] as [number, number];
    const rate = now > t0 ? ((this.#bytes - b0) * 1000) / (now - t0) : 0;
    const left = this.#totalBytes === null ? null : this.#totalBytes - this.#bytes;
    this.#hooks.onProgress?.({
      url: this.#spec.url,
      dest: this.#spec.dest,
      bytes: this.#bytes,
      totalBytes: this.#totalBytes,
      bytesPerSecond: Math.round(rate),
      etaSeconds: left === null || rate <= 0 ? null : Math.ceil(left / rate),
      resumedFrom: this.#resumedFrom,
      attempt: this.#attempt,
    });
  }
}

async function writeAll(file: FileHandle, chunk: Buffer, position: number, path: string): Promise<void> {
  let written = 0;
  try {
    while (written < chunk.length) {
      const { bytesWritten } = await file.write(chunk, written, chunk.length - written, position + written);
      written += bytesWritten;
    }
  } catch (err) {
    throw new DownloadError('io', `cannot write ${path}: ${(err as Error).message}`, { permanent: true, cause: err });
  }
}

function parseContentRange(header: string | null): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? '');
  if (!m) return null;
  return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) };
}

function contentRangeTotal(header: string | null): number | null {
  const m = /\/(\d+)$/.exec(header?.trim() ?? '');
  return m ? Number(m[1]) : null;
}

function asDownloadError(err: unknown): DownloadError {
  if (err instanceof DownloadError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new DownloadError('io', message, { cause: err });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DownloadError('aborted', 'the download was stopped'));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new DownloadError('aborted', 'the download was stopped'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// --- the lock: one process writes a partial file ---

function lockPath(dest: string): string {
  return `${partPath(dest)}.lock`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes `<dest>.part.lock` (pid and host inside). A lock held by a live process on this host is
 * waited for ('done' when that process produced the file); one left by a dead process is taken over.
 */
async function acquireLock(dest: string, hooks: DownloadHooks): Promise<{ state: 'locked' | 'done'; token: string }> {
  const file = lockPath(dest);
  const token = randomUUID();
  const mine = JSON.stringify({ pid: process.pid, host: hostname(), token });
  let announced = false;
  for (;;) {
    if (hooks.signal?.aborted) throw new DownloadError('aborted', 'the download was stopped');
    try {
      await writeFile(file, mine, { flag: 'wx' });
      return { state: 'locked', token };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new DownloadError('io', `cannot create ${file}: ${(err as Error).message}`, { permanent: true, cause: err });
      }
    }
    let holder: { pid?: unknown; host?: unknown } = {};
    try {
      holder = JSON.parse(await readFile(file, 'utf8')) as typeof holder;
    } catch {
      holder = {};
    }
    const pid = typeof holder.pid === 'number' ? holder.pid : -1;
    const host = typeof holder.host === 'string' ? holder.host : '';
    const live = pid > 0 && pid !== process.pid && host === hostname() && processAlive(pid);
    if (!live) {
      await rm(file, { force: true });
      continue;
    }
    if (!announced) {
      announced = true;
      hooks.onWaiting?.({ pid, host });
    }
    await sleep(500, hooks.signal);
    if (existsSync(dest) && !existsSync(file)) return { state: 'done', token };
  }
}

/** Removes the lock only while it is still this download's (a later one may have taken it over). */
async function releaseLock(dest: string, token: string): Promise<void> {
  const file = lockPath(dest);
  try {
    const holder = JSON.parse(await readFile(file, 'utf8')) as { token?: unknown };
    if (holder.token === token) await rm(file, { force: true });
  } catch {
    // gone already, or not ours to judge
  }
}
