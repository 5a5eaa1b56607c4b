/**
 * One worker's side of a model download: joins the supervisor's download of its MODEL_PATH,
 * publishes `model.download.started|progress|completed|failed` for the worker, and keeps the
 * progress for /admin/workers, /readyz and the metrics. The worker only hears the end.
 */
import type { ServiceObserver } from '@lmserve/core';
import type { DownloadInfo, Logger } from '@lmserve/protocol';
import type { DownloadError, DownloadProgress, DownloadResult } from './model-download.js';
import type { DownloadTicket, ModelDownloads } from './model-downloads.js';
import type { WorkerConfig } from '../worker-config.js';

/** A progress event at least this often even when no tenth was crossed (unknown sizes, slow links). */
const PROGRESS_EVENT_EVERY_MS = 30_000;

export interface WorkerDownloadOptions {
  worker: string;
  config: WorkerConfig;
  downloads: ModelDownloads;
  observer: ServiceObserver;
  log: Logger;
  onDone: (result: DownloadResult) => void;
  onFailed: (reason: string) => void;
}

export class WorkerDownload {
  readonly #options: WorkerDownloadOptions;
  readonly #ticket: DownloadTicket;
  #info: DownloadInfo;
  #tenth = -1;
  #lastEvent = 0;
  #ended = false;

  constructor(options: WorkerDownloadOptions) {
    this.#options = options;
    const { config, worker, observer } = options;
    this.#info = {
      url: config.modelUrl ?? '',
      path: config.modelPath,
      bytes: 0,
      total_bytes: null,
      percent: null,
      bytes_per_second: 0,
      eta_s: null,
      resumed_from: 0,
      attempt: 0,
      shared: false,
      error: null,
    };
    this.#ticket = options.downloads.acquire(
      {
        url: config.modelUrl ?? '',
        dest: config.modelPath,
        sha256: config.modelSha256,
        stallTimeoutMs: config.downloadStallMs,
        retries: config.downloadRetries,
        backoffMs: config.downloadBackoffMs,
      },
      {
        onProgress: (p) => this.#onProgress(p),
        onRetry: (r) => {
          options.log.warn('model download retry', { attempt: r.attempt, delayMs: r.delayMs, reason: r.reason });
          observer.event('model.download.progress', worker, `download attempt ${r.attempt} failed (${r.reason}); retrying in ${r.delayMs} ms`, { ...this.#data(), retryInMs: r.delayMs, reason: r.reason, failure: r.code }, 'warn');
        },
        onWaiting: (w) => observer.event('model.download.progress', worker, `waiting for process ${w.pid}, which is downloading ${config.modelPath}`, { ...this.#data(), waitingForPid: w.pid }),
        onDone: (result) => this.#onDone(result),
        onFailed: (error) => this.#onFailed(error),
      },
    );
    this.#info.url = this.#ticket.spec.url;
    this.#info.shared = this.#ticket.joined;
    const progress = this.#ticket.progress();
    if (progress) this.#apply(progress);
    options.log.info('model download', { url: this.#info.url, path: config.modelPath, shared: this.#ticket.joined });
    observer.event('model.download.started', worker, `downloading ${config.modelPath} from ${this.#info.url}${this.#ticket.joined ? ' (joined the download another worker started)' : ''}`, this.#data());
  }

  info(): DownloadInfo {
    return { ...this.#info };
  }

  /** One line for /readyz and the worker's reason. */
  describe(): string {
    const i = this.#info;
    const size = i.total_bytes === null ? `${mib(i.bytes)}` : `${mib(i.bytes)} of ${mib(i.total_bytes)} (${i.percent}%)`;
    const eta = i.eta_s === null ? '' : `, ETA ${i.eta_s} s`;
    return `downloading ${i.url}: ${size}, ${mib(i.bytes_per_second)}/s${eta}`;
  }

  /** Seconds a client should wait: the ETA, within 2 to 60. */
  retryAfterS(): number {
    return Math.min(60, Math.max(2, this.#info.eta_s ?? 5));
  }

  /** Stops listening (the download stops when no worker listens any more; the partial file stays). */
  detach(): void {
    this.#ended = true;
    this.#ticket.detach();
  }

  #apply(p: DownloadProgress): void {
    this.#info.bytes = p.bytes;
    this.#info.total_bytes = p.totalBytes;
    this.#info.percent = p.totalBytes ? Math.round((p.bytes / p.totalBytes) * 1000) / 10 : null;
    this.#info.bytes_per_second = p.bytesPerSecond;
    this.#info.eta_s = p.etaSeconds;
    this.#info.resumed_from = p.resumedFrom;
    this.#info.attempt = p.attempt;
  }

  #onProgress(p: DownloadProgress): void {
    if (this.#ended) return;
    this.#apply(p);
    const tenth = p.totalBytes ? Math.floor((p.bytes / p.totalBytes) * 10) : -1;
    const now = Date.now();
    if (tenth > this.#tenth || now - this.#lastEvent >= PROGRESS_EVENT_EVERY_MS) {
      this.#tenth = Math.max(this.#tenth, tenth);
      this.#lastEvent = now;
      this.#options.observer.event('model.download.progress', this.#options.worker, this.describe(), this.#data());
    }
  }

  #onDone(result: DownloadResult): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#info.bytes = result.bytes;
    this.#info.total_bytes = result.bytes;
    this.#info.percent = 100;
    this.#info.eta_s = 0;
    const by = result.byOtherProcess ? ' by another process' : '';
    const rate = result.seconds > 0 ? (result.bytes - result.resumedFrom) / result.seconds : 0;
    this.#options.log.info('model downloaded', { path: result.dest, bytes: result.bytes, seconds: result.seconds, sha256: result.sha256 });
    this.#options.observer.event('model.download.completed', this.#options.worker, `downloaded ${result.dest}${by}: ${mib(result.bytes)} in ${result.seconds.toFixed(1)} s`, {
      ...this.#data(),
      seconds: result.seconds,
      sha256: result.sha256 || null,
      attempts: result.attempts,
      bytesPerSecond: Math.round(rate),
      byOtherProcess: result.byOtherProcess,
    });
    this.#options.onDone(result);
  }

  #onFailed(error: DownloadError): void {
    if (this.#ended) return;
    this.#ended = true;
    const reason = `model download failed: ${error.message}`;
    this.#info.error = reason;
    this.#options.log.error('model download failed', { reason: error.message, failure: error.code, ...error.details });
    this.#options.observer.event('model.download.failed', this.#options.worker, reason, { ...this.#data(), failure: error.code, ...error.details }, 'error');
    this.#options.onFailed(reason);
  }

  #data(): Record<string, unknown> {
    const i = this.#info;
    return {
      url: i.url,
      path: i.path,
      bytes: i.bytes,
      totalBytes: i.total_bytes,
      percent: i.percent,
      bytesPerSecond: i.bytes_per_second,
      etaSeconds: i.eta_s,
      resumedFrom: i.resumed_from,
      attempt: i.attempt,
      shared: i.shared,
    };
  }
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}
