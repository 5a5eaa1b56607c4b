/**
 * One configured model as the supervisor sees it: a state machine over its host process
 * (starting -> ready -> stopping -> stopped; crash -> restarting with exponential backoff;
 * load failure -> failed), and the ModelBackend its HTTP port serves through. Requests in
 * flight when the host dies end with MODEL_CRASHED.
 */
import { existsSync } from 'node:fs';
import {
  LmError,
  type GenerationEvent,
  type HostStats,
  type HostToSupervisor,
  type Logger,
  type WorkerInfo,
  type WorkerState,
} from '@lmserve/protocol';
import type { CompletionRequest, CompletionResult, ModelBackend, Readiness } from '@lmserve/http';
import { HostProcess, type HostExit, type HostProcessOptions } from './host-process.js';
import { hostSpec, isConfigError, type WorkerConfig, type WorkerConfigError } from './worker-config.js';

/** After this long ready, a crash no longer counts toward the backoff streak. */
const STABLE_MS = 60_000;
/** Load crashes in a row after which the worker is reported failed instead of retried. */
const MAX_LOAD_CRASHES = 3;
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
  timings: WorkerTimings;
  /** Factory of host processes (tests of the layer above may pass a fake). */
  createHost?: (options: HostProcessOptions) => HostProcess;
}

interface PendingRequest {
  onTokens: (text: string, ids: number[]) => void;
  resolve: (result: CompletionResult) => void;
  reject: (error: LmError) => void;
  cleanup: () => void;
}

export class ModelWorker implements ModelBackend {
  readonly name: string;
  readonly #log: Logger;
  readonly #timings: WorkerTimings;
  readonly #createHost: (options: HostProcessOptions) => HostProcess;
  readonly #pending = new Map<string, PendingRequest>();
  readonly #counters = { done: 0, cancelled: 0, failed: 0 };
  #config: WorkerConfig | WorkerConfigError;
  #state: WorkerState = 'stopped';
  #reason: string | null = null;
  #host: HostProcess | undefined;
  #stats: HostStats | undefined;
  #fatal: string | undefined;
  #readySince: number | undefined;
  #restarts = 0;
  #crashStreak = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartAt = 0;
  #stopping: Promise<void> | undefined;
  #endpoint: { address: string; port: number } | null = null;

  constructor(options: ModelWorkerOptions) {
    this.name = options.config.name;
    this.#log = options.log.child({ worker: this.name });
    this.#timings = options.timings;
    this.#createHost = options.createHost ?? ((o) => new HostProcess(o));
    this.#config = options.config;
    this.#applyConfigState();
  }

  get state(): WorkerState {
    return this.#state;
  }

