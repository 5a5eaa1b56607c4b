/**
 * A real supervisor (`node packages/cli/dist/main.js start`) in a child process, on loopback with
 * free ports, over a temporary envs/ and data/ folder (the repo's envs/ is never read). The
 * service tests (test/service/service-fixture.ts) and the benchmark (scripts/bench/service.ts)
 * both drive it through this module, run by tsx.
 *
 * The supervisor's environment is this process's without the variables that would configure it
 * (SUPERVISOR_KEYS, LMSERVE_<WORKER>_<KEY>, LMSERVE_ENVS_DIR/DATA_DIR/ROOT): what a test or the
 * bench writes into the env files is what runs, whatever the calling shell exports. `start()`
 * takes the variables a caller wants on top.
 *
 * Stopping: SIGTERM to the supervisor (it drains its hosts within SHUTDOWN_GRACE_MS), SIGKILL
 * after a deadline; then every model host it ran must be gone. Hosts are known by their exact pids
 * (from /admin/workers and from the supervisor's children in /proc), never by a command-line
 * pattern that could match another supervisor's. Leftovers are SIGKILLed and reported. The same
 * kills run synchronously if this process exits first.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { WorkerInfo } from '@lmserve/protocol';
import { SUPERVISOR_KEYS, WORKER_KEYS } from '@lmserve/supervisor';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Ports freePort() has handed out in this process. */
const handedOut = new Set<number>();

/**
 * A loopback port that was free a moment ago, and that this process has not been handed before:
 * the kernel may give the same ephemeral port to two binds in a row once the first is closed, and
 * two workers configured with one port had one of them fail with EADDRINUSE while the other
 * answered its /readyz.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = await new Promise<number>((res, rej) => {
      const server = createServer();
      server.once('error', rej);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const port = typeof address === 'object' && address ? address.port : 0;
        server.close(() => res(port));
      });
    });
    if (!handedOut.has(port) || attempt >= 100) {
      handedOut.add(port);
      return port;
    }
  }
}

/** Polls `probe` every 100 ms until it returns a value (a throw counts as "not yet"). */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** /proc/<pid>/stat after the command name: [state, ppid, …]; null when there is no such process. */
function procStat(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** True while a process with this pid exists and is not a zombie (exited, not yet reaped). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // Without /proc (macOS), or when it went in between, kill(0) has the last word.
  return procStat(pid)?.[0] !== 'Z';
}

/** The argv of a live process (empty when unknown). */
function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    try {
      return execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' }).trim().split(/\s+/);
    } catch {
      return [];
    }
  }
}

/** True while `pid` is a live model host process (its argv carries `--lmserve-host`). */
export function isHostProcess(pid: number): boolean {
  return alive(pid) && commandLine(pid).includes('--lmserve-host');
}

/** The live children of `pid`: from /proc, else from `ps`. */
export function childPids(pid: number): number[] {
  if (existsSync('/proc')) {
    return readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .map(Number)
      .filter((child) => {
        const stat = procStat(child);
        return stat !== null && stat[0] !== 'Z' && Number(stat[1]) === pid;
      });
  }
  const out = execFileSync('ps', ['-A', '-o', 'pid=,ppid='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/).map(Number))
    .filter(([, ppid]) => ppid === pid)
    .map(([child]) => child as number);
}

/** CPU seconds (user + system) of one live process, from /proc/<pid>/stat; null when gone. */
export function processCpuSeconds(pid: number): number | null {
  const fields = procStat(pid);
  if (fields === null || fields[0] === 'Z') return null;
  // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 Hz on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds of one live process's threads, to the nanosecond: the sum of
 * /proc/<pid>/task/<tid>/schedstat's run time over the threads alive now (stat's utime and stime
 * count 10 ms ticks, too coarse for the supervisor's few tens of milliseconds a level). A thread
 * that exits between two readings takes its time with it, so use it for a process whose threads
 * live as long as it does. Falls back to processCpuSeconds where schedstat is missing.
 */
export function threadCpuSeconds(pid: number): number | null {
  const tids = threadIds(pid);
  if (tids === null) return processCpuSeconds(pid);
  let ns = 0;
  for (const tid of tids) ns += threadRunNs(pid, tid) ?? 0;
  return Number.isFinite(ns) && ns > 0 ? ns / 1e9 : processCpuSeconds(pid);
}

function threadIds(pid: number): string[] | null {
  try {
    return readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
}

/** A thread's run time in ns (schedstat), or null when it ended while read. */
function threadRunNs(pid: number, tid: string): number | null {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return null;
  }
}

/** One thread of a process as the kernel counts it: its name, run time (ns) and voluntary switches (sleeps). */
export interface ThreadSample {
  name: string;
  cpuNs: number;
  voluntarySwitches: number;
}

/**
 * Every thread of `pid` by thread id, from /proc/<pid>/task/<tid>/{schedstat,comm,status}; null
 * where /proc/<pid>/task cannot be read (no such process, not Linux). A thread that ends while it
 * is read is left out.
 */
export function threadSamples(pid: number): Map<string, ThreadSample> | null {
  const tids = threadIds(pid);
  if (tids === null) return null;
  const out = new Map<string, ThreadSample>();
  for (const tid of tids) {
    const cpuNs = threadRunNs(pid, tid);
    if (cpuNs === null) continue;
    try {
      const dir = `/proc/${pid}/task/${tid}`;
      const switches = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`${dir}/status`, 'utf8'));
      out.set(tid, { name: readFileSync(`${dir}/comm`, 'utf8').trim(), cpuNs, voluntarySwitches: Number(switches?.[1] ?? 0) });
    } catch {
      // The thread ended while we read.
    }
  }
  return out;
}

