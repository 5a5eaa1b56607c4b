/**
 * One configured model as the supervisor sees it: a state machine over its host process
 * (starting -> ready -> stopping -> stopped; crash -> restarting with exponential backoff;
 * load failure -> failed), and the ModelBackend its transports serve through. Requests in
 * flight when the host dies end with MODEL_CRASHED. Every lifecycle step is published to the
 * observer.
 */
import { existsSync } from 'node:fs';
import type { DirectStream, ModelBackend, Readiness, ServiceObserver, TokenSink, TransportEndpoint, TransportStatus } from '@lmserve/core';
import {
  LmError,
  envInteger,
  toLmError,
  type GenerateRequest,
  type GenerationEvent,
  type GenerationResult,
  type HostStats,
  type LoadReport,
  type HostToSupervisor,
  type LogLevel,
  type Logger,
  type WorkerInfo,
  type WorkerState,
} from '@lmserve/protocol';
import type { WorkerSnapshot } from '@lmserve/metrics';
import { HostProcess, type HostExit, type HostProcessOptions } from './host-process.js';
import { decideAfterExit } from './restart-policy.js';
import { buildHostSpec } from './host-spec.js';
import { isConfigError, type WorkerConfig, type WorkerConfigError } from './worker-config.js';
import { ModelDownloads } from './download/model-downloads.js';
import { WorkerDownload } from './download/worker-download.js';
import { MemoryLedger, availableMemory, estimateNeed, judgeFit, type FitVerdict, type MemoryClaim, type MemoryNeed } from './fit/memory-fit.js';
import { measureNeed } from './fit/measure.js';

/** Extra time a host gets after its drain grace before it is killed. */
const HARD_KILL_MARGIN_MS = 5_000;

export interface WorkerTimings {
  restartBackoffMs: number;
  restartBackoffMaxMs: number;
  /** Drain grace of a host that gets SIGTERM directly (not through stop()). */
  shutdownGraceMs: number;
}

export interface ModelWorkerOptions {
  config: WorkerConfig | WorkerConfigError;
  log: Logger;
  observer: ServiceObserver;
  timings: WorkerTimings;
  logLevel: LogLevel;
  /** Factory of host processes (tests of the layer above may pass a fake). */
  createHost?: (options: HostProcessOptions) => HostProcess;
  /** The supervisor's downloads (workers sharing a MODEL_PATH share one); default: the worker's own. */
  downloads?: ModelDownloads;
  /** Whether the service's models together ask for more CPU threads than the machine has cores. */
  sharedCpus?: () => boolean;
  /** The supervisor's memory ledger: each worker's fit check counts the others' models. */
  memory?: MemoryLedger;
  /** Where LMSERVE_FIT_CHECK and LMSERVE_MEMORY_AVAILABLE are read (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

interface PendingRequest {
  /** Null: the caller does not stream (no tokens cross the hops; the text comes with `done`). */
  onTokens: TokenSink | null;
  /** A streamed request's text so far (its result's text: `done` does not repeat it). */
  texts: string[];
  /** A stream the host writes to the client itself: where its `tail` goes. */
  direct: DirectStream | undefined;
  resolve: (result: GenerationResult) => void;
  reject: (error: LmError) => void;
  cleanup: () => void;
}

/** LMSERVE_DIRECT_QUEUE's default: see directQueueLimit(). */
export const DIRECT_QUEUE_LIMIT = 8;

/**
 * How deep the host's channel may be (a connection awaiting its acknowledgement, and the
 * messages queued behind it) for a new stream still to be handed over directly: an integer 0 … 64
 * from LMSERVE_DIRECT_QUEUE, else DIRECT_QUEUE_LIMIT. Node passes one connection at a time, so the
 * n-th stream of a burst waits n round trips to the host (about 1-3 ms each on the 2-core VM)
 * before its request starts; past the limit it is relayed instead, which costs this process a
 * wake-up per relayed message for the whole stream. With 0 (only an idle channel) 26 of 48
 * streams of 8 closed-loop clients were relayed (bench model, 128 tokens): 14.5 ms of supervisor
 * CPU per request against 3.4 ms with 8, where all were direct, at the same TTFT.
 */
