export { loadModel, Model } from './model.js';
export type { ChatMessage, GenerateOptions, LoadOptions, ModelInfo } from './model.js';
export { Engine } from './engine.js';
export type { EngineOptions, GenerationListener, SubmitRequest, TemplatedPrompt } from './engine.js';
export { Generation, generationResult } from './generation.js';
export type { DoneEvent } from './generation.js';
export { nativeEventError } from './errors.js';
export { addonPath } from './binding.js';
export type { Delivery, DeviceMemory, DirectOutput, ModelMeasurement, ModelPlacement, GrammarReport, GrammarSamplingStats, NativeEngineOptions, NativeErrorCode, NativeEvent, NativeParamSpec, PrefixSharingStats, SamplingStats } from './binding.js';
import { nativeError } from './errors.js';
import { binding, type ModelMeasurement, type ModelPlacement, type NativeEngineOptions, type NativeErrorCode, type NativeParamSpec } from './binding.js';

/** Backend and device information from llama.cpp (CPU features, GPUs the build can use). */
export function systemInfo(): ReturnType<ReturnType<typeof binding>['systemInfo']> {
  return binding().systemInfo();
}

/**
 * llama.cpp's own sizing of `path` under an engine with `engine` options: a load with no_alloc
 * (metadata only; every buffer sized, none allocated), so it costs milliseconds and no memory.
 * With `load.gpuLayers` -1 and a GPU in the build, llama.cpp's fit (llama-server's --fit) first
 * chooses the layers, the split and the tensors kept in host memory that leave `marginBytes`
 * free on each device for `replicas` contexts. Synchronous: for a process that does only this.
 */
export function measureModel(
  path: string,
  load: ModelPlacement & { useMmap?: boolean } = {},
  engine: Partial<Omit<NativeEngineOptions, 'memoryBytes'>> = {},
  fit: { replicas?: number; marginBytes?: number } = {},
): ModelMeasurement {
  try {
    return binding().measureModel(path, load, engine, fit);
  } catch (err) {
    throw nativeError(err, 'INVALID_MODEL_FILE');
  }
}

/** Converts a JSON schema to a GBNF grammar with llama.cpp's converter. */
export function jsonSchemaToGrammar(schema: unknown): string {
  return binding().jsonSchemaToGrammar(typeof schema === 'string' ? schema : JSON.stringify(schema));
}

/**
 * The generation parameters as the addon validates them: name, type, bounds and default of
 * each (one table in addon/sampling.cpp). Layers that check parameters earlier (the HTTP edge)
 * read their bounds from here.
 */
export function nativeParamSpecs(): NativeParamSpec[] {
  return binding().paramSpecs();
}

/** Every error code the addon can raise, with its HTTP status (one table in addon/errors.h). */
export function nativeErrorCodes(): NativeErrorCode[] {
  return binding().errorCodes();
}

/**
 * Caps this process's address space at `bytes` (Linux: the soft RLIMIT_AS; 0 lifts it back to
 * the hard limit), so that a process handling untrusted input (a grammar checker) gets a failed
 * allocation rather than exhausting the machine. Returns false where unsupported (not Linux) or
 * when the kernel refuses. Counts reserved address space, not resident memory: leave room above
 * the current VmSize.
 */
export function setProcessMemoryLimit(bytes: number): boolean {
  try {
    return binding().setMemoryLimit(bytes);
  } catch (err) {
    throw nativeError(err, 'INVALID_REQUEST');
  }
}

/**
 * Bytes of native memory reported to V8 on this thread: the weights of loaded models and what
 * engines hold (`engine.options.memoryBytes`); the GC weighs unreferenced objects by it. Node
 * 20's process.memoryUsage().external does not include it.
 */
export function reportedNativeMemory(): number {
  return binding().externalMemory();
}

export * from '@lmserve/protocol';
