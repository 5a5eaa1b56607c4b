import type { HostSpec, LogLevel } from '@lmserve/protocol';
import type { WorkerConfig } from './worker-config.js';

/** Everything a model host needs to load and serve one worker's model. */
export function buildHostSpec(config: WorkerConfig, drainGraceMs: number, logLevel: LogLevel, relayFds: number[]): HostSpec {
  return {
    name: config.name,
    model: config.modelName,
    modelPath: config.modelPath,
    gpuLayers: config.gpuLayers,
    replicas: config.replicas,
    slots: config.concurrency,
    contextSize: config.contextSize,
    batchSize: config.batchSize,
    prefixSharing: config.prefixSharing,
    threads: config.threads,
    maxQueue: config.maxQueue,
    promptTemplate: config.promptTemplate,
    drainGraceMs,
    logLevel,
    relayFds,
  };
}