export function directQueueLimit(env: NodeJS.ProcessEnv = process.env): number {
  return envInteger(env, 'LMSERVE_DIRECT_QUEUE', { min: 0, max: 64, fallback: DIRECT_QUEUE_LIMIT });
}

export class ModelWorker implements ModelBackend {
  readonly name: string;
  readonly #log: Logger;
  readonly #observer: ServiceObserver;
  readonly #timings: WorkerTimings;
  readonly #logLevel: LogLevel;
  readonly #createHost: (options: HostProcessOptions) => HostProcess;
  readonly #downloads: ModelDownloads;
  readonly #memory: MemoryLedger;
  readonly #sharedCpus: () => boolean;
  readonly #env: NodeJS.ProcessEnv;
  readonly #directStreams: boolean;
  /** How many messages may wait on the host's channel for a stream still to be handed over (directQueueLimit()). */
  readonly #directQueue: number;
  readonly #pending = new Map<string, PendingRequest>();
  /** How the current host loaded its model (its `ready` message). */
  #load: LoadReport | undefined;
  readonly #counters = { done: 0, cancelled: 0, failed: 0, direct: 0 };
  #config: WorkerConfig | WorkerConfigError;
  #state: WorkerState = 'stopped';
  #reason: string | null = null;
  #host: HostProcess | undefined;
  #stats: HostStats | undefined;
  #fatal: string | undefined;
  #readySince: number | undefined;
  #loadingStep = -1;
  #restarts = 0;
  #crashStreak = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartAt = 0;
  #stopping: Promise<void> | undefined;
  #endpoints: TransportEndpoint[] = [];
  #transportStatus = new Map<string, TransportStatus>();
  /** The download of the model file while one runs; the last one after it failed. */
  #download: WorkerDownload | undefined;
  #downloading = false;
  /** A fit check runs (before the host is spawned); #spawnSeq tells a stale one from the current. */
  #checking = false;
  #spawnSeq = 0;
  /** The last fit check's estimate and verdict. */
  #need: MemoryNeed | undefined;
  #fit: FitVerdict | undefined;
  /** What the running host was started with: it holds replicas × (slots + maxQueue) requests at most. */
  #capacity = { slots: 1, maxQueue: 0, replicas: 1 };
  /** Requests past the capacity check, not yet in #pending. */
  #admitting = 0;

  constructor(options: ModelWorkerOptions) {
    this.name = options.config.name;
    this.#log = options.log.child({ worker: this.name });
    this.#observer = options.observer;
    this.#timings = options.timings;
    this.#logLevel = options.logLevel;
    this.#createHost = options.createHost ?? ((o) => new HostProcess(o));
    this.#downloads = options.downloads ?? new ModelDownloads();
    this.#memory = options.memory ?? new MemoryLedger();
    this.#sharedCpus = options.sharedCpus ?? (() => false);
    this.#env = options.env ?? process.env;
    // LMSERVE_DIRECT_STREAM=off: streamed HTTP tokens always go through this process.
    this.#directStreams = this.#env.LMSERVE_DIRECT_STREAM !== 'off';
    this.#directQueue = directQueueLimit(this.#env);
    this.#memory.register(this.name, () => this.#memoryClaim());
    this.#config = options.config;
    this.#applyConfigState();
  }

  get state(): WorkerState {
    return this.#state;
  }

