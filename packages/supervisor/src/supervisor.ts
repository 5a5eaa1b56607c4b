/**
 * The supervisor: reads envs/, runs one ModelWorker per configured model, binds every
 * transport (HTTP, NATS) to every worker through the core's Transport interface, serves the
 * gateway/admin port, and never runs inference. It owns the observer: every request end and
 * every lifecycle event of the service is published there.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import {
  RecentLog,
  RequestPath,
  ServiceObserver,
  formatAddress,
  type GrammarLibraryApi,
  type RequestEnd,
  type ServiceEvent,
  type Transport,
  type TransportEndpoint,
} from '@lmserve/core';
import { LmError, createLogger, toLmError, type Logger, type SupervisorStatus, type WorkerInfo } from '@lmserve/protocol';
import { HttpTransport, closeServer, createAdminApp, listen, type AdminBackend, type RecentQuery } from '@lmserve/http';
import { NatsTransport } from '@lmserve/nats';
import { ModelWorker } from './model-worker.js';
import { ModelDownloads } from './download/model-downloads.js';
import { MemoryLedger } from './fit/memory-fit.js';
import { Observability } from './observability.js';
import { GrammarService, checkerModelPath } from './grammar-service.js';
import type { ServicePaths } from './service-paths.js';
import { loadSupervisorConfig, writeAdminToken, type SupervisorConfig } from './supervisor-config.js';
import { loadWorkerConfig, workerEnvPrefix, workerFiles, type WorkerConfig, type WorkerConfigError } from './worker-config.js';

export interface SupervisorOptions {
  paths: ServicePaths;
  /** Workers started at once: every configured one, or these names (the rest stay stopped). */
  start: 'all' | string[];
  log?: Logger;
  /** Subscribe before anything happens (tests, embedders); the supervisor makes one otherwise. */
  observer?: ServiceObserver;
  /** Transports to bind to every worker (default: HTTP and NATS). */
  transports?: (log: Logger) => Transport[];
  /** Called when an admin asks the supervisor to exit (POST /admin/shutdown). */
  onShutdownRequest?: () => void;
}

type AdminAction = 'start' | 'stop' | 'restart';

interface WorkerEntry {
  worker: ModelWorker;
  requests: RequestPath;
  /** The admin action running on this worker: a second, different one is a CONFLICT. */
  action: { kind: AdminAction; done: Promise<WorkerInfo> } | undefined;
}

const RECENT_EVENTS = 2000;
const RECENT_REQUESTS = 1000;

export class Supervisor implements AdminBackend {
  readonly paths: ServicePaths;
  readonly config: SupervisorConfig;
  readonly observer: ServiceObserver;
  readonly #log: Logger;
  readonly #workers = new Map<string, WorkerEntry>();
  /** The worker files found at start: CACHE_RAM=auto shares one budget among them. */
  #workerFiles = 1;
  readonly #transports: Transport[];
  readonly #startedAt = Date.now();
  readonly #onShutdownRequest: (() => void) | undefined;
  readonly #events = new RecentLog<ServiceEvent>(RECENT_EVENTS);
  readonly #requests = new RecentLog<RequestEnd>(RECENT_REQUESTS);
  readonly #sinks: Observability;
  /** Model downloads, one per file: workers that share a MODEL_PATH share its download. */
  readonly #downloads = new ModelDownloads();
  /** Each worker's memory, for the others' fit-before-load checks. */
  readonly #memory = new MemoryLedger();
  #gateway: Server | undefined;
  #grammars: GrammarLibraryApi | null = null;
  #grammarService: Promise<GrammarService | null> | undefined;
  #closing: Promise<void> | undefined;

