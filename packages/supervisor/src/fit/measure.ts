/**
 * llama.cpp's own sizing of a worker's model, measured in a short-lived child process (the
 * host package's measure-main.js): a no_alloc load of the model and of one engine context sizes
 * every buffer on every device without allocating it, in tens of milliseconds. On a GPU build
 * with GPU_LAYERS=auto, llama.cpp's fit (llama-server's --fit) first chooses the layers, the
 * split across devices and the tensors kept in host memory that leave LMSERVE_GPU_MARGIN free
 * on each device. The supervisor never loads the addon: a file that crashes llama.cpp ends the
 * child, and the worker falls back to the header estimate (the host then reports the failure).
 */
import { execFile } from 'node:child_process';
import { measureMainPath, type MeasureReply, type MeasureRequest } from '@lmserve/host';
import { LmError } from '@lmserve/protocol';
import { parseBytes, type DeviceNeed, type FitSettings, type MemoryNeed } from './memory-fit.js';

/** Free memory llama.cpp's fit leaves on each GPU device (llama-server's --fit-target default). */
export const DEFAULT_GPU_MARGIN_BYTES = 1 << 30;
/** A measurement is tens of milliseconds (seconds with a GPU backend to start); past this the header estimate is used. */
const MEASURE_TIMEOUT_MS = 30_000;

export interface MeasureSettings extends FitSettings {
  gpuLayers: number | 'auto';
}

/** LMSERVE_GPU_MARGIN (bytes, or with K/M/G), else 1 GiB. */
export function gpuMarginBytes(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.LMSERVE_GPU_MARGIN;
  const bytes = raw === undefined || raw === '' ? null : parseBytes(raw);
  return bytes ?? DEFAULT_GPU_MARGIN_BYTES;
}

function runMeasure(request: MeasureRequest, env: NodeJS.ProcessEnv): Promise<MeasureReply> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [measureMainPath(), JSON.stringify(request)],
      { env: { ...process.env, ...env }, timeout: MEASURE_TIMEOUT_MS, maxBuffer: 1 << 20, windowsHide: true },
      (err, stdout, stderr) => {
        const line = stdout.trim().split('\n').pop() ?? '';
        try {
          resolve(JSON.parse(line) as MeasureReply);
        } catch {
          const why = err ? (err.killed ? `timed out after ${MEASURE_TIMEOUT_MS} ms` : err.message) : 'no answer';
          reject(new LmError('INTERNAL', `the measuring process failed: ${why}${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`));
        }
      },
    );
  });
}

/** What the worker's model needs, per llama.cpp; throws LmError when it cannot be measured. */
export async function measureNeed(path: string, settings: MeasureSettings, env: NodeJS.ProcessEnv = process.env): Promise<MemoryNeed> {
  const reply = await runMeasure(
    {
      path,
      load: { gpuLayers: settings.gpuLayers === 'auto' ? -1 : settings.gpuLayers },
      engine: {
        slots: settings.concurrency,
        contextSize: settings.contextSize,
        ...(settings.batchSize > 0 ? { batchSize: settings.batchSize } : {}),
        ...(settings.swaFull !== undefined ? { swaFull: settings.swaFull } : {}),
      },
      fit: { replicas: settings.replicas, marginBytes: gpuMarginBytes(env) },
    },
    env,
  );
  if (!reply.ok) throw new LmError(reply.code as never, reply.message);
  const m = reply.measurement;
  const replicas = settings.replicas;
  const devices: DeviceNeed[] = m.devices
    .filter((d) => d.modelBytes + d.contextBytes + d.computeBytes > 0)
    .map((d) => ({
      name: d.name,
      description: d.description,
      backend: d.backend,
      weightsBytes: d.modelBytes,
      kvBytes: d.contextBytes * replicas,
      computeBytes: d.computeBytes * replicas,
      needBytes: d.modelBytes + (d.contextBytes + d.computeBytes) * replicas,
      freeBytes: d.freeBytes,
      totalBytes: d.totalBytes,
    }));
  const kvBytes = m.host.contextBytes * replicas;
  const computeBytes = m.host.computeBytes * replicas;
  return {
    totalBytes: m.host.modelBytes + kvBytes + computeBytes,
    weightsBytes: m.host.modelBytes,
    kvBytes,
    computeBytes,
    kvTokens: settings.contextSize * settings.concurrency,
    replicas,
    source: 'llama.cpp',
    devices,
    placement: {
      loadGpuLayers: m.loadGpuLayers,
      gpuLayers: m.gpuLayers,
      layers: m.layers,
      tensorSplit: m.tensorSplit,
      cpuTensors: m.cpuTensors,
      fit: m.fit,
    },
  };
}