  get config(): WorkerConfig | null {
    return isConfigError(this.#config) ? null : this.#config;
  }

  get configFile(): string {
    return this.#config.file;
  }

  get model(): string {
    return this.config?.modelName ?? this.name;
  }

  get apiKey(): string | null {
    return this.config?.apiKey ?? null;
  }

  get hostPid(): number | null {
    return this.#host?.pid ?? null;
  }

  get running(): boolean {
    return this.#host !== undefined || this.#restartTimer !== undefined || this.#downloading || this.#checking;
  }

  /** Replaces the configuration; only while the worker runs no host. */
  setConfig(config: WorkerConfig | WorkerConfigError): void {
    if (this.running) throw new LmError('CONFLICT', `worker ${this.name} is running`);
    this.#config = config;
    this.#applyConfigState();
  }

  /** Where the transports serve this worker (set by the supervisor, which binds them). */
  /** A transport's state for this worker (NATS connected or not...); null removes it. */
  setTransportStatus(transport: string, status: TransportStatus | null): void {
    if (status === null) this.#transportStatus.delete(transport);
    else this.#transportStatus.set(transport, status);
  }

  /** Every transport's reported state, by transport name. */
  transportStatus(): Record<string, TransportStatus> {
    return Object.fromEntries(this.#transportStatus);
  }

  setEndpoints(endpoints: TransportEndpoint[]): void {
    this.#endpoints = endpoints;
  }

  /** Reports a failure found outside the host (e.g. its port could not be bound). */
  markFailed(reason: string): void {
    this.#state = 'failed';
    this.#reason = reason;
  }

  readiness(): Readiness {
    const ready = this.#state === 'ready';
    let retryAfterS = ready ? 0 : 5;
    if (this.#state === 'restarting') retryAfterS = Math.max(1, Math.ceil((this.#restartAt - Date.now()) / 1000) + 1);
    else if (this.#state === 'starting' || this.#state === 'stopping') retryAfterS = 2;
    else if (this.#state === 'downloading' && this.#download) retryAfterS = this.#download.retryAfterS();
    const reason = this.#state === 'downloading' && this.#download ? this.#download.describe() : this.#reason;
    const download = this.#download?.info();
    return download ? { ready, state: this.#state, reason, retryAfterS, download } : { ready, state: this.#state, reason, retryAfterS };
  }

  /** What the metrics read at each scrape. */
  snapshot(): WorkerSnapshot {
    const config = this.config;
    return {
      name: this.name,
      model: this.model,
      state: this.#state,
      up: this.#state === 'ready',
      slotsBusy: this.#stats?.slotsBusy ?? 0,
      slotsTotal: this.#stats?.slots ?? (config ? config.concurrency * config.replicas : 0),
      queued: this.#stats?.queued ?? 0,
      inFlight: this.#pending.size,
      kvUsedRatio: this.#stats?.kvUsedRatio ?? 0,
      promptCacheBytes: this.#host ? (this.#stats?.promptCache?.bytes ?? null) : null,
      restarts: this.#restarts,
      host: this.#host ? (this.#stats?.process ?? null) : null,
      transports: this.transportStatus(),
      download: this.#downloading && this.#download ? downloadSnapshot(this.#download) : null,
    };
  }

  info(): WorkerInfo {
    const config = this.config;
    const total = config ? config.concurrency * config.replicas : 0;
    const http = this.#endpoints.find((e) => e.transport === 'http');
    return {
      name: this.name,
      model: this.model,
      state: this.#state,
      reason: this.#reason,
      config_file: this.#config.file,
      pid: this.#host?.pid ?? null,
      address: http?.address ?? null,
      port: http?.port ?? null,
      slots: { busy: this.#stats?.slotsBusy ?? 0, total: this.#stats?.slots ?? total },
      queue: this.#stats?.queued ?? 0,
      in_flight: this.#pending.size,
      uptime_s: this.#readySince === undefined ? null : Math.round((Date.now() - this.#readySince) / 1000),
      restarts: this.#restarts,
      requests: { ...this.#counters },
      transports: this.transportStatus(),
      download: this.#download?.info() ?? null,
      prompt_cache: this.#host && this.#stats?.promptCache
        ? {
            budget_mib: this.config?.cacheRamMiB ?? 0,
            bytes: this.#stats.promptCache.bytes,
            entries: this.#stats.promptCache.entries,
            restores: this.#stats.promptCache.restores,
            tokens_restored: this.#stats.promptCache.tokensRestored,
          }
        : null,
      memory: this.#fit ? fitInfo(this.#fit) : null,
      load: this.#load && this.#host
        ? {
            backend: this.#load.backend,
            devices: this.#load.devices,
            gpu_layers: this.#load.gpuLayers,
            layers: this.#load.layers,
            seconds: this.#load.seconds,
            ...(this.#load.memory
              ? {
                  memory: this.#load.memory.map((d) => ({
                    name: d.name,
                    description: d.description,
                    backend: d.backend,
                    model_bytes: d.modelBytes,
                    context_bytes: d.contextBytes,
                    compute_bytes: d.computeBytes,
                  })),
                }
              : {}),
          }
        : null,
    };
  }

  /** Starts a host unless one runs already; returns at once (watch the state or /readyz). */
  start(): void {
    if (this.#host || this.#downloading || this.#checking || this.#state === 'invalid-config') return;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    this.#crashStreak = 0;
    this.#spawn();
  }

  /** Drains the host (in-flight requests get up to graceMs, then are cancelled) and stops it. */
  stop(graceMs: number): Promise<void> {
    const wasRestarting = this.#restartTimer !== undefined;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const host = this.#host;
    this.#checking = false;
    if (this.#downloading) {
      this.#downloading = false;
      this.#download?.detach();
      this.#download = undefined;
      this.#observer.event('stop', this.name, 'stopped during its model download (the partial file is kept for a resume)');
    }
    if (!host) {
      if (this.#state !== 'invalid-config') {
        if (wasRestarting) this.#observer.event('stop', this.name, 'stopped during its restart backoff');
        this.#state = 'stopped';
        this.#reason = null;
      }
      return Promise.resolve();
    }
    if (this.#stopping) return this.#stopping;
    this.#state = 'stopping';
    this.#log.info('stopping', { graceMs, inFlight: this.#pending.size });
    this.#stopping = (async () => {
      if (!host.send({ type: 'shutdown', graceMs })) host.kill('SIGKILL');
      const timer = setTimeout(() => host.kill('SIGKILL'), graceMs + HARD_KILL_MARGIN_MS);
      await host.exited;
      clearTimeout(timer);
    })().finally(() => (this.#stopping = undefined));
    return this.#stopping;
  }

  /** Kills the host at once (used when the supervisor itself must exit now). */
  kill(): void {
    this.#host?.kill('SIGKILL');
  }

  async complete(request: GenerateRequest, onTokens: TokenSink | null, signal: AbortSignal, direct?: DirectStream): Promise<GenerationResult> {
    const host = this.#host;
    if (this.#state !== 'ready' || !host) {
      const code = this.#state === 'restarting' ? 'MODEL_CRASHED' : 'MODEL_NOT_READY';
      const why = this.#reason ? `: ${this.#reason.split('\n')[0]}` : '';
      throw new LmError(code, `model ${this.model} is not ready (${this.#state}${why})`);
    }
    if (signal.aborted) throw new LmError('CANCELLED', 'the request was cancelled');
    if (this.#pending.has(request.id)) throw new LmError('INTERNAL', `request id ${request.id} is already in flight`);
    // A stream the host may write itself: its headers go out first (the host writes after them).
    // Connections go to the host one at a time (each waits for the previous one's
    // acknowledgement), so a connection's first stream is handed over only while few wait on the
    // channel; its later ones (keep-alive) go at once, since the host keeps the connection.
    const wantsDirect =
      onTokens !== null && direct !== undefined && this.#directStreams && (host.holds(direct.socket) || host.handleQueueDepth <= this.#directQueue);
    // Such a stream's headers go out before the engine sees it: with every slot busy and every
    // queue full it is refused here, so it gets a 429 as any other request does (not a 200 whose
    // first event is the error). While one is on its way (#admitting), its place is held against
    // every request. Other requests are otherwise left to the engine's own check, which sees a
    // finished request sooner than this process does.
    const { slots, maxQueue, replicas } = this.#capacity;
    const full = this.#pending.size + this.#admitting >= replicas * (slots + maxQueue);
    if (full && (wantsDirect || this.#admitting > 0)) {
      throw new LmError('QUEUE_FULL', `the queue is full (${replicas * maxQueue} waiting, ${replicas * slots} slots busy)`);
    }
    let handOver: DirectStream | undefined;
    if (wantsDirect) {
      this.#admitting++;
      try {
        if (await direct.begin().catch(() => false)) handOver = direct;
      } finally {
        this.#admitting--;
      }
    }
    if (signal.aborted) throw new LmError('CANCELLED', 'the request was cancelled');
    if (this.#host !== host || !host.alive) throw new LmError('MODEL_CRASHED', `the model host of ${this.model} is gone`);
    return new Promise<GenerationResult>((resolve, reject) => {
      const { id } = request;
      const onAbort = () => host.send({ type: 'cancel', id });
      signal.addEventListener('abort', onAbort, { once: true });
      if (handOver) this.#counters.direct++;
      const pending: PendingRequest = { onTokens, texts: [], direct: handOver, resolve, reject, cleanup: () => signal.removeEventListener('abort', onAbort) };
      this.#pending.set(id, pending);
      const gone = () => this.#settle(id, { error: new LmError('MODEL_CRASHED', `the model host of ${this.model} is gone`) });
      const message = { type: 'generate' as const, request: { ...request, stream: onTokens !== null, ...(handOver ? { direct: handOver.template } : {}) } };
      if (!(handOver ? host.sendDirect(message, handOver.socket, gone) : host.send(message, undefined, gone))) gone();
    });
  }

  #applyConfigState(): void {
    if (isConfigError(this.#config)) {
      this.#state = 'invalid-config';
      this.#reason = this.#config.error.message;
    } else if (this.#state === 'invalid-config') {
      this.#state = 'stopped';
      this.#reason = null;
    }
  }

  #spawn(): void {
    this.#restartTimer = undefined;
    const config = this.config;
    if (!config) return;
    if (!existsSync(config.modelPath) && config.modelUrl) {
      this.#startDownload(config);
      return;
    }
    if (!existsSync(config.modelPath)) {
      this.#state = 'model-missing';
      const from = config.modelUrl ? ` (download it from MODEL_URL=${config.modelUrl})` : '';
      this.#reason = `model missing: ${config.modelPath} not found${from}`;
      this.#log.warn('model missing', { path: config.modelPath, url: config.modelUrl });
      this.#observer.event('model.missing', this.name, this.#reason, { path: config.modelPath, url: config.modelUrl }, 'warn');
      return;
    }
    this.#state = 'starting';
    this.#reason = null;
    this.#download = undefined;
    if (this.#env.LMSERVE_FIT_CHECK === 'off') {
      this.#launch(config);
      return;
    }
    this.#reason = 'checking that the model fits in memory';
    this.#checking = true;
    const seq = ++this.#spawnSeq;
    void this.#checkFit(config).then((verdict) => {
      if (seq !== this.#spawnSeq || !this.#checking) return;
      this.#checking = false;
      if (verdict && !verdict.fits) this.#refuse(verdict);
      else this.#launch(config);
    });
  }

  /**
   * llama.cpp's sizing (else the header estimate) against the available memory less the other
   * workers' claims; null when neither can be made.
   */
  async #checkFit(config: WorkerConfig): Promise<FitVerdict | null> {
    const settings = {
      contextSize: config.contextSize,
      concurrency: config.concurrency,
      replicas: config.replicas,
      batchSize: config.batchSize,
      swaFull: config.swaFull,
      gpuLayers: config.gpuLayers,
    };
    const started = performance.now();
    try {
      try {
        this.#need = await measureNeed(config.modelPath, settings, this.#env);
      } catch (err) {
        this.#log.warn('llama.cpp could not size the model; using the header estimate', { reason: toLmError(err).message, ms: Math.round(performance.now() - started) });
        this.#need = await estimateNeed(config.modelPath, settings);
      }
      const verdict = judgeFit(this.name, this.#need, await availableMemory(this.#env), this.#memory.others(this.name));
      this.#fit = verdict;
      this.#log.info('memory check', {
        ms: Math.round(performance.now() - started),
        fits: verdict.fits,
        source: verdict.need.source,
        neededBytes: verdict.need.totalBytes,
        freeBytes: verdict.freeBytes,
        devices: verdict.devices.map((d) => ({ name: d.name, neededBytes: d.needBytes, freeBytes: d.freeBytes - d.heldBytes, fits: d.fits })),
        ...(verdict.need.placement ? { gpuLayers: verdict.need.placement.gpuLayers, layers: verdict.need.placement.layers, fit: verdict.need.placement.fit } : {}),
      });
      return verdict;
    } catch (err) {
      // A header this reader cannot parse is for llama.cpp's loader to report.
      this.#need = undefined;
      this.#log.warn('memory check skipped', { reason: toLmError(err).message });
      return null;
    }
  }

  #refuse(verdict: FitVerdict): void {
    this.#state = 'failed';
    this.#reason = verdict.message;
    this.#log.error('model does not fit', { neededBytes: verdict.need.totalBytes, freeBytes: verdict.freeBytes });
    this.#observer.event('model.load_failed', this.name, verdict.message, { fit: fitInfo(verdict) }, 'error');
  }

  /** What this worker holds or is about to take, for the other workers' fit checks. */
  #memoryClaim(): MemoryClaim | null {
    const need = this.#need;
    if (!need) return null;
    // Loading: all of it is about to be taken, on the GPU devices too. Serving: the KV cache and
    // buffers are already out of MemAvailable and out of the devices' free memory; the weights
    // (mmap'd page cache) are not out of MemAvailable.
    if (this.#state === 'starting') {
      return { worker: this.name, state: this.#state, bytes: need.totalBytes, devices: Object.fromEntries(need.devices.map((d) => [d.name, d.needBytes])) };
    }
    if (this.#state === 'ready' || this.#state === 'restarting') return { worker: this.name, state: this.#state, bytes: need.weightsBytes };
    return null;
  }

  #launch(config: WorkerConfig): void {
    this.#fatal = undefined;
    this.#capacity = { slots: config.concurrency, maxQueue: config.maxQueue, replicas: config.replicas };
    this.#loadingStep = -1;
    let host: HostProcess;
    try {
      host = this.#createHost({
        name: this.name,
        onMessage: (message) => this.#onHostMessage(host, message),
        onExit: (exit) => this.#onHostExit(host, exit),
        relays: config.replicas,
        sharedCpus: this.#sharedCpus(),
      });
    } catch (err) {
      this.#spawnFailed(toLmError(err).message);
      return;
    }
    this.#host = host;
    this.#log.info('host started', { hostPid: host.pid, model: config.modelPath });
    this.#observer.event('host.spawned', this.name, `model host started (pid ${host.pid})`, { hostPid: host.pid, modelPath: config.modelPath });
    host.send({ type: 'init', spec: buildHostSpec(config, this.#timings.shutdownGraceMs, this.#logLevel, host.relayFds, this.#need?.placement, this.#env.LMSERVE_NATS_DIRECT !== 'off') });
  }

  /** Downloads MODEL_PATH from MODEL_URL (in a thread, shared with workers of the same file), then spawns. */
  #startDownload(config: WorkerConfig): void {
    this.#state = 'downloading';
    this.#reason = `downloading ${config.modelUrl}`;
    this.#downloading = true;
    let download: WorkerDownload | undefined = undefined;
    const current = () => this.#downloading && this.#download === download;
    download = new WorkerDownload({
      worker: this.name,
      config,
      downloads: this.#downloads,
      observer: this.#observer,
      log: this.#log,
      onDone: () => {
        if (!current()) return;
        this.#downloading = false;
        this.#download = undefined;
        this.#spawn();
      },
      onFailed: (reason) => {
        if (!current()) return;
        this.#downloading = false;
        this.#state = 'failed';
        this.#reason = reason;
      },
    });
    this.#download = download;
  }

  #spawnFailed(reason: string): void {
    this.#state = 'failed';
    this.#reason = `cannot start the model host: ${reason}`;
    this.#log.error('host spawn failed', { reason });
    this.#observer.event('host.spawn_failed', this.name, this.#reason, {}, 'error');
  }

  #onHostMessage(host: HostProcess, message: HostToSupervisor): void {
    if (host !== this.#host) return;
    switch (message.type) {
      case 'events':
        this.#dispatch(message.events);
        break;
      case 'stats':
        this.#stats = message.stats;
        break;
      case 'loading': {
        if (this.#state !== 'starting') break;
        this.#reason = `loading ${Math.round(message.progress * 100)}%`;
        // One event per tenth: the audit trail wants the shape of a load, not every percent.
        const step = Math.floor(message.progress * 10);
        if (step > this.#loadingStep) {
          this.#loadingStep = step;
          this.#observer.event('model.loading', this.name, `loading ${step * 10}%`, { progress: message.progress, hostPid: host.pid });
        }
        break;
      }
      case 'ready': {
        if (this.#state !== 'starting') break;
        const { model, load } = message;
        this.#load = load;
        this.#log.info('ready', { hostPid: host.pid, ...model, loadSeconds: load.seconds });
        this.#observer.event('model.loaded', this.name, `model loaded in ${load.seconds.toFixed(2)} s`, {
          loadSeconds: load.seconds,
          backend: load.backend,
          devices: load.devices,
          gpuLayers: load.gpuLayers,
          layers: load.layers,
          ...(load.memory ? { memory: load.memory } : {}),
          hostPid: host.pid,
          ...model,
        });
        this.#observer.event('services.init', this.name, 'serving on its transports', { endpoints: this.#endpoints });
        this.#state = 'ready';
        this.#reason = null;
        this.#readySince = Date.now();
        this.#observer.event('server.ready', this.name, `${this.model} is ready`, { hostPid: host.pid, endpoints: this.#endpoints });
        break;
      }
      case 'fatal':
        this.#fatal = `${message.code}: ${message.message}`;
        break;
    }
  }

  #dispatch(events: GenerationEvent[]): void {
    for (const event of events) {
      if (event.type === 'tokens') {
        const pending = this.#pending.get(event.id);
        if (!pending) continue;
        pending.texts.push(event.text);
        try {
          pending.onTokens?.(event.text, event.ids, event.logprobs);
        } catch (err) {
          this.#log.warn('token delivery failed', { reqId: event.id, error: toLmError(err).message });
        }
      } else if (event.type === 'done') {
        this.#writeTail(event.id, event.tail);
        if (event.published) this.#counters.direct++;
        const { finishReason, usage, timings, stopString } = event;
        const text = event.text ?? this.#pending.get(event.id)?.texts.join('') ?? '';
        const result: GenerationResult = { text, finishReason, usage, timings };
        if (stopString !== undefined) result.stopString = stopString;
        this.#settle(event.id, { result });
      } else {
        this.#writeTail(event.id, event.tail);
        const options = typeof event.field === 'string' ? { field: event.field } : {};
        this.#settle(event.id, { error: new LmError(event.code, String(event.message), options) });
      }
    }
  }

  /** A direct stream's chunks its connection had not taken when it ended: they go first. */
  #writeTail(id: string, tail: string | undefined): void {
    const socket = tail ? this.#pending.get(id)?.direct?.socket : undefined;
    if (socket && !socket.destroyed) socket.write(tail as string);
  }

  #settle(id: string, outcome: { result?: GenerationResult; error?: LmError }): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    pending.cleanup();
    if (outcome.result) {
      if (outcome.result.finishReason === 'cancelled') this.#counters.cancelled++;
      else this.#counters.done++;
      pending.resolve(outcome.result);
    } else {
      this.#counters.failed++;
      pending.reject(outcome.error ?? new LmError('INTERNAL', 'the request ended without a result'));
    }
  }

  #failPending(error: LmError): void {
    for (const id of [...this.#pending.keys()]) this.#settle(id, { error });
  }

  #onHostExit(host: HostProcess, exit: HostExit): void {
    if (host !== this.#host) return;
    this.#host = undefined;
    this.#stats = undefined;
    const readyFor = this.#readySince === undefined ? undefined : Date.now() - this.#readySince;
    this.#readySince = undefined;
    const how = exit.error ? `could not run (${exit.error})` : exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
    if (this.#state === 'stopping') {
      this.#failPending(new LmError('CANCELLED', `model ${this.model} was stopped`));
      this.#state = 'stopped';
      this.#reason = null;
      this.#log.info('stopped', { hostPid: host.pid });
      this.#observer.event('stop', this.name, `${this.model} stopped`, { hostPid: host.pid, code: exit.code, signal: exit.signal });
      return;
    }
    this.#failPending(new LmError('MODEL_CRASHED', `the model host of ${this.model} ${how}`));
    const tail = host.stderrTail(10);
    if (exit.error && host.pid === null) {
      this.#spawnFailed(exit.error);
      return;
    }
    const decision = decideAfterExit({
      fatal: this.#fatal !== undefined,
      readyForMs: readyFor,
      crashStreak: this.#crashStreak,
      backoffMs: this.#timings.restartBackoffMs,
      backoffMaxMs: this.#timings.restartBackoffMaxMs,
    });
    this.#crashStreak = decision.crashStreak;
    const crash = { hostPid: host.pid, code: exit.code, signal: exit.signal, stderrTail: tail, readyForMs: readyFor ?? null };
    if (decision.action === 'fail') {
      this.#state = 'failed';
      this.#reason =
        decision.reason === 'load-error'
          ? `failed to load: ${this.#fatal}\n${tail}`.trim()
          : `the model host ${how} while loading, ${decision.crashStreak} times in a row\n${tail}`.trim();
      this.#log.error('failed to load', { reason: this.#reason.split('\n')[0], hostPid: host.pid });
      if (decision.reason === 'load-crashes') this.#observer.event('crash', this.name, `the model host ${how} while loading`, crash, 'error');
      this.#observer.event('model.load_failed', this.name, this.#reason.split('\n')[0] as string, { ...crash, fatal: this.#fatal ?? null }, 'error');
      return;
    }
    const delay = decision.delayMs;
    this.#restarts++;
    this.#state = 'restarting';
    this.#reason = `the model host ${how}; restarting in ${delay} ms\n${tail}`.trim();
    this.#restartAt = Date.now() + delay;
    this.#log.error('host crashed', { hostPid: host.pid, code: exit.code, signal: exit.signal, restartInMs: delay });
    this.#observer.event('crash', this.name, `the model host ${how}`, { ...crash, restartInMs: delay }, 'error');
    this.#restartTimer = setTimeout(() => {
      this.#observer.event('restart', this.name, `restarting (attempt ${this.#crashStreak})`, { attempt: this.#crashStreak, restarts: this.#restarts }, 'warn');
      this.#spawn();
    }, delay);
  }
}