/** Waits until none of `pids` is alive; returns those that still are after `timeoutMs`. */
export async function waitForHostsGone(pids: readonly number[], timeoutMs = 8000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(100);
  return pids.filter(alive);
}

export function envText(vars: Record<string, string>): string {
  return `${Object.entries(vars).map(([k, v]) => `${k}=${v}`).join('\n')}\n`;
}

/** Variables that configure a supervisor: its own keys, and LMSERVE_<WORKER>_<KEY> of any worker. */
const WORKER_OVERRIDE = new RegExp(`^LMSERVE_[A-Z0-9_]+_(${WORKER_KEYS.join('|')})$`);
const PATH_VARIABLES = ['LMSERVE_ENVS_DIR', 'LMSERVE_DATA_DIR', 'LMSERVE_ROOT'];

/** This process's environment without what would configure a supervisor, plus `extra` (undefined deletes). */
export function supervisorEnvironment(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if ((SUPERVISOR_KEYS as readonly string[]).includes(key) || PATH_VARIABLES.includes(key) || WORKER_OVERRIDE.test(key)) continue;
    env[key] = value;
  }
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

export interface SseEvent {
  event: string;
  data: any;
}

/** Reads a text/event-stream body: one event per blank-line-separated block (`event:` and one `data:` JSON line). */
export async function* readSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      // Lines end at LF, CR or CRLF only (a regex's `.` would also stop at U+2028 and U+2029,
      // which JSON leaves unescaped and a random model's tokens can hold).
      const lines = block.split(/\r\n|\r|\n/);
      const event = lines.find((line) => line.startsWith('event: '))?.slice('event: '.length) ?? 'message';
      const data = lines.filter((line) => line.startsWith('data: ')).map((line) => line.slice('data: '.length));
      yield { event, data: data.length === 0 ? null : JSON.parse(data.join('\n')) };
    }
  }
}

