/**
 * A worker thread that runs one downloadModel (model-download.ts) for the supervisor: the
 * transfer, the writes and the hashing stay off the supervisor's event loop. `workerData` is the
 * DownloadSpec; the thread posts ThreadMessage values and takes `{type: 'abort'}`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DownloadError, downloadModel, type DownloadSpec } from './model-download.js';
import type { ThreadMessage } from './download-messages.js';

const port = parentPort;
if (!port) throw new Error('download-thread.js runs as a worker thread');
const controller = new AbortController();
const onMessage = (message: { type?: unknown }) => {
  if (message?.type === 'abort') controller.abort();
};
port.on('message', onMessage);
const post = (message: ThreadMessage) => port.postMessage(message);

downloadModel(workerData as DownloadSpec, {
  signal: controller.signal,
  onProgress: (progress) => post({ type: 'progress', progress }),
  onRetry: (retry) => post({ type: 'retry', ...retry }),
  onWaiting: (holder) => post({ type: 'waiting', ...holder }),
}).then(
  (result) => post({ type: 'done', result }),
  (err: unknown) => {
    const error = err instanceof DownloadError ? err : new DownloadError('io', err instanceof Error ? err.message : String(err));
    post({ type: 'failed', code: error.code, message: error.message, permanent: error.permanent, details: error.details });
  },
).finally(() => port.off('message', onMessage));
