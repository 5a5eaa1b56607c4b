/**
 * A local HTTP server that serves a model file the way real servers misbehave: slowly, dropping
 * the connection part-way, stalling, answering 404 or an HTML page. It honours `Range: bytes=N-`
 * (206 with Content-Range) and `If-Range` (its ETag), and records every request it got.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ServeMode {
  /** Bytes per second (sent in 16 KiB pieces); default: as fast as the socket takes them. */
  rate?: number;
  /** Destroy the socket once this many bytes of the file have been sent by this response (first `times` responses). */
  dropAt?: number;
  /** Stop sending (socket left open) once this many bytes of the file have been sent (first `times` responses). */
  stallAt?: number;
  /** How many responses the drop or stall applies to (default 1). */
  times?: number;
  status?: 404 | 500;
  html?: boolean;
}

export interface SeenRequest {
  path: string;
  range: string | null;
  ifRange: string | null;
}

export class ModelServer {
  readonly file: Buffer;
  readonly sha256: string;
  readonly etag: string;
  readonly requests: SeenRequest[] = [];
  mode: ServeMode = {};
  #server: Server | undefined;
  #sockets = new Set<Socket>();
  #faults = 0;

  constructor(path: string) {
    this.file = readFileSync(path);
    this.sha256 = createHash('sha256').update(this.file).digest('hex');
    this.etag = `"${this.sha256.slice(0, 16)}"`;
  }

  get port(): number {
    return (this.#server?.address() as AddressInfo).port;
  }

  url(name = 'model.gguf'): string {
    return `http://127.0.0.1:${this.port}/${name}`;
  }

  /** Requests that asked for a range (resumes). */
  ranged(): SeenRequest[] {
    return this.requests.filter((r) => r.range !== null);
  }

  setMode(mode: ServeMode): void {
    this.mode = mode;
    this.#faults = 0;
  }

  async start(): Promise<void> {
    this.#server = createServer((req, res) => void this.#handle(req, res));
    this.#server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.#server?.listen(0, '127.0.0.1', resolve));
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const range = req.headers.range ?? null;
    const ifRange = (req.headers['if-range'] as string | undefined) ?? null;
    this.requests.push({ path: req.url ?? '', range, ifRange });
    const mode = this.mode;
    if (mode.status) {
      res.writeHead(mode.status, { 'content-type': 'text/plain' }).end(mode.status === 404 ? 'Not Found' : 'oops');
      return;
    }
    if (mode.html) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><html><body>Sign in to download</body></html>');
      return;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(range ?? '');
    const honourRange = m && (ifRange === null || ifRange === this.etag);
    if (m && honourRange) {
      start = Number(m[1]);
      if (start >= this.file.length) {
        res.writeHead(416, { 'content-range': `bytes */${this.file.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-type': 'application/octet-stream',
        'content-length': String(this.file.length - start),
        'content-range': `bytes ${start}-${this.file.length - 1}/${this.file.length}`,
        etag: this.etag,
        'accept-ranges': 'bytes',
      });
    } else {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(this.file.length), etag: this.etag, 'accept-ranges': 'bytes' });
    }
    const faulty = (mode.dropAt !== undefined || mode.stallAt !== undefined) && this.#faults < (mode.times ?? 1);
    if (faulty) this.#faults++;
    const piece = 16 * 1024;
    let sent = 0;
    let offset = start;
    while (offset < this.file.length) {
      if (res.destroyed) return;
      if (faulty && mode.dropAt !== undefined && sent >= mode.dropAt) {
        req.socket.destroy();
        return;
      }
      if (faulty && mode.stallAt !== undefined && sent >= mode.stallAt) return; // the socket stays open, silent
      const end = Math.min(this.file.length, offset + piece);
      const ok = res.write(this.file.subarray(offset, end));
      sent += end - offset;
      offset = end;
      if (mode.rate) await sleep((piece / mode.rate) * 1000);
      else if (!ok) await new Promise((resolve) => res.once('drain', resolve));
    }
    res.end();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
