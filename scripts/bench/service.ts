/**
 * Our service as the benchmark runs it: `node packages/cli/dist/main.js start --all` (the
 * supervisor) as a child process over a temporary envs/ and data/ folder (the repo's envs/ is
 * never read), with the workers the caller configures. The supervisor serves each model's HTTP
 * port itself and runs each model in a host child process (a piscina worker thread per replica).
 *
 * Stopping: SIGTERM to the supervisor (it drains its hosts within SHUTDOWN_GRACE_MS), SIGKILL
 * after a deadline; then every host pid seen through the admin API must be gone, and any that is
 * not (checked by its command line) is SIGKILLed and reported. The same kills run synchronously
 * when this process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WorkerInfo } from '@lmserve/protocol';
import { freePort, OutputTail, sleep } from './llama-server-target.js';

export interface ServiceWorker {
  /** Worker name: envs/worker.<name>.env, also MODEL_NAME. */
  name: string;
  /** Keys of worker.<name>.env (MODEL_NAME and HTTP_ADDR are filled in when absent). */
  env: Record<string, string>;
}

export interface ServiceOptions {
  root: string;
  workers: readonly ServiceWorker[];
  /** Drain grace of the supervisor's shutdown (SHUTDOWN_GRACE_MS). */
  shutdownGraceMs?: number;
  /** How long start() waits for every worker to be ready. */
  startTimeoutMs?: number;
  log?: (line: string) => void;
}

/** CPU seconds (user + system) of one live process, from /proc/<pid>/stat; null when gone. */
export function processCpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return null;
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

/** True while `pid` is a live (not zombie) model host process of ours. */
function isHostProcess(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--lmserve-host');
  } catch {
    return false;
  }
}

const envText = (vars: Record<string, string>) => `${Object.entries(vars).map(([k, v]) => `${k}=${v}`).join('\n')}\n`;

