/**
 * `supervisor pull NAME`: downloads a worker's model (MODEL_URL to MODEL_PATH, checked against
 * MODEL_SHA256) without starting a supervisor, through the same resumable download the service
 * uses. A progress bar on a terminal, one line per tenth otherwise. Ctrl-C keeps the partial file
 * for the next pull or start to resume.
 */
import { existsSync, statSync } from 'node:fs';
import { LmError } from '@lmserve/protocol';
import {
  DownloadError,
  downloadModel,
  isConfigError,
  loadWorkerConfig,
  workerFiles,
  type DownloadProgress,
  type ServicePaths,
  type WorkerConfig,
} from '@lmserve/supervisor';

export interface PullOutput {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Draw a bar redrawn in place (stderr is a terminal). */
  tty: boolean;
  signal?: AbortSignal;
}

/** The worker's configuration, or an LmError naming what is wrong. */
export function workerConfig(paths: ServicePaths, name: string): WorkerConfig {
  const file = workerFiles(paths.envsDir).find((f) => f.name === name);
  if (!file) throw new LmError('NOT_FOUND', `no worker named "${name}" (no worker.${name}.env in ${paths.envsDir})`);
  const config = loadWorkerConfig(name, file.file, paths);
  if (isConfigError(config)) throw config.error;
  return config;
}

/** Returns the exit code: 0 when the file is in place, 1 when it could not be downloaded. */
export async function pullModel(paths: ServicePaths, name: string, output: PullOutput): Promise<number> {
  const config = workerConfig(paths, name);
  if (existsSync(config.modelPath)) {
    output.out(`${name}: ${config.modelPath} is present (${mib(statSync(config.modelPath).size)})\n`);
    return 0;
  }
  if (!config.modelUrl) {
    output.err(`supervisor: ${name}: ${config.modelPath} is missing and MODEL_URL is not set in ${config.file}\n`);
    return 1;
  }
  output.out(`${name}: downloading ${config.modelUrl}\n  to ${config.modelPath}\n`);
  const bar = new ProgressLine(output);
  try {
    const result = await downloadModel(
      {
        url: config.modelUrl,
        dest: config.modelPath,
        sha256: config.modelSha256,
        stallTimeoutMs: config.downloadStallMs,
        retries: config.downloadRetries,
        backoffMs: config.downloadBackoffMs,
      },
      {
        signal: output.signal,
        onProgress: (p) => bar.update(p),
        onRetry: (r) => bar.note(`attempt ${r.attempt} failed: ${r.reason}; retrying in ${r.delayMs} ms`),
        onWaiting: (w) => bar.note(`waiting for process ${w.pid}, which is downloading this file`),
      },
    );
    bar.end();
    const check = config.modelSha256 ? 'checksum verified' : result.sha256 ? `sha256 ${result.sha256}` : 'downloaded by another process';
    const resumed = result.resumedFrom > 0 ? `, resumed from ${mib(result.resumedFrom)}` : '';
    output.out(`${name}: done, ${mib(result.bytes)} in ${result.seconds.toFixed(1)} s (${check}${resumed})\n`);
    return 0;
  } catch (err) {
    bar.end();
    if (err instanceof DownloadError && err.code === 'aborted') {
      output.err(`supervisor: ${name}: stopped; the partial file is kept and the next pull resumes it\n`);
      return 1;
    }
    output.err(`supervisor: ${name}: download failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

/** A bar redrawn in place on a terminal; a line per tenth (or per 30 s) otherwise. */
class ProgressLine {
  readonly #output: PullOutput;
  #drawn = false;
  #tenth = -1;
  #lastLine = 0;

  constructor(output: PullOutput) {
    this.#output = output;
  }

  update(p: DownloadProgress): void {
    const percent = p.totalBytes ? (p.bytes / p.totalBytes) * 100 : null;
    const size = p.totalBytes ? `${mib(p.bytes)} / ${mib(p.totalBytes)}` : mib(p.bytes);
    const eta = p.etaSeconds === null ? '' : `  ETA ${p.etaSeconds}s`;
    const figures = `${percent === null ? '' : `${percent.toFixed(1).padStart(5)}%  `}${size}  ${mib(p.bytesPerSecond)}/s${eta}`;
    if (this.#output.tty) {
      const width = 30;
      const filled = percent === null ? 0 : Math.round((percent / 100) * width);
      this.#output.err(`\r\u001b[2K[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${figures}`);
      this.#drawn = true;
      return;
    }
    const tenth = percent === null ? -1 : Math.floor(percent / 10);
    const now = Date.now();
    if (tenth > this.#tenth || now - this.#lastLine >= 30_000) {
      this.#tenth = Math.max(tenth, this.#tenth);
      this.#lastLine = now;
      this.#output.out(`  ${figures}\n`);
    }
  }

  note(text: string): void {
    this.end();
    this.#output.err(`  ${text}\n`);
  }

  end(): void {
    if (this.#drawn) this.#output.err('\n');
    this.#drawn = false;
  }
}

export function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}
