/**
 * A stand-in for a running service, for the CLI's audit commands: a worker port that serves
 * GET /logs and GET /events per the contract (newest first; limit, filters, since, after_id;
 * `{"error": {...}}` with a status), and a gateway with a minimal /admin/workers and
 * /admin/status. Both on loopback; every request they get is recorded.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { EventRow, RequestRow } from '@lmserve/core';
import type { WorkerInfo } from '@lmserve/protocol';

export const repoRoot = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');
export const cliSource = join(repoRoot, 'packages', 'cli', 'src', 'main.ts');
export const ADMIN_TOKEN = 'cli-test-admin-token';
export const API_KEY = 'cli-test-api-key';

export interface Received {
  path: string;
  query: Record<string, string>;
  authorization: string | undefined;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function fail(res: ServerResponse, status: number, code: string, message: string, field?: string): void {
  send(res, status, { error: field === undefined ? { code, message } : { code, message, field } });
}

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

let nextReq = 1;

/** A request row with plausible values; `over` sets the rest. */
export function requestRow(id: number, over: Partial<RequestRow> = {}): RequestRow {
  return {
    id,
    req_id: `http-${String(nextReq++).padStart(8, '0')}-0000-4000-8000-000000000000`,
    ts: 1_714_564_800 + id,
    model: 'demo',
    transport: 'http',
    input_len: 5,
    tokens_in: 10 + id,
    tokens_out: 20 + id,
    ttft_ms: 12.34,
    dur_ms: 250.6,
    queue_ms: 0.5,
    status: 'completed',
    error_code: null,
    error: null,
    params: '{}',
    input: 'Hello',
    output: 'World',
    ...over,
  };
}

export function eventRow(id: number, over: Partial<EventRow> = {}): EventRow {
  return { id, ts: 1_714_564_800 + id, level: 'info', code: 'server.ready', msg: `event ${id}`, data: '{}', ...over };
}

