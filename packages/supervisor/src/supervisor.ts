/**
 * The supervisor: reads envs/, holds every listening socket (one HTTP port per model, the
 * gateway/admin port), runs one ModelWorker per configured model, and never runs inference.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LmError, createLogger, type Logger, type SupervisorStatus, type WorkerInfo } from '@lmserve/protocol';
import { closeServer, createAdminApp, createModelApp, formatAddress, listen, type AdminBackend } from '@lmserve/http';
import { ModelWorker } from './model-worker.js';
import type { ServicePaths } from './service-paths.js';
import { loadSupervisorConfig, writeAdminToken, type SupervisorConfig } from './supervisor-config.js';
import { isConfigError, loadWorkerConfig, workerFiles, type WorkerConfig } from './worker-config.js';

export interface SupervisorOptions {
  paths: ServicePaths;
  /** Workers started at once: every configured one, or these names (the rest stay stopped). */
  start: 'all' | string[];
  log?: Logger;
  /** Called when an admin asks the supervisor to exit (POST /admin/shutdown). */
  onShutdownRequest?: () => void;
}

interface Binding {
  server: Server;
  key: string;
}

export class Supervisor implements AdminBackend {
  readonly paths: ServicePaths;
  readonly config: SupervisorConfig;
  readonly #log: Logger;
  readonly #workers = new Map<string, ModelWorker>();
  readonly #bindings = new Map<string, Binding>();
  readonly #startedAt = Date.now();
  readonly #onShutdownRequest: (() => void) | undefined;
  #gateway: Server | undefined;
  #closing: Promise<void> | undefined;

  private constructor(paths: ServicePaths, config: SupervisorConfig, log: Logger, onShutdownRequest?: () => void) {
    this.paths = paths;
    this.config = config;
    this.#log = log;
    this.#onShutdownRequest = onShutdownRequest;
  }

  /** Reads the configuration, binds every port and starts the chosen workers. Throws on a bad supervisor.env. */
  static async start(options: SupervisorOptions): Promise<Supervisor> {
    const config = loadSupervisorConfig(options.paths);
    const log = options.log ?? createLogger({ component: 'supervisor', pid: process.pid }, { level: config.logLevel });
    const supervisor = new Supervisor(options.paths, config, log, options.onShutdownRequest);
    await supervisor.#open(options.start);
    return supervisor;
  }

  get gatewayAddress(): string {
    const address = this.#gateway?.address() as AddressInfo | null | undefined;
    return address ? formatAddress({ host: address.address, port: address.port }) : formatAddress(this.config.gatewayAddr);
  }

  worker(name: string): ModelWorker {
    const worker = this.#workers.get(name);
    if (!worker) throw new LmError('NOT_FOUND', `no worker named "${name}" (looked for worker.${name}.env in ${this.paths.envsDir})`);
    return worker;
  }

