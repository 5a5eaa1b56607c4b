/**
 * `supervisor list-workers`: every worker of envs/, read from its files (so it works without a
 * running supervisor): port, subject, model path, the model file's size and whether it is
 * present, missing or being downloaded (a `<MODEL_PATH>.part` file), and the state a running
 * supervisor reports for it when one answers.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { WorkerInfo } from '@lmserve/protocol';
import { isConfigError, loadWorkerConfig, partPath, workerFiles, type ServicePaths } from '@lmserve/supervisor';
import { AdminClient } from './admin-client.js';
import { table } from './format.js';

export type ModelFileState = 'present' | 'missing' | 'downloading';

export interface WorkerListing {
  name: string;
  config_file: string;
  /** The running supervisor's state; null when none answers (or it does not know the worker). */
  state: string | null;
  pid: number | null;
  /** The bound port (running supervisor), else HTTP_ADDR's (null for port 0). */
  port: number | null;
  subject: string | null;
  model: string | null;
  model_path: string | null;
  model_url: string | null;
  file: ModelFileState | null;
  /** Size of the model file, or of the partial download. */
  size_bytes: number | null;
  /** Size of the whole file when a partial download knows it. */
  total_bytes: number | null;
  /** Why the worker does not serve (a configuration error, the supervisor's reason). */
  reason: string | null;
  /** What the running supervisor says (null: none answered). */
  supervisor: WorkerInfo | null;
}

/** Lists the workers; `running` is the supervisor's list, or null when none answered. */
export function listWorkers(paths: ServicePaths, running: WorkerInfo[] | null): WorkerListing[] {
  return workerFiles(paths.envsDir).map(({ name, file }) => {
    const info = running?.find((w) => w.name === name) ?? null;
    const config = loadWorkerConfig(name, file, paths);
    const base = {
      name,
      config_file: file,
      state: info?.state ?? null,
      pid: info?.pid ?? null,
      supervisor: info,
    };
    if (isConfigError(config)) {
      return {
        ...base,
        state: info?.state ?? 'invalid-config',
        port: info?.port ?? null,
        subject: null,
        model: null,
        model_path: null,
        model_url: null,
        file: null,
        size_bytes: null,
        total_bytes: null,
        reason: info?.reason ?? config.error.message,
      };
    }
    const onDisk = modelFile(config.modelPath);
    return {
      ...base,
      port: info?.port ?? (config.httpAddr.port === 0 ? null : config.httpAddr.port),
      subject: config.subject,
      model: config.modelName,
      model_path: config.modelPath,
      model_url: config.modelUrl,
      ...onDisk,
      reason: info?.reason ?? null,
    };
  });
}

function modelFile(path: string): { file: ModelFileState; size_bytes: number | null; total_bytes: number | null } {
  if (existsSync(path)) return { file: 'present', size_bytes: statSync(path).size, total_bytes: null };
  const part = partPath(path);
  if (!existsSync(part)) return { file: 'missing', size_bytes: null, total_bytes: null };
  let total: number | null = null;
  try {
    const meta = JSON.parse(readFileSync(`${part}.json`, 'utf8')) as { totalBytes?: unknown };
    total = typeof meta.totalBytes === 'number' ? meta.totalBytes : null;
  } catch {
    total = null;
  }
  return { file: 'downloading', size_bytes: statSync(part).size, total_bytes: total };
}

/** The running supervisor's workers, or null when none answers within a second. */
export async function runningWorkers(paths: ServicePaths): Promise<WorkerInfo[] | null> {
  try {
    const client = AdminClient.fromConfig(paths);
    return await Promise.race([client.workers(), new Promise<null>((resolve) => setTimeout(() => resolve(null), 1000).unref())]);
  } catch {
    return null;
  }
}

function size(bytes: number | null): string {
  if (bytes === null) return '-';
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1 << 30) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
}

function fileCell(w: WorkerListing): string {
  if (w.file === 'downloading' && w.size_bytes !== null && w.total_bytes) {
    return `downloading ${((w.size_bytes / w.total_bytes) * 100).toFixed(0)}%`;
  }
  return w.file ?? '-';
}

export function listingTable(workers: WorkerListing[]): string {
  const header = ['NAME', 'STATE', 'PID', 'PORT', 'FILE', 'SIZE', 'SUBJECT', 'MODEL_PATH', 'REASON'];
  const rows = workers.map((w) => [
    w.name,
    w.state ?? '-',
    w.pid === null ? '-' : String(w.pid),
    w.port === null ? '-' : String(w.port),
    fileCell(w),
    size(w.size_bytes),
    w.subject ?? '-',
    w.model_path ?? '-',
    (w.reason ?? '').split('\n')[0] ?? '',
  ]);
  return table([header, ...rows]);
}