/** The last `limit` characters a child wrote (stdout and stderr together), and how it ended. */
export class OutputTail {
  #text = '';
  constructor(readonly limit = 8192) {}
  push(chunk: string): void {
    this.#text = this.#text + chunk;
    if (this.#text.length > this.limit) this.#text = this.#text.slice(-this.limit);
  }
  toString(): string {
    return this.#text;
  }

  /** Collects a child's output here and reports how it ended (exit, or a failed spawn). */
  watch(child: ChildProcess, onExit: (exit: ExitStatus) => void): void {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => this.push(d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => this.push(d));
    child.on('exit', (code, signal) => onExit({ code, signal }));
    child.on('error', (err) => {
      onExit({ code: null, signal: null });
      this.push(`\nspawn error: ${err.message}\n`);
    });
  }
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServiceHarnessOptions {
  /** The repo whose packages/cli/dist/main.js runs (also the supervisor's cwd). Default: this one. */
  root?: string;
  /** Prefix of the temporary folder's name. */
  tempPrefix?: string;
  /** ADMIN_TOKEN written to supervisor.env; default: a random one. */
  adminToken?: string;
  /** Characters of the supervisor's output kept (default: all of it). */
  outputLimit?: number;
}

export interface StartOptions {
  /** Variables set (or, undefined, removed) on top of the cleaned environment. */
  env?: Record<string, string | undefined>;
  /** How long to wait for the admin port. */
  timeoutMs?: number;
}

export interface StopOptions {
  signal?: NodeJS.Signals;
  /** SIGKILL the supervisor when it has not exited this long after the signal. */
  killAfterMs?: number;
  /** How long its hosts get to exit after it did. */
  hostsTimeoutMs?: number;
  /** Called when the SIGKILL fallback fires. */
  onKill?: () => void;
}

export class ServiceHarness {
  readonly root: string;
  readonly cliMain: string;
  readonly dir: string;
  readonly envsDir: string;
  readonly dataDir: string;
  readonly adminToken: string;
  /** HTTP port of each worker (configured ones at once; port-0 ones once seen ready). */
  readonly ports = new Map<string, number>();
  /** Every model host pid seen (admin API, the supervisor's children); checked at stop(). */
  readonly hostPids = new Set<number>();
  gatewayPort = 0;
  child: ChildProcess | undefined;
  exit: Promise<ExitStatus> | undefined;
  /** Set once the supervisor has exited. */
  exitStatus: ExitStatus | undefined;
  /** Environment the supervisor was started with (the CLI runs with the same). */
  #env: NodeJS.ProcessEnv = supervisorEnvironment();
  readonly #output: OutputTail;
  #stopping: Promise<number[]> | undefined;
  readonly #killOnExit = () => {
    if (this.child && !this.exitStatus) this.child.kill('SIGKILL');
    for (const pid of this.hostPids) if (isHostProcess(pid)) process.kill(pid, 'SIGKILL');
  };

  constructor(options: ServiceHarnessOptions = {}) {
    this.root = options.root ?? repoRoot;
    this.cliMain = join(this.root, 'packages', 'cli', 'dist', 'main.js');
    this.adminToken = options.adminToken ?? randomBytes(18).toString('base64url');
    this.#output = new OutputTail(options.outputLimit ?? Infinity);
    this.dir = mkdtempSync(join(tmpdir(), options.tempPrefix ?? 'lmserve-service-'));
    this.envsDir = join(this.dir, 'envs');
    this.dataDir = join(this.dir, 'data');
    mkdirSync(this.envsDir);
    mkdirSync(this.dataDir);
  }

  /** What the supervisor (and its hosts, forwarded) wrote so far. */
  get output(): string {
    return this.#output.toString();
  }

  /** Writes supervisor.env: GATEWAY_ADDR on a free loopback port and ADMIN_TOKEN, under `vars`. */
  async writeSupervisorEnv(vars: Record<string, string> = {}): Promise<Record<string, string>> {
    this.gatewayPort = await freePort();
    const env = { GATEWAY_ADDR: `127.0.0.1:${this.gatewayPort}`, ADMIN_TOKEN: this.adminToken, ...vars };
    writeFileSync(join(this.envsDir, 'supervisor.env'), envText(env), { mode: 0o600 });
    return env;
  }

  /** Writes worker.<name>.env; remembers the port of a HTTP_ADDR that names one (not 0). */
  writeWorkerEnv(name: string, vars: Record<string, string>): void {
    writeFileSync(join(this.envsDir, `worker.${name}.env`), envText(vars));
    const port = Number(/:(\d+)$/.exec(vars.HTTP_ADDR ?? '')?.[1] ?? 0);
    if (port > 0) this.ports.set(name, port);
  }

  /** Starts `supervisor --envs … --data … start <args>` and waits for the admin port. */
  async start(args: string[] = ['--all'], options: StartOptions = {}): Promise<void> {
    if (this.child) throw new Error('already started');
    this.#env = supervisorEnvironment(options.env);
    const child = spawn(process.execPath, [this.cliMain, '--envs', this.envsDir, '--data', this.dataDir, 'start', ...args], {
      cwd: this.root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: this.#env,
    });
    this.child = child;
    this.exit = new Promise((res) => this.#output.watch(child, (exit) => res((this.exitStatus ??= exit))));
    process.on('exit', this.#killOnExit);
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      if (this.exitStatus) throw new Error(`the supervisor exited during start (${JSON.stringify(this.exitStatus)}):\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`the supervisor's admin port did not answer in time:\n${this.output}`);
      const status = await this.admin('GET', '/admin/status').then((r) => r.status, () => 0);
      if (status === 200) return;
      await sleep(100);
    }
  }

  /** Runs the CLI (`supervisor --envs … --data … <args>`) against this service, with the supervisor's environment. */
  cli(args: string[]): Promise<{ stdout: string; stderr: string }> {
    return promisify(execFile)(process.execPath, [this.cliMain, '--envs', this.envsDir, '--data', this.dataDir, ...args], {
      cwd: this.root,
      env: this.#env,
    });
  }

  url(name: string, path: string): string {
    return `http://127.0.0.1:${this.ports.get(name)}${path}`;
  }

  /** The gateway's URL of `path` (admin REST). */
  adminUrl(path: string): string {
    return `http://127.0.0.1:${this.gatewayPort}${path}`;
  }

  async admin(method: 'GET' | 'POST', path: string, token: string | null = this.adminToken): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
    const res = await fetch(`http://127.0.0.1:${this.gatewayPort}${path}`, { method, headers });
    return { status: res.status, body: await res.json() };
  }

  /** GET /admin/workers; remembers every host pid it reports. */
  async workers(): Promise<WorkerInfo[]> {
    const { status, body } = await this.admin('GET', '/admin/workers');
    if (status !== 200) throw new Error(`/admin/workers answered ${status}`);
    const workers = body.workers as WorkerInfo[];
    for (const w of workers) if (w.pid !== null) this.hostPids.add(w.pid);
    return workers;
  }

  async worker(name: string): Promise<WorkerInfo> {
    const worker = (await this.workers()).find((w) => w.name === name);
    if (!worker) throw new Error(`no worker ${name}`);
    return worker;
  }

  async waitState(name: string, state: WorkerInfo['state'], timeoutMs = 30_000): Promise<WorkerInfo> {
    return waitFor(`${name} to be ${state}`, async () => {
      const w = await this.worker(name);
      return w.state === state ? w : undefined;
    }, timeoutMs);
  }

  /** Waits for the worker's /readyz; learns its port from the admin API when it was configured as 0. */
  /** The last `limit` lines of the supervisor's output that name any of these workers. */
  logLinesOf(names: string[], limit: number): string {
    return this.output.split('\n').filter((line) => names.some((name) => line.includes(`"${name}"`))).slice(-limit).join('\n');
  }

  async waitReady(name: string, timeoutMs = 30_000): Promise<WorkerInfo> {
    try {
      await waitFor(`${name} /readyz`, async () => {
        if (!this.ports.has(name)) {
          const w = await this.worker(name);
          if (w.state !== 'ready' || w.port === null) return undefined;
          this.ports.set(name, w.port);
        }
        return (await fetch(this.url(name, '/readyz'))).status === 200 ? true : undefined;
      }, timeoutMs);
    } catch (err) {
      // Say where the worker stood, and what the supervisor logged about it, so a timeout in CI
      // can be understood from its output alone.
      const info = await this.worker(name).then((w) => JSON.stringify(w), (e: unknown) => `unknown (${String(e)})`);
      throw new Error(`${(err as Error).message}; the worker: ${info}\nits last log lines:\n${this.logLinesOf([name], 30)}`);
    }
    return this.worker(name);
  }

  /**
   * The live model hosts among the supervisor's children right now (by pid, from /proc or ps),
   * also remembered for stop()'s check.
   */
  hostProcesses(): number[] {
    const pid = this.child?.pid;
    if (pid === undefined || this.exitStatus) return [];
    const hosts = childPids(pid).filter(isHostProcess);
    for (const host of hosts) this.hostPids.add(host);
    return hosts;
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
    for await (const e of readSse(res.body as unknown as AsyncIterable<Uint8Array>)) {
      events.push(e);
      onEvent(e);
    }
    return events;
  }

  /** Sends `signal` (unless it exited already) and waits for the exit. */
  async terminate(signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitStatus> {
    if (!this.child || !this.exit) throw new Error('not started');
    if (!this.exitStatus) this.child.kill(signal);
    return this.exit;
  }

  /**
   * Stops the supervisor if it still runs (`signal`, SIGKILL after `killAfterMs`), waits for
   * every host it ran to exit, SIGKILLs those that do not and returns their pids. Idempotent.
   */
  stop(options: StopOptions = {}): Promise<number[]> {
    this.#stopping ??= this.#stop(options);
    return this.#stopping;
  }

  async #stop({ signal = 'SIGTERM', killAfterMs = 15_000, hostsTimeoutMs = 8000, onKill }: StopOptions): Promise<number[]> {
    const child = this.child;
    if (child && !this.exitStatus) {
      // Learn the current hosts before asking it to stop (one may have been restarted since).
      this.hostProcesses();
      await Promise.race([this.workers().catch(() => null), sleep(1000)]);
      child.kill(signal);
      const timer = setTimeout(() => {
        onKill?.();
        child.kill('SIGKILL');
      }, killAfterMs);
      await this.exit;
      clearTimeout(timer);
    }
    // Hosts exit on their own once their supervisor is gone (parent watch); give them a moment.
    // isHostProcess: a pid still alive may have been reused by something else since.
    const leftovers = (await waitForHostsGone([...this.hostPids], hostsTimeoutMs)).filter(isHostProcess);
    for (const pid of leftovers) process.kill(pid, 'SIGKILL');
    process.off('exit', this.#killOnExit);
    return leftovers;
  }

  removeDir(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