  get config(): WorkerConfig | null {
    return isConfigError(this.#config) ? null : this.#config;
  }

  get model(): string {
    return this.config?.modelName ?? this.name;
  }

  get apiKey(): string | null {
    return this.config?.apiKey ?? null;
  }

  get running(): boolean {
    return this.#host !== undefined || this.#restartTimer !== undefined;
  }

  /** Replaces the configuration; only while the worker runs no host. */
  setConfig(config: WorkerConfig | WorkerConfigError): void {
    if (this.running) throw new Error(`worker ${this.name} is running`);
    this.#config = config;
    this.#applyConfigState();
  }

  /** The HTTP address its port is bound to (set by the supervisor, which holds the socket). */
  setEndpoint(endpoint: { address: string; port: number } | null): void {
    this.#endpoint = endpoint;
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
    return { ready, state: this.#state, reason: this.#reason, retryAfterS };
  }

  info(): WorkerInfo {
    const config = this.config;
    const total = config ? config.concurrency * config.replicas : 0;
    return {
      name: this.name,
      model: this.model,
      state: this.#state,
      reason: this.#reason,
      config_file: this.#config.file,
      pid: this.#host?.pid ?? null,
      address: this.#endpoint?.address ?? null,
      port: this.#endpoint?.port ?? null,
      slots: { busy: this.#stats?.slotsBusy ?? 0, total: this.#stats?.slots ?? total },
      queue: this.#stats?.queued ?? 0,
      in_flight: this.#pending.size,
      uptime_s: this.#readySince === undefined ? null : Math.round((Date.now() - this.#readySince) / 1000),
      restarts: this.#restarts,
      requests: { ...this.#counters },
    };
  }

  /** Starts a host unless one runs already; returns at once (watch the state or /readyz). */
  start(): void {
    if (this.#host || this.#state === 'invalid-config') return;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    this.#crashStreak = 0;
    this.#spawn();
  }

  /** Drains the host (in-flight requests get up to graceMs, then are cancelled) and stops it. */
  stop(graceMs: number): Promise<void> {
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const host = this.#host;
    if (!host) {
      if (this.#state !== 'invalid-config') {
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

  async complete(
    request: CompletionRequest,
    onTokens: (text: string, ids: number[]) => void,
    signal: AbortSignal,
  ): Promise<CompletionResult> {
    const host = this.#host;
    if (this.#state !== 'ready' || !host) {
      const code = this.#state === 'restarting' ? 'MODEL_CRASHED' : 'MODEL_NOT_READY';
      const why = this.#reason ? `: ${this.#reason.split('\n')[0]}` : '';
      throw new LmError(code, `model ${this.model} is not ready (${this.#state}${why})`);
    }
    if (signal.aborted) throw new LmError('CANCELLED', 'the request was cancelled');
    return new Promise<CompletionResult>((resolve, reject) => {
      const { id } = request;
      const onAbort = () => host.send({ type: 'cancel', id });
      signal.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, { onTokens, resolve, reject, cleanup: () => signal.removeEventListener('abort', onAbort) });
      host.send({ type: 'generate', request: { id, input: request.input, params: request.params, raw: request.raw } });
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
    if (!existsSync(config.modelPath)) {
      this.#state = 'model-missing';
      const from = config.modelUrl ? ` (download it from MODEL_URL=${config.modelUrl})` : '';
      this.#reason = `model missing: ${config.modelPath} not found${from}`;
      this.#log.warn('model missing', { path: config.modelPath, url: config.modelUrl });
      return;
    }
    this.#state = 'starting';
    this.#reason = null;
    this.#fatal = undefined;
    const host: HostProcess = this.#createHost({
      name: this.name,
      onMessage: (message) => this.#onHostMessage(host, message),
      onExit: (exit) => this.#onHostExit(host, exit),
    });
    this.#host = host;
    this.#log.info('host started', { hostPid: host.pid, model: config.modelPath });
    host.send({ type: 'init', spec: hostSpec(config, this.#timings.shutdownGraceMs) });
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
      case 'loading':
        if (this.#state === 'starting') this.#reason = `loading ${Math.round(message.progress * 100)}%`;
        break;
      case 'ready':
        if (this.#state !== 'starting') break;
        this.#state = 'ready';
        this.#reason = null;
        this.#readySince = Date.now();
        this.#log.info('ready', { hostPid: host.pid, ...message.model });
        break;
      case 'fatal':
        this.#fatal = `${message.code}: ${message.message}`;
        break;
    }
  }

  #dispatch(events: GenerationEvent[]): void {
    for (const event of events) {
      const pending = this.#pending.get(event.id);
      if (!pending) continue;
      if (event.type === 'tokens') {
        pending.onTokens(event.text, event.ids);
        continue;
      }
      this.#pending.delete(event.id);
      pending.cleanup();
      if (event.type === 'done') {
        if (event.finishReason === 'cancelled') this.#counters.cancelled++;
        else this.#counters.done++;
        pending.resolve({ text: event.text, finishReason: event.finishReason, usage: event.usage, timings: event.timings });
      } else {
        this.#counters.failed++;
        pending.reject(new LmError(event.code, event.message));
      }
    }
  }

  #failPending(error: LmError): void {
    for (const pending of this.#pending.values()) {
      pending.cleanup();
      this.#counters.failed++;
      pending.reject(error);
    }
    this.#pending.clear();
  }

  #onHostExit(host: HostProcess, exit: HostExit): void {
    if (host !== this.#host) return;
    this.#host = undefined;
    this.#stats = undefined;
    const readyFor = this.#readySince === undefined ? undefined : Date.now() - this.#readySince;
    this.#readySince = undefined;
    const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
    if (this.#state === 'stopping') {
      this.#failPending(new LmError('CANCELLED', `model ${this.model} was stopped`));
      this.#state = 'stopped';
      this.#reason = null;
      this.#log.info('stopped', { hostPid: host.pid });
      return;
    }
    this.#failPending(new LmError('MODEL_CRASHED', `the model host of ${this.model} ${how}`));
    const tail = host.stderrTail(10);
    // A load failure (bad file, unsupported model) will fail the same way again: report it.
    // A fatal error after the model served is a crash like any other: restart.
    if (this.#fatal !== undefined && readyFor === undefined) {
      this.#state = 'failed';
      this.#reason = `failed to load: ${this.#fatal}\n${tail}`.trim();
      this.#log.error('failed to load', { reason: this.#fatal, hostPid: host.pid });
      return;
    }
    if (readyFor !== undefined && readyFor > STABLE_MS) this.#crashStreak = 0;
    this.#crashStreak++;
    if (readyFor === undefined && this.#crashStreak >= MAX_LOAD_CRASHES) {
      this.#state = 'failed';
      this.#reason = `the model host ${how} while loading, ${this.#crashStreak} times in a row\n${tail}`.trim();
      this.#log.error('failed while loading', { hostPid: host.pid, code: exit.code, signal: exit.signal });
      return;
    }
    const { restartBackoffMs, restartBackoffMaxMs } = this.#timings;
    const delay = Math.min(restartBackoffMs * 2 ** (this.#crashStreak - 1), restartBackoffMaxMs);
    this.#restarts++;
    this.#state = 'restarting';
    this.#reason = `the model host ${how}; restarting in ${delay} ms\n${tail}`.trim();
    this.#restartAt = Date.now() + delay;
    this.#restartTimer = setTimeout(() => this.#spawn(), delay);
    this.#log.error('host crashed', { hostPid: host.pid, code: exit.code, signal: exit.signal, restartInMs: delay });
  }
}
