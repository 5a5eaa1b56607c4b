/**
 * A running worker's own HTTP port, found through the supervisor's admin API, and the
 * Authorization its API_KEY (from the worker's env file) asks for.
 */
import { LmError, type WorkerInfo } from '@lmserve/protocol';
import { isConfigError, loadWorkerConfig, type ServicePaths } from '@lmserve/supervisor';
import { join } from 'node:path';
import { AdminClient, connectHost } from './admin-client.js';

export interface WorkerEndpoint {
  worker: WorkerInfo;
  /** http://host:port, no trailing slash. */
  baseUrl: string;
  /** Authorization when the worker has an API_KEY. */
  headers: Record<string, string>;
}

/** The first line of a reason (a load failure carries the host's last stderr lines). */
function firstLine(text: string | null): string {
  return (text ?? '').split('\n')[0]?.trim() ?? '';
}

export async function workerEndpoint(paths: ServicePaths, name: string, client = AdminClient.fromConfig(paths)): Promise<WorkerEndpoint> {
  const workers = await client.workers();
  const worker = workers.find((w) => w.name === name);
  if (!worker) {
    const known = workers.map((w) => w.name).join(', ');
    throw new LmError('NOT_FOUND', `no worker named "${name}" (workers: ${known || 'none'})`);
  }
  if (worker.port === null || worker.address === null) {
    const reason = firstLine(worker.reason);
    throw new LmError('MODEL_NOT_READY', `worker ${name} has no HTTP port (${worker.state}${reason ? `: ${reason}` : ''})`);
  }
  const host = connectHost(worker.address.slice(0, worker.address.lastIndexOf(':')).replace(/^\[|\]$/g, ''));
  const headers: Record<string, string> = {};
  const config = loadWorkerConfig(name, join(paths.envsDir, `worker.${name}.env`), paths);
  if (!isConfigError(config) && config.apiKey) headers.authorization = `Bearer ${config.apiKey}`;
  return { worker, baseUrl: `http://${host}:${worker.port}`, headers };
}