  private constructor(paths: ServicePaths, config: SupervisorConfig, log: Logger, options: SupervisorOptions) {
    this.paths = paths;
    this.config = config;
    this.#log = log;
    this.#onShutdownRequest = options.onShutdownRequest;
    this.observer = options.observer ?? new ServiceObserver({ log });
    this.observer.onEvent((event) => this.#events.push(event));
    this.observer.onRequest((end) => this.#requests.push(end));
    this.#transports = options.transports ? options.transports(log) : [new HttpTransport({ log }), new NatsTransport({ log })];
    this.#sinks = new Observability({
      config,
      observer: this.observer,
      log,
      workers: () => [...this.#workers.values()].map(({ worker }) => worker.snapshot()),
    });
  }

  /** Reads the configuration, binds every port and starts the chosen workers. Throws on a bad supervisor.env. */
  static async start(options: SupervisorOptions): Promise<Supervisor> {
    const config = loadSupervisorConfig(options.paths);
    const log = options.log ?? createLogger({ component: 'supervisor', pid: process.pid }, { level: config.logLevel });
    const supervisor = new Supervisor(options.paths, config, log, options);
    await supervisor.#open(options.start);
    return supervisor;
  }

  get gatewayAddress(): string {
    const address = this.#gateway?.address() as AddressInfo | null | undefined;
    return address ? formatAddress({ host: address.address, port: address.port }) : formatAddress(this.config.gatewayAddr);
  }

  worker(name: string): ModelWorker {
    return this.#entry(name).worker;
  }

  status(): SupervisorStatus {
    return {
      pid: process.pid,
      uptime_s: Math.round((Date.now() - this.#startedAt) / 1000),
      gateway: this.gatewayAddress,
      envs_dir: this.paths.envsDir,
      workers: [...this.#workers.values()].map(({ worker }) => {
        const info = worker.info();
        return { name: info.name, state: info.state, port: info.port };
      }),
    };
  }

  listWorkers(): WorkerInfo[] {
    return [...this.#workers.values()].map(({ worker }) => worker.info());
  }

  recentEvents(query: RecentQuery): Array<{ seq: number; event: ServiceEvent }> {
    return this.#events
      .since(query.since, (e) => query.worker === null || e.worker === query.worker)
      .map(({ seq, item }) => ({ seq, event: item }));
  }

  recentRequests(query: RecentQuery): Array<{ seq: number; request: RequestEnd }> {
    return this.#requests
      .since(query.since, (r) => query.worker === null || r.worker === query.worker)
      .map(({ seq, item }) => ({ seq, request: item }));
  }

  startWorker(name: string): Promise<WorkerInfo> {
    return this.#serialize(name, 'start', async (entry) => {
      if (!entry.worker.running && (await this.#reload(entry))) entry.worker.start();
    });
  }

  stopWorker(name: string): Promise<WorkerInfo> {
    return this.#serialize(name, 'stop', (entry) => entry.worker.stop(this.config.shutdownGraceMs));
  }

  restartWorker(name: string): Promise<WorkerInfo> {
    return this.#serialize(name, 'restart', async (entry) => {
      await entry.worker.stop(this.config.shutdownGraceMs);
      if (await this.#reload(entry)) entry.worker.start();
    });
  }

  metrics() {
    return this.#sinks.serviceMetrics();
  }

  grammars(): GrammarLibraryApi | null {
    return this.#grammars;
  }

  /** Every worker's request path, for the gateway's OpenAI and Ollama routes (routed by MODEL_NAME). */
  models(): RequestPath[] {
    return [...this.#workers.values()].map((entry) => entry.requests);
  }

  /** What transports hold: a stable view of the library, which opens after the ports are bound. */
  readonly #grammarsApi: GrammarLibraryApi = {
    resolve: (name) => this.#library().resolve(name),
    list: (query) => this.#library().list(query),
    get: (name) => this.#library().get(name),
    create: async (body) => this.#library().create(body),
    update: async (name, body) => this.#library().update(name, body),
    delete: async (name) => this.#library().delete(name),
  };

  #library(): GrammarLibraryApi {
    if (!this.#grammars) throw new LmError('STORE_UNAVAILABLE', 'the grammar library is not open yet');
    return this.#grammars;
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
    for (const { worker } of this.#workers.values()) worker.kill();
  }

  #entry(name: string): WorkerEntry {
    const entry = this.#workers.get(name);
    if (!entry) throw new LmError('NOT_FOUND', `no worker named "${name}" (looked for worker.${name}.env in ${this.paths.envsDir})`);
    return entry;
  }

  /**
   * Admin actions on one worker never interleave: the same action asked again while it runs
   * joins it; a different one gets CONFLICT (409), and the worker ends in the state of the
   * action that ran.
   */
  #serialize(name: string, kind: AdminAction, run: (entry: WorkerEntry) => Promise<void>): Promise<WorkerInfo> {
    let entry: WorkerEntry;
    try {
      entry = this.#entry(name);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#closing) return Promise.reject(new LmError('CONFLICT', 'the supervisor is shutting down'));
    const current = entry.action;
    if (current) {
      if (current.kind === kind) return current.done;
      return Promise.reject(new LmError('CONFLICT', `worker ${name} is busy: a ${current.kind} is in progress; try again when it is done`));
    }
    const done = (async () => {
      try {
        await run(entry);
      } finally {
        entry.action = undefined;
      }
      return entry.worker.info();
    })();
    entry.action = { kind, done };
    return done;
  }

  async #open(start: 'all' | string[]): Promise<void> {
    const files = workerFiles(this.paths.envsDir);
    this.#workerFiles = Math.max(1, files.length);
    if (start !== 'all') {
      for (const name of start) {
        if (!files.some((f) => f.name === name)) {
          throw new LmError('NOT_FOUND', `no worker named "${name}" (no worker.${name}.env in ${this.paths.envsDir})`);
        }
      }
    }
    const { restartBackoffMs, restartBackoffMaxMs, shutdownGraceMs, logLevel } = this.config;
    for (const { name, file } of files) {
      const worker = new ModelWorker({
        config: this.#loadWorkerConfig(name, file),
        log: this.#log,
        observer: this.observer,
        timings: { restartBackoffMs, restartBackoffMaxMs, shutdownGraceMs },
        logLevel,
        downloads: this.#downloads,
        memory: this.#memory,
        sharedCpus: () => this.#sharedCpus(),
      });
      const requests = new RequestPath({
        backend: worker,
        observer: this.observer,
        log: this.#log.child({ worker: name }),
        grammars: { resolve: (grammar) => this.#grammarsApi.resolve(grammar) },
        limits: () => {
          const c = worker.config;
          return c
            ? { timeoutMs: c.requestTimeoutMs, maxTokens: c.maxTokens, maxStopStrings: c.maxStopStrings, maxStopLength: c.maxStopLength, maxMessages: c.maxMessages, maxGrammarBytes: c.maxGrammarBytes }
            : { timeoutMs: 0, maxTokens: 0 };
        },
      });
      this.#workers.set(name, { worker, requests, action: undefined });
      this.#sinks.attach(name, worker.config);
    }
    this.observer.event('startup', null, 'supervisor starting', {
      pid: process.pid,
      envsDir: this.paths.envsDir,
      dataDir: this.paths.dataDir,
      workers: files.map((f) => f.name),
    });
    this.#warnSharedPrefixes(files.map((f) => f.name));
    this.#grammarService = this.#openGrammars();
    process.once('exit', () => this.killAll());
    await this.#openGateway();
    const bound = new Set<ModelWorker>();
    for (const entry of this.#workers.values()) {
      this.#reportConfig(entry.worker);
      if (await this.#bind(entry)) bound.add(entry.worker);
    }
    for (const worker of bound) {
      if (start === 'all' || start.includes(worker.name)) worker.start();
    }
    if (files.length === 0) this.#log.warn('no workers configured', { envsDir: this.paths.envsDir });
  }

  /** Opens the library in the background: the ports and the workers do not wait for it. */
  async #openGrammars(): Promise<GrammarService | null> {
    const models = [...this.#workers.values()].flatMap(({ worker }) => (worker.config ? [worker.config.modelPath] : []));
    const modelPath = checkerModelPath(this.paths.root, this.paths.dataDir, models);
    try {
      const service = await GrammarService.open({ path: this.config.grammarsDb, modelPath, log: this.#log.child({ component: 'grammars' }) });
      this.#grammars = service.api();
      this.#log.info('grammar library open', { path: this.config.grammarsDb, grammars: service.library.list({ limit: 1 }).total, checkerModel: modelPath });
      return service;
    } catch (err) {
      const reason = toLmError(err).message;
      this.#log.error('grammar library unavailable', { path: this.config.grammarsDb, reason });
      this.observer.event('internal.error', null, `the grammar library cannot be opened: ${reason}`, { path: this.config.grammarsDb }, 'error');
      return null;
    }
  }

  /** Names like qwen3-4b and qwen3.4b read the same LMSERVE_QWEN3_4B_* variables: say so. */
  #warnSharedPrefixes(names: string[]): void {
    const byPrefix = new Map<string, string[]>();
    for (const name of names) byPrefix.set(workerEnvPrefix(name), [...(byPrefix.get(workerEnvPrefix(name)) ?? []), name]);
    for (const [prefix, shared] of byPrefix) {
      if (shared.length > 1) this.#log.warn('workers share environment overrides', { prefix: `${prefix}<KEY>`, workers: shared });
    }
  }

  async #openGateway(): Promise<void> {
    const app = createAdminApp(this, this.config.adminToken, { apiKey: this.config.apiKey, log: this.#log });
    this.#gateway = await listen(app, this.config.gatewayAddr);
    let tokenNote = {};
    if (this.config.adminTokenGenerated) tokenNote = { adminTokenFile: writeAdminToken(this.paths, this.config.adminToken) };
    this.#log.info('gateway listening', { address: this.gatewayAddress, ...tokenNote });
    for (const key of this.config.unknownKeys) this.#log.warn('unknown key', { key, file: this.config.file });
    if (this.config.environmentOverrides.length > 0) this.#log.info('configuration from the environment', { variables: this.config.environmentOverrides });
  }

  /**
   * Whether the configured models together ask for more CPU threads than the machine has cores
   * (MODEL_THREADS each, every core when 0, times REPLICAS): their hosts then wait at OpenMP
   * barriers in a way that shares cores (hostEnvironment).
   */
  #sharedCpus(): boolean {
    const cores = availableParallelism();
    let threads = 0;
    for (const { worker } of this.#workers.values()) {
      const config = worker.config;
      if (config) threads += (config.threads > 0 ? config.threads : cores) * config.replicas;
    }
    return threads > cores;
  }

  /** A worker's file, its LMSERVE_<WORKER>_<KEY> variables, and the supervisor's defaults (NATS_URL). */
  #loadWorkerConfig(name: string, file: string): WorkerConfig | WorkerConfigError {
    return loadWorkerConfig(name, file, this.paths, {
      natsUrl: this.config.natsUrl,
      nats: this.config.nats,
      logBodies: this.config.logBodies ? 'on' : 'off',
      workers: this.#workerFiles,
    });
  }

  #reportConfig(worker: ModelWorker): void {
    const config = worker.config;
    if (!config) {
      const reason = worker.info().reason;
      this.#log.error('invalid worker configuration', { worker: worker.name, reason });
      this.observer.event('config.invalid', worker.name, reason ?? 'invalid configuration', { file: worker.configFile }, 'error');
      return;
    }
    for (const key of config.unknownKeys) this.#log.warn('unknown key', { worker: worker.name, key, file: config.file });
    this.observer.event('config.loaded', worker.name, `configuration read from ${config.file}`, {
      file: config.file,
      model: config.modelName,
      modelPath: config.modelPath,
      concurrency: config.concurrency,
      replicas: config.replicas,
      contextSize: config.contextSize,
      maxQueue: config.maxQueue,
      unknownKeys: config.unknownKeys,
    });
  }

  /** Re-reads the worker's env file; true when the worker is configured and its transports are bound. */
  async #reload(entry: WorkerEntry): Promise<boolean> {
    const { worker } = entry;
    worker.setConfig(this.#loadWorkerConfig(worker.name, worker.configFile));
    this.#sinks.attach(worker.name, worker.config);
    this.#reportConfig(worker);
    return this.#bind(entry);
  }

  /** Binds (or re-binds, when a setting changed) every transport to the worker; false when it cannot serve. */
  async #bind(entry: WorkerEntry): Promise<boolean> {
    const { worker, requests } = entry;
    const config = worker.config;
    if (!config) return false;
    const endpoints: TransportEndpoint[] = [];
    for (const transport of this.#transports) {
      try {
        const endpoint = await transport.bind({
          name: worker.name,
          backend: worker,
          requests,
          settings: config,
          records: this.#sinks.records(worker.name),
          metrics: this.#sinks.workerMetrics(worker.name),
          grammars: this.#grammarsApi,
          event: (code, msg, data, level) => this.observer.event(code, worker.name, msg, data ?? {}, level ?? 'info'),
          setStatus: (name, status) => worker.setTransportStatus(name, status),
          transportStatus: () => worker.transportStatus(),
        });
        if (endpoint) endpoints.push(endpoint);
      } catch (err) {
        const reason = toLmError(err).message;
        worker.markFailed(reason);
        this.#log.error('transport failed', { worker: worker.name, transport: transport.name, reason });
        this.observer.event('port.failed', worker.name, reason, { transport: transport.name }, 'error');
        worker.setEndpoints(endpoints);
        return false;
      }
    }
    worker.setEndpoints(endpoints);
    return true;
  }

  async #close(): Promise<void> {
    const grace = this.config.shutdownGraceMs;
    this.#log.info('shutting down', { graceMs: grace });
    this.observer.event('shutdown', null, 'supervisor shutting down', { graceMs: grace });
    // Stop accepting at once; exchanges in flight finish as their requests drain.
    const closed: Array<Promise<void>> = this.#transports.map((t) => t.close().catch(() => undefined));
    if (this.#gateway) closed.push(closeServer(this.#gateway));
    await Promise.all([...this.#workers.values()].map(({ worker }) => worker.stop(grace)));
    const force = setTimeout(() => {
      for (const t of this.#transports) t.terminate();
      this.#gateway?.closeAllConnections();
    }, 1000);
    await Promise.all(closed);
    clearTimeout(force);
    await this.#sinks.close();
    await (await this.#grammarService)?.close().catch(() => undefined);
    this.#log.info('shut down');
  }
}