  status(): SupervisorStatus {
    return {
      pid: process.pid,
      uptime_s: Math.round((Date.now() - this.#startedAt) / 1000),
      gateway: this.gatewayAddress,
      envs_dir: this.paths.envsDir,
      workers: [...this.#workers.values()].map((w) => {
        const info = w.info();
        return { name: info.name, state: info.state, port: info.port };
      }),
    };
  }

  listWorkers(): WorkerInfo[] {
    return [...this.#workers.values()].map((w) => w.info());
  }

  async startWorker(name: string): Promise<WorkerInfo> {
    const worker = this.worker(name);
    if (!worker.running && (await this.#reload(worker))) worker.start();
    return worker.info();
  }

  async stopWorker(name: string): Promise<WorkerInfo> {
    const worker = this.worker(name);
    await worker.stop(this.config.shutdownGraceMs);
    return worker.info();
  }

  async restartWorker(name: string): Promise<WorkerInfo> {
    const worker = this.worker(name);
    await worker.stop(this.config.shutdownGraceMs);
    return this.startWorker(name);
  }

  shutdown(): void {
    if (this.#onShutdownRequest) this.#onShutdownRequest();
    else void this.close();
  }

  /** Stops accepting, drains every worker within the grace period, closes every socket. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Last resort on exit: no host may outlive the supervisor. */
  killAll(): void {
    for (const worker of this.#workers.values()) worker.kill();
  }

  async #open(start: 'all' | string[]): Promise<void> {
    const files = workerFiles(this.paths.envsDir);
    if (start !== 'all') {
      for (const name of start) {
        if (!files.some((f) => f.name === name)) {
          throw new LmError('NOT_FOUND', `no worker named "${name}" (no worker.${name}.env in ${this.paths.envsDir})`);
        }
      }
    }
    for (const { name, file } of files) {
      const { restartBackoffMs, restartBackoffMaxMs, shutdownGraceMs } = this.config;
      const timings = { restartBackoffMs, restartBackoffMaxMs, shutdownGraceMs };
      this.#workers.set(name, new ModelWorker({ config: loadWorkerConfig(name, file, this.paths), log: this.#log, timings }));
    }
    process.once('exit', () => this.killAll());
    await this.#openGateway();
    const bound = new Set<ModelWorker>();
    for (const worker of this.#workers.values()) {
      this.#reportConfig(worker);
      if (await this.#bind(worker)) bound.add(worker);
    }
    for (const worker of bound) {
      if (start === 'all' || start.includes(worker.name)) worker.start();
    }
    if (files.length === 0) this.#log.warn('no workers configured', { envsDir: this.paths.envsDir });
  }

  async #openGateway(): Promise<void> {
    const app = createAdminApp(this, this.config.adminToken);
    this.#gateway = await listen(app, this.config.gatewayAddr);
    let tokenNote = {};
    if (this.config.adminTokenGenerated) tokenNote = { adminTokenFile: writeAdminToken(this.paths, this.config.adminToken) };
    this.#log.info('gateway listening', { address: this.gatewayAddress, ...tokenNote });
    for (const key of this.config.unknownKeys) this.#log.warn('unknown key', { key, file: this.config.file });
  }

  #reportConfig(worker: ModelWorker): void {
    const config = worker.config;
    if (!config) {
      this.#log.error('invalid worker configuration', { worker: worker.name, reason: worker.info().reason });
      return;
    }
    for (const key of config.unknownKeys) this.#log.warn('unknown key', { worker: worker.name, key, file: config.file });
  }

  /** Re-reads the worker's env file; true when the worker is configured and its port is bound. */
  async #reload(worker: ModelWorker): Promise<boolean> {
    worker.setConfig(loadWorkerConfig(worker.name, worker.info().config_file, this.paths));
    this.#reportConfig(worker);
    return this.#bind(worker);
  }

  /** Binds (or re-binds, when HTTP_ADDR changed) the worker's HTTP port; false when it cannot serve. */
  async #bind(worker: ModelWorker): Promise<boolean> {
    const config: WorkerConfig | null = worker.config;
    const current = this.#bindings.get(worker.name);
    if (!config) return false;
    const key = formatAddress(config.httpAddr);
    if (current && (current.key === key || config.httpAddr.port === 0)) return true;
    if (current) {
      this.#bindings.delete(worker.name);
      await closeServer(current.server);
      worker.setEndpoint(null);
    }
    const app = createModelApp({ backend: worker, log: this.#log.child({ worker: worker.name }) });
    try {
      const server = await listen(app, config.httpAddr);
      const address = server.address() as AddressInfo;
      this.#bindings.set(worker.name, { server, key });
      worker.setEndpoint({ address: formatAddress({ host: address.address, port: address.port }), port: address.port });
      this.#log.info('model port listening', { worker: worker.name, address: formatAddress({ host: address.address, port: address.port }) });
      return true;
    } catch (err) {
      const reason = `cannot listen on HTTP_ADDR=${key} (${config.file}): ${(err as Error).message}`;
      worker.markFailed(reason);
      this.#log.error('model port failed', { worker: worker.name, reason });
      return false;
    }
  }

  async #close(): Promise<void> {
    const grace = this.config.shutdownGraceMs;
    this.#log.info('shutting down', { graceMs: grace });
    const servers = [...this.#bindings.values()].map((b) => b.server);
    if (this.#gateway) servers.push(this.#gateway);
    // Stop accepting at once; connections in flight finish as their requests drain.
    const closed = servers.map((server) => closeServer(server));
    await Promise.all([...this.#workers.values()].map((w) => w.stop(grace)));
    const force = setTimeout(() => servers.forEach((s) => s.closeAllConnections()), 1000);
    await Promise.all(closed);
    clearTimeout(force);
    this.#log.info('shut down');
  }
}

