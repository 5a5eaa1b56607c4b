/**
 * The supervisor's downloads, one per destination file: two workers whose MODEL_PATH is the same
 * file join one download (the first one's URL and settings) and both hear its progress and end.
 * Each download runs in its own worker thread (download-thread.ts); it is stopped, its partial
 * file kept for a later resume, when its last listener detaches.
 */
import { Worker } from 'node:worker_threads';
import type { ThreadMessage } from './download-messages.js';
import { DownloadError, type DownloadFailure, type DownloadProgress, type DownloadResult, type DownloadSpec } from './model-download.js';

export interface DownloadListener {
  onProgress(progress: DownloadProgress): void;
  onRetry(info: { attempt: number; delayMs: number; reason: string; code: DownloadFailure }): void;
  onWaiting(info: { pid: number; host: string }): void;
  onDone(result: DownloadResult): void;
  onFailed(error: DownloadError): void;
}

/** One listener's hold on a download. */
export interface DownloadTicket {
  readonly spec: DownloadSpec;
  /** Other listeners were already waiting on this file when this one joined. */
  readonly joined: boolean;
  /** The last progress report (null before the first). */
  progress(): DownloadProgress | null;
  /** Stops listening; the last one to detach stops the download. */
  detach(): void;
}

class SharedDownload {
  readonly spec: DownloadSpec;
  readonly listeners = new Set<DownloadListener>();
  /** Resolves when the thread has exited (its partial file and lock are released). */
  readonly exited: Promise<void>;
  #thread: Worker | undefined;
  readonly #onEnd: () => void;
  #last: DownloadProgress | null = null;
  #ended = false;

  /** `after`: a stopped download of the same file whose thread must be gone before this one writes. */
  constructor(spec: DownloadSpec, onEnd: () => void, after: Promise<void> | undefined) {
    this.spec = spec;
    this.#onEnd = onEnd;
    let exited!: () => void;
    this.exited = new Promise((resolve) => (exited = resolve));
    const start = () => {
      if (this.#ended) {
        exited();
        return;
      }
      const thread = new Worker(threadUrl(), {
        workerData: spec,
        name: 'model-download',
        execArgv: import.meta.url.endsWith('.ts') ? undefined : [],
      });
      this.#thread = thread;
      thread.on('message', (message: ThreadMessage) => this.#onMessage(message));
      thread.on('error', (err) => this.#end((l) => l.onFailed(new DownloadError('io', `the download thread failed: ${err.message}`, { cause: err }))));
      thread.on('exit', (code) => {
        exited();
        this.#end((l) => l.onFailed(new DownloadError('io', `the download thread exited with code ${code} without a result`)));
      });
    };
    if (after) void after.then(start);
    else start();
  }

  get progress(): DownloadProgress | null {
    return this.#last;
  }

  stop(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#onEnd();
    const thread = this.#thread;
    if (!thread) return;
    thread.postMessage({ type: 'abort' });
    // The thread ends its transfer at the next chunk or timer; terminate if it does not.
    setTimeout(() => void thread.terminate(), 5000).unref();
  }

  #onMessage(message: ThreadMessage): void {
    switch (message.type) {
      case 'progress':
        this.#last = message.progress;
        this.#each((l) => l.onProgress(message.progress));
        break;
      case 'retry':
        this.#each((l) => l.onRetry(message));
        break;
      case 'waiting':
        this.#each((l) => l.onWaiting(message));
        break;
      case 'done':
        this.#end((l) => l.onDone(message.result));
        break;
      case 'failed':
        this.#end((l) => l.onFailed(new DownloadError(message.code, message.message, { permanent: message.permanent, details: message.details })));
        break;
    }
  }

  #each(call: (listener: DownloadListener) => void): void {
    for (const listener of [...this.listeners]) {
      try {
        call(listener);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  #end(call: (listener: DownloadListener) => void): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#onEnd();
    this.#each(call);
    this.listeners.clear();
  }
}

export class ModelDownloads {
  readonly #active = new Map<string, SharedDownload>();
  /** Stopped downloads whose threads have not exited yet, by file. */
  readonly #stopping = new Map<string, Promise<void>>();

  /** Starts the download of `spec.dest`, or joins the one running. */
  acquire(spec: DownloadSpec, listener: DownloadListener): DownloadTicket {
    let shared = this.#active.get(spec.dest);
    const joined = shared !== undefined;
    if (!shared) {
      const created: SharedDownload = new SharedDownload(
        spec,
        () => {
          if (this.#active.get(spec.dest) !== created) return;
          this.#active.delete(spec.dest);
          const gone = created.exited.finally(() => {
            if (this.#stopping.get(spec.dest) === gone) this.#stopping.delete(spec.dest);
          });
          this.#stopping.set(spec.dest, gone);
        },
        this.#stopping.get(spec.dest),
      );
      shared = created;
      this.#active.set(spec.dest, created);
    }
    const download = shared;
    download.listeners.add(listener);
    return {
      spec: download.spec,
      joined,
      progress: () => download.progress,
      detach: () => {
        if (!download.listeners.delete(listener)) return;
        if (download.listeners.size === 0) download.stop();
      },
    };
  }

  /** Destinations being downloaded now. */
  active(): string[] {
    return [...this.#active.keys()];
  }

  /** Stops every download (their partial files stay for a resume). */
  stopAll(): void {
    for (const download of [...this.#active.values()]) download.stop();
  }
}

/** Runs one download in a worker thread, for a caller with a single listener (the CLI's pull). */
export function downloadInThread(spec: DownloadSpec, listener: Omit<DownloadListener, 'onDone' | 'onFailed'>, signal?: AbortSignal): Promise<DownloadResult> {
  return new Promise((resolve, reject) => {
    const downloads = new ModelDownloads();
    const ticket = downloads.acquire(spec, { ...listener, onDone: resolve, onFailed: reject });
    signal?.addEventListener(
      'abort',
      () => {
        ticket.detach();
        reject(new DownloadError('aborted', 'the download was stopped; the partial file is kept for a resume'));
      },
      { once: true },
    );
  });
}

/** The thread's file, beside this one (dist/*.js, or src/*.ts under a TypeScript loader). */
function threadUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './download-thread.ts' : './download-thread.js', import.meta.url);
}