export class FakeService {
  readonly requests: RequestRow[] = [];
  readonly events: EventRow[] = [];
  readonly received: Received[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'lmserve-cli-'));
  workerPort = 0;
  gatewayPort = 0;
  /** While true the worker port answers 503 MODEL_NOT_READY (a restart). */
  unavailable = false;
  #worker = createServer((req, res) => this.#serveWorker(req, res));
  #gateway = createServer((req, res) => this.#serveGateway(req, res));

  async start(): Promise<this> {
    this.workerPort = await listen(this.#worker);
    this.gatewayPort = await listen(this.#gateway);
    writeFileSync(join(this.dir, 'supervisor.env'), '# the gateway comes from GATEWAY_ADDR in the environment\n');
    writeFileSync(join(this.dir, 'worker.demo.env'), `API_KEY=${API_KEY}\n`);
    writeFileSync(join(this.dir, 'worker.nokey.env'), '# no API_KEY\n');
    writeFileSync(join(this.dir, 'worker.broken.env'), '');
    return this;
  }

  async close(): Promise<void> {
    this.#worker.closeAllConnections();
    this.#gateway.closeAllConnections();
    await Promise.all([new Promise((r) => this.#worker.close(r)), new Promise((r) => this.#gateway.close(r))]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** What the worker port received on one route. */
  reads(route: '/logs' | '/events'): Received[] {
    return this.received.filter((r) => r.path === route);
  }

  workers(): WorkerInfo[] {
    const base = {
      model: 'demo',
      config_file: '',
      slots: { busy: 0, total: 1 },
      queue: 0,
      in_flight: 0,
      restarts: 0,
      requests: { done: 0, cancelled: 0, failed: 0, direct: 0 },
    };
    return [
      { ...base, name: 'demo', state: 'ready', reason: null, pid: 1234, address: `127.0.0.1:${this.workerPort}`, port: this.workerPort, uptime_s: 5 },
      // Same port, but its env file has no API_KEY: the fake worker answers 401.
      { ...base, name: 'nokey', state: 'ready', reason: null, pid: 1235, address: `0.0.0.0:${this.workerPort}`, port: this.workerPort, uptime_s: 5 },
      {
        ...base,
        name: 'broken',
        state: 'failed',
        reason: 'INVALID_MODEL_FILE: bad magic\nlast stderr line 1\nlast stderr line 2',
        pid: null,
        address: null,
        port: null,
        uptime_s: null,
      },
    ];
  }

  #serveGateway(req: IncomingMessage, res: ServerResponse): void {
    if (req.headers.authorization !== `Bearer ${ADMIN_TOKEN}`) return fail(res, 401, 'UNAUTHORIZED', 'bad admin token');
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method === 'GET' && url.pathname === '/admin/workers') return send(res, 200, { workers: this.workers() });
    if (req.method === 'GET' && url.pathname === '/admin/status') {
      return send(res, 200, {
        pid: process.pid,
        uptime_s: 1,
        gateway: `127.0.0.1:${this.gatewayPort}`,
        envs_dir: this.dir,
        workers: this.workers().map((w) => ({ name: w.name, state: w.state, port: w.port })),
      });
    }
    fail(res, 404, 'NOT_FOUND', `no route ${req.method} ${url.pathname}`);
  }

  #serveWorker(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    this.received.push({ path: url.pathname, query, authorization: req.headers.authorization });
    if (req.headers.authorization !== `Bearer ${API_KEY}`) return fail(res, 401, 'UNAUTHORIZED', 'missing or wrong API key');
    if (this.unavailable) return fail(res, 503, 'MODEL_NOT_READY', 'demo is restarting');
    if (req.method !== 'GET' || (url.pathname !== '/logs' && url.pathname !== '/events')) return fail(res, 404, 'NOT_FOUND', 'no such route');
    const limit = Number(query.limit ?? '100');
    if (!/^\d+$/.test(query.limit ?? '100') || limit < 1 || limit > 1000) {
      return fail(res, 400, 'INVALID_REQUEST', 'limit must be an integer from 1 to 1000', 'limit');
    }
    for (const word of ['status', 'transport', 'level', 'code'] as const) {
      const value = query[word];
      if (value !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(value)) {
        return fail(res, 400, 'INVALID_REQUEST', `${word} must be a word of letters, digits, . _ -`, word);
      }
    }
    const since = query.since === undefined ? null : Number(query.since);
    const afterId = query.after_id === undefined ? null : Number(query.after_id);
    const common = (row: { id: number; ts: number }) => (since === null || row.ts >= since) && (afterId === null || row.id > afterId);
    const rows: Array<RequestRow | EventRow> =
      url.pathname === '/logs'
        ? this.requests.filter(
            (r) => common(r) && (query.status === undefined || r.status === query.status) && (query.transport === undefined || r.transport === query.transport),
          )
        : this.events.filter((e) => common(e) && (query.level === undefined || e.level === query.level) && (query.code === undefined || e.code === query.code));
    send(res, 200, rows.sort((a, b) => b.id - a.id).slice(0, limit));
  }

  /** The environment a CLI child runs with: this gateway, this token, a fixed time zone. */
  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, GATEWAY_ADDR: `127.0.0.1:${this.gatewayPort}`, ADMIN_TOKEN, TZ: 'UTC', ...extra };
    for (const key of Object.keys(env)) if (/^LMSERVE_/.test(key)) delete env[key];
    return env;
  }

  /** Starts the CLI (from source, through tsx) against this service. */
  spawnCli(args: string[], extraEnv: Record<string, string> = {}) {
    return spawn(process.execPath, ['--import', 'tsx', cliSource, '--envs', this.dir, '--data', this.dir, ...args], {
      cwd: repoRoot,
      env: this.env(extraEnv),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** Runs the CLI to its end. */
  async cli(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = this.spawnCli(args, extraEnv);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const [code] = (await once(child, 'close')) as [number | null];
    return { code, stdout, stderr };
  }
}