function downloadSnapshot(download: WorkerDownload): { bytes: number; totalBytes: number | null; bytesPerSecond: number } {
  const info = download.info();
  return { bytes: info.bytes, totalBytes: info.total_bytes, bytesPerSecond: info.bytes_per_second };
}

function fitInfo(verdict: FitVerdict): NonNullable<WorkerInfo['memory']> {
  return {
    fits: verdict.fits,
    needed_bytes: verdict.need.totalBytes,
    weights_bytes: verdict.need.weightsBytes,
    kv_cache_bytes: verdict.need.kvBytes,
    compute_bytes: verdict.need.computeBytes,
    available_bytes: verdict.available.bytes,
    available_source: verdict.available.source,
    free_bytes: verdict.freeBytes,
    held_by: verdict.others.map((o) => ({ worker: o.worker, state: o.state, bytes: o.bytes })),
    source: verdict.need.source,
    devices: verdict.devices.map((d) => ({
      name: d.name,
      description: d.description,
      backend: d.backend,
      fits: d.fits,
      needed_bytes: d.needBytes,
      weights_bytes: d.weightsBytes,
      kv_cache_bytes: d.kvBytes,
      compute_bytes: d.computeBytes,
      free_bytes: d.freeBytes,
      total_bytes: d.totalBytes,
      held_bytes: d.heldBytes,
    })),
    placement: verdict.need.placement
      ? {
          gpu_layers: verdict.need.placement.gpuLayers,
          layers: verdict.need.placement.layers,
          fit: verdict.need.placement.fit,
          tensor_split: verdict.need.placement.tensorSplit,
          cpu_tensors: verdict.need.placement.cpuTensors,
        }
      : null,
  };
}
