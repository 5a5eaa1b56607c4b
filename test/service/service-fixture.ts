/**
 * A real supervisor in a child process, on loopback with free ports, over a temp envs/ and
 * data/ folder (the repo's envs/ is never touched). Used by the service tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerInfo } from '@lmserve/protocol';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliMain = join(repoRoot, 'packages', 'cli', 'dist', 'main.js');
export const tinyModel = join(repoRoot, 'data', 'models', 'tiny', 'model.gguf');
export const tinyBpeModel = join(repoRoot, 'data', 'models', 'tiny-bpe', 'model.gguf');
export const ADMIN_TOKEN = 'test-admin-token';

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const server = createServer();
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => res(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** True while a process with this pid exists (and is not a zombie of ours). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A zombie has exited; only its parent (maybe a non-reaping init) has not collected it.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

export interface WorkerSpec {
  model: string;
  port?: number;
  /** Extra or overriding keys of worker.<name>.env. */
  env?: Record<string, string>;
}

export interface SseEvent {
  event: string;
  data: any;
}

export class ServiceFixture {
  readonly dir: string;
  readonly envsDir: string;
  readonly dataDir: string;
  readonly ports = new Map<string, number>();
  gatewayPort = 0;
  child: ChildProcess | undefined;
  stderr = '';
  readonly hostPids = new Set<number>();
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'lmserve-service-'));
    this.envsDir = join(this.dir, 'envs');
    this.dataDir = join(this.dir, 'data');
    mkdirSync(this.envsDir);
    mkdirSync(this.dataDir);
  }

  async configure(workers: Record<string, WorkerSpec>, supervisorEnv: Record<string, string> = {}): Promise<void> {
    this.gatewayPort = await freePort();
    const sup = {
      GATEWAY_ADDR: `127.0.0.1:${this.gatewayPort}`,
      ADMIN_TOKEN,
      SHUTDOWN_GRACE_MS: '5000',
      RESTART_BACKOFF_MS: '1000',
      LOG_LEVEL: 'info',
      ...supervisorEnv,
    };
    writeFileSync(join(this.envsDir, 'supervisor.env'), envText(sup));
    for (const [name, spec] of Object.entries(workers)) {
      const port = spec.port ?? (await freePort());
      this.ports.set(name, port);
      const env = {
        MODEL_NAME: name,
        MODEL_PATH: spec.model,
        HTTP_ADDR: `127.0.0.1:${port}`,
        WORKER_CONCURRENCY: '2',
        MODEL_THREADS: '1',
        CTX_SIZE: '512',
        GPU_LAYERS: '0',
        MAX_QUEUE: '8',
        ...spec.env,
      };
      writeFileSync(join(this.envsDir, `worker.${name}.env`), envText(env));
    }
  }

  /** Starts `supervisor --envs … --data … start <args>` and waits for the admin port. */
  async start(args: string[] = ['--all']): Promise<void> {
    const child = spawn(process.execPath, [cliMain, '--envs', this.envsDir, '--data', this.dataDir, 'start', ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LMSERVE_ENVS_DIR: '', LMSERVE_DATA_DIR: '' },
    });
    this.child = child;
    child.stdout?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exit = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
    await waitFor('the admin port', async () => ((await this.admin('GET', '/admin/status')).status === 200 ? true : undefined));
  }

  url(name: string, path: string): string {
    return `http://127.0.0.1:${this.ports.get(name)}${path}`;
  }

  async admin(method: 'GET' | 'POST', path: string, token: string | null = ADMIN_TOKEN): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
    const res = await fetch(`http://127.0.0.1:${this.gatewayPort}${path}`, { method, headers });
    return { status: res.status, body: await res.json() };
  }

  async worker(name: string): Promise<WorkerInfo> {
    const { body } = await this.admin('GET', '/admin/workers');
    const worker = (body.workers as WorkerInfo[]).find((w) => w.name === name);
    if (!worker) throw new Error(`no worker ${name}`);
    if (worker.pid !== null) this.hostPids.add(worker.pid);
    return worker;
  }

  async waitState(name: string, state: WorkerInfo['state'], timeoutMs = 30_000): Promise<WorkerInfo> {
    return waitFor(`${name} to be ${state}`, async () => {
      const w = await this.worker(name);
      return w.state === state ? w : undefined;
    }, timeoutMs);
  }

  async waitReady(name: string): Promise<void> {
    await waitFor(`${name} /readyz`, async () => ((await fetch(this.url(name, '/readyz'))).status === 200 ? true : undefined));
    await this.worker(name);
  }

  async complete(
    name: string,
    body: unknown,
    options: { signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; headers: Headers; body: any }> {
    const { signal, headers } = options;
    const res = await fetch(this.url(name, '/v1/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal: signal ?? null,
    });
    return { status: res.status, headers: res.headers, body: await res.json() };
  }

  /** Streams a completion; `onEvent` sees each SSE event as it arrives. Resolves with all of them. */
  async stream(name: string, body: Record<string, any>, onEvent: (e: SseEvent) => void = () => undefined, signal?: AbortSignal): Promise<SseEvent[]> {
    const res = await fetch(this.url(name, '/v1/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, params: { ...body.params, stream: true } }),
      signal: signal ?? null,
    });
    if (res.status !== 200 || !res.body) throw new Error(`stream answered ${res.status}: ${await res.text()}`);
    const events: SseEvent[] = [];
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
        const data = /^data: (.*)$/m.exec(block)?.[1];
        const e = { event, data: data === undefined ? null : JSON.parse(data) };
        events.push(e);
        onEvent(e);
      }
    }
    return events;
  }

  /** SIGTERM, then waits for the exit; returns its code and signal. */
  async terminate(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.child || !this.exit) throw new Error('not started');
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exit;
  }

  /** Stops the supervisor if it still runs, checks that none of its hosts outlived it, removes the temp dir. */
  async cleanup(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child?.kill('SIGKILL'), 15_000);
      await this.exit;
      clearTimeout(timer);
    }
    const leftovers = await waitForHostsGone([...this.hostPids]);
    rmSync(this.dir, { recursive: true, force: true });
    if (leftovers.length > 0) {
      for (const pid of leftovers) process.kill(pid, 'SIGKILL');
      throw new Error(`model hosts outlived their supervisor: ${leftovers.join(', ')}`);
    }
  }
}

export async function waitForHostsGone(pids: number[], timeoutMs = 8000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(100);
  return pids.filter(alive);
}

function envText(vars: Record<string, string>): string {
  return `${Object.entries(vars).map(([k, v]) => `${k}=${v}`).join('\n')}\n`;
}