export class ServiceProcess {
  readonly #options: ServiceOptions;
  readonly #tail = new OutputTail(16_384);
  readonly #adminToken = randomBytes(18).toString('base64url');
  readonly #hostPids = new Set<number>();
  readonly #ports = new Map<string, number>();
  #dir: string | undefined;
  #child: ChildProcess | undefined;
  #exit: { code: number | null; signal: string | null } | undefined;
  #gatewayPort = 0;
  #stopping: Promise<void> | undefined;
  #leftovers: number[] = [];
  #envFiles: Record<string, Record<string, string>> = {};
  #killOnExit = () => {
    if (this.#child && !this.#exit) this.#child.kill('SIGKILL');
    for (const pid of this.#hostPids) if (isHostProcess(pid)) process.kill(pid, 'SIGKILL');
  };

  constructor(options: ServiceOptions) {
    this.#options = options;
  }

  get supervisorPid(): number | undefined {
    return this.#child?.pid;
  }

  get hostPids(): number[] {
    return [...this.#hostPids];
  }

  /** The worker's HTTP port (after start()). */
  port(name: string): number {
    const port = this.#ports.get(name);
    if (port === undefined) throw new Error(`no port for worker ${name} (start() first)`);
    return port;
  }

  async start(): Promise<void> {
    const o = this.#options;
    this.#dir = mkdtempSync(join(tmpdir(), 'lmserve-bench-'));
    const envsDir = join(this.#dir, 'envs');
    const dataDir = join(this.#dir, 'data');
    mkdirSync(envsDir);
    mkdirSync(dataDir);
    this.#gatewayPort = await freePort();
    const supervisorEnv = {
      GATEWAY_ADDR: `127.0.0.1:${this.#gatewayPort}`,
      ADMIN_TOKEN: this.#adminToken,
      SHUTDOWN_GRACE_MS: String(o.shutdownGraceMs ?? 2000),
      LOG_LEVEL: 'info',
    };
    writeFileSync(join(envsDir, 'supervisor.env'), envText(supervisorEnv), { mode: 0o600 });
    this.#envFiles['supervisor.env'] = { ...supervisorEnv, ADMIN_TOKEN: '(generated per run)' };
    for (const w of o.workers) {
      // Port 0: the supervisor binds a free port and reports it through the admin API.
      const env = { MODEL_NAME: w.name, HTTP_ADDR: '127.0.0.1:0', ...w.env };
      writeFileSync(join(envsDir, `worker.${w.name}.env`), envText(env));
      this.#envFiles[`worker.${w.name}.env`] = env;
    }

    const cliMain = join(o.root, 'packages', 'cli', 'dist', 'main.js');
    const child = spawn(process.execPath, [cliMain, '--envs', envsDir, '--data', dataDir, 'start', '--all'], {
      cwd: o.root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LMSERVE_ENVS_DIR: '', LMSERVE_DATA_DIR: '', LMSERVE_ROOT: '' },
    });
    this.#child = child;
    process.on('exit', this.#killOnExit);
    this.#tail.watch(child, (exit) => (this.#exit ??= exit));

    const deadline = Date.now() + (o.startTimeoutMs ?? 180_000);
    const pending = new Set(o.workers.map((w) => w.name));
    while (pending.size > 0) {
      if (this.#exit) throw new Error(`the supervisor exited during start (${JSON.stringify(this.#exit)}):\n${this.#tail}`);
      if (Date.now() > deadline) throw new Error(`workers ${[...pending].join(', ')} not ready in time:\n${this.#tail}`);
      const workers = await this.workers().catch(() => null);
      for (const w of workers ?? []) {
        if (!pending.has(w.name)) continue;
        if (w.state === 'failed' || w.state === 'model-missing' || w.state === 'invalid-config') {
          throw new Error(`worker ${w.name} is ${w.state}: ${w.reason ?? ''}\n${this.#tail}`);
        }
        if (w.state !== 'ready' || w.port === null) continue;
        const status = await fetch(`http://127.0.0.1:${w.port}/readyz`).then((r) => r.status, () => 0);
        if (status !== 200) continue;
        this.#ports.set(w.name, w.port);
        pending.delete(w.name);
      }
      if (pending.size > 0) await sleep(200);
    }
  }

  /** GET /admin/workers; also remembers every host pid it reports (for the leftover check). */
  async workers(): Promise<WorkerInfo[]> {
    const res = await fetch(`http://127.0.0.1:${this.#gatewayPort}/admin/workers`, {
      headers: { authorization: `Bearer ${this.#adminToken}` },
    });
    if (res.status !== 200) throw new Error(`/admin/workers answered ${res.status}`);
    const { workers } = (await res.json()) as { workers: WorkerInfo[] };
    for (const w of workers) if (w.pid !== null) this.#hostPids.add(w.pid);
    return workers;
  }

  /** CPU seconds of the supervisor and its live hosts together (null once stopped). */
  cpuSeconds(): number | null {
    const pid = this.#child?.pid;
    if (pid === undefined || this.#exit) return null;
    const own = processCpuSeconds(pid);
    if (own === null) return null;
    return [...this.#hostPids].reduce((sum, p) => sum + (processCpuSeconds(p) ?? 0), own);
  }

  describe(): Record<string, unknown> {
    return {
      command: 'node packages/cli/dist/main.js --envs <tmp>/envs --data <tmp>/data start --all',
      envFiles: this.#envFiles,
      supervisorPid: this.#child?.pid ?? null,
      hostPids: this.hostPids,
      leftoverHostsKilled: this.#leftovers,
    };
  }

  /** The last lines the supervisor (and its hosts, forwarded) wrote. */
  outputTail(): string {
    return this.#tail.toString();
  }

  /** Idempotent; safe after a failed start. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const child = this.#child;
    if (child && !this.#exit) {
      // Learn the current host pids before asking it to stop (a host may have been restarted).
      await Promise.race([this.workers().catch(() => null), sleep(1000)]);
      child.kill('SIGTERM');
      const deadline = Date.now() + (this.#options.shutdownGraceMs ?? 2000) + 8000;
      while (!this.#exit && Date.now() < deadline) await sleep(50);
      if (!this.#exit) {
        this.#options.log?.('the supervisor did not stop after SIGTERM; SIGKILL');
        child.kill('SIGKILL');
        while (!this.#exit && Date.now() < deadline + 3000) await sleep(50);
      }
    }
    // Hosts exit on their own once their supervisor is gone (parent watch); give them a moment.
    const hostDeadline = Date.now() + 8000;
    while ([...this.#hostPids].some(isHostProcess) && Date.now() < hostDeadline) await sleep(100);
    for (const pid of this.#hostPids) {
      if (!isHostProcess(pid)) continue;
      this.#leftovers.push(pid);
      process.kill(pid, 'SIGKILL');
    }
    if (this.#leftovers.length > 0) this.#options.log?.(`model hosts outlived the supervisor, killed: ${this.#leftovers.join(', ')}`);
    process.off('exit', this.#killOnExit);
    if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
  }
}
