import { connectionSettings } from '@lmserve/nats';
import type { HostSpec, LogLevel } from '@lmserve/protocol';
import type { Placement } from './fit/memory-fit.js';
import type { WorkerConfig } from './worker-config.js';

/**
 * Everything a model host needs to load and serve one worker's model. A placement from
 * llama.cpp's fit (GPU_LAYERS=auto on a GPU build) replaces GPU_LAYERS with what it chose.
 * A worker on NATS gets its connection settings, so that its replicas publish NATS streams'
 * tokens themselves, unless `natsDirect` is false (LMSERVE_NATS_DIRECT=off).
 */
export function buildHostSpec(
  config: WorkerConfig,
  drainGraceMs: number,
  logLevel: LogLevel,
  relayFds: number[],
  placement?: Placement | null,
  natsDirect = true,
): HostSpec {
  const nats = natsDirect ? connectionSettings(config) : null;
  const fitted = config.gpuLayers === 'auto' && placement && placement.fit !== 'off' ? placement : null;
  return {
    name: config.name,
    model: config.modelName,
    modelPath: config.modelPath,
    gpuLayers: fitted ? fitted.loadGpuLayers : config.gpuLayers,
    ...(fitted && fitted.tensorSplit.length > 0 ? { tensorSplit: fitted.tensorSplit } : {}),
    ...(fitted && fitted.cpuTensors.length > 0 ? { cpuTensors: fitted.cpuTensors } : {}),
    replicas: config.replicas,
    slots: config.concurrency,
    contextSize: config.contextSize,
    batchSize: config.batchSize,
    prefixSharing: config.prefixSharing,
    swaFull: config.swaFull,
    // Each replica's engine has a cache of its own: the worker's budget is theirs together.
    promptCacheMiB: Math.floor(config.cacheRamMiB / config.replicas),
    threads: config.threads,
    maxQueue: config.maxQueue,
    promptTemplate: config.promptTemplate,
    drainGraceMs,
    logLevel,
    relayFds,
    ...(nats ? { nats } : {}),
  };
}
