/**
 * Our service as the benchmark runs it: `node packages/cli/dist/main.js start --all` (the
 * supervisor) as a child process over a temporary envs/ and data/ folder (the repo's envs/ is
 * never read), with the workers the caller configures. The supervisor serves each model's HTTP
 * port itself and runs each model in a host child process (a piscina worker thread per replica).
 * Starting, the admin API, host pid tracking and stopping are scripts/lib/service-harness.ts,
 * shared with the service tests; this adds the bench's start (every worker ready, or the reason
 * one cannot be), CPU accounting and the description written into the results.
 */
import type { WorkerInfo } from '@lmserve/protocol';
import { ServiceHarness, processCpuSeconds, sleep, threadCpuSeconds } from '../lib/service-harness.js';

export { processCpuSeconds } from '../lib/service-harness.js';

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
  /** Extra supervisor.env keys (e.g. AUDIT=off, METRICS=off), on top of the bench's own. */
  supervisorEnv?: Record<string, string>;
  /** How long start() waits for every worker to be ready. */
  startTimeoutMs?: number;
  log?: (line: string) => void;
}

export class ServiceProcess {
  readonly #options: ServiceOptions;
  #harness: ServiceHarness | undefined;
  #stopping: Promise<void> | undefined;
  #leftovers: number[] = [];
  #envFiles: Record<string, Record<string, string>> = {};

  constructor(options: ServiceOptions) {
    this.#options = options;
  }

  get supervisorPid(): number | undefined {
    return this.#harness?.child?.pid;
  }

  get hostPids(): number[] {
    return [...(this.#harness?.hostPids ?? [])];
  }

  /** The worker's HTTP port (after start()). */
  port(name: string): number {
    const port = this.#harness?.ports.get(name);
    if (port === undefined) throw new Error(`no port for worker ${name} (start() first)`);
    return port;
  }

  async start(): Promise<void> {
    const o = this.#options;
    const harness = new ServiceHarness({ root: o.root, tempPrefix: 'lmserve-bench-', outputLimit: 16_384 });
    this.#harness = harness;
    const supervisorEnv = await harness.writeSupervisorEnv({
      SHUTDOWN_GRACE_MS: String(o.shutdownGraceMs ?? 2000),
      LOG_LEVEL: 'info',
      ...o.supervisorEnv,
    });
    this.#envFiles['supervisor.env'] = { ...supervisorEnv, ADMIN_TOKEN: '(generated per run)' };
    for (const w of o.workers) {
      // Port 0: the supervisor binds a free port and reports it through the admin API.
      const env = { MODEL_NAME: w.name, HTTP_ADDR: '127.0.0.1:0', ...w.env };
      harness.writeWorkerEnv(w.name, env);
      this.#envFiles[`worker.${w.name}.env`] = env;
    }

    const deadline = Date.now() + (o.startTimeoutMs ?? 180_000);
    await harness.start(['--all'], { timeoutMs: o.startTimeoutMs ?? 180_000 });
    const pending = new Set(o.workers.map((w) => w.name));
    while (pending.size > 0) {
      if (harness.exitStatus) throw new Error(`the supervisor exited during start (${JSON.stringify(harness.exitStatus)}):\n${harness.output}`);
      if (Date.now() > deadline) throw new Error(`workers ${[...pending].join(', ')} not ready in time:\n${harness.output}`);
      const workers = await harness.workers().catch(() => null);
      for (const w of workers ?? []) {
        if (!pending.has(w.name)) continue;
        if (w.state === 'failed' || w.state === 'model-missing' || w.state === 'invalid-config') {
          throw new Error(`worker ${w.name} is ${w.state}: ${w.reason ?? ''}\n${harness.output}`);
        }
        if (w.state !== 'ready' || w.port === null) continue;
        const status = await fetch(`http://127.0.0.1:${w.port}/readyz`).then((r) => r.status, () => 0);
        if (status !== 200) continue;
        harness.ports.set(w.name, w.port);
        pending.delete(w.name);
      }
      if (pending.size > 0) await sleep(200);
    }
  }

  /** GET /admin/workers; also remembers every host pid it reports (for the leftover check). */
  async workers(): Promise<WorkerInfo[]> {
    if (!this.#harness) throw new Error('ServiceProcess.workers() before start()');
    return this.#harness.workers();
  }

  /** CPU seconds of the supervisor and its live hosts together (null once stopped). */
  cpuSeconds(): number | null {
    const pid = this.#harness?.child?.pid;
    if (pid === undefined || this.#harness?.exitStatus) return null;
    const own = processCpuSeconds(pid);
    if (own === null) return null;
    return this.hostPids.reduce((sum, p) => sum + (processCpuSeconds(p) ?? 0), own);
  }

  /**
   * CPU seconds of the supervisor process alone (all its threads; not its hosts), to the
   * nanosecond (threadCpuSeconds: its threads live as long as it does); null once stopped.
   */
  supervisorCpuSeconds(): number | null {
    const pid = this.#harness?.child?.pid;
    if (pid === undefined || this.#harness?.exitStatus) return null;
    return threadCpuSeconds(pid);
  }

  describe(): Record<string, unknown> {
    return {
      command: 'node packages/cli/dist/main.js --envs <tmp>/envs --data <tmp>/data start --all',
      envFiles: this.#envFiles,
      supervisorPid: this.supervisorPid ?? null,
      hostPids: this.hostPids,
      leftoverHostsKilled: this.#leftovers,
    };
  }

  /** The last lines the supervisor (and its hosts, forwarded) wrote. */
  outputTail(): string {
    return this.#harness?.output ?? '';
  }

  /** Idempotent; safe after a failed start. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const harness = this.#harness;
    if (!harness) return;
    this.#leftovers = await harness.stop({
      killAfterMs: (this.#options.shutdownGraceMs ?? 2000) + 8000,
      hostsTimeoutMs: 8000,
      onKill: () => this.#options.log?.('the supervisor did not stop after SIGTERM; SIGKILL'),
    });
    if (this.#leftovers.length > 0) this.#options.log?.(`model hosts outlived the supervisor, killed: ${this.#leftovers.join(', ')}`);
    harness.removeDir();
  }
}
