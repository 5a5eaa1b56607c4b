/**
 * The only module that loads the native addon. Everything native goes through the typed
 * `NativeBinding` interface below; other packages use the classes in model.ts / engine.ts.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TokenLogprob } from '@lmserve/protocol';

export interface NativeModelInfo {
  architecture: string;
  name: string;
  description: string;
  parameterCount: number;
  sizeBytes: number;
  fileSize: number;
  trainedContextLength: number;
  embeddingLength: number;
  layerCount: number;
  vocabSize: number;
  vocabType: string;
  chatTemplate: string | null;
  specialTokens: Record<'bos' | 'eos' | 'eot' | 'sep' | 'nl' | 'pad', { id: number; text: string } | null>;
  addBos: boolean;
  addEos: boolean;
  eogTokens: number[];
}

export type NativeEvent =
  | { type: 'tokens'; id: number; text: string; tokens: number[]; logprobs?: TokenLogprob[] }
  | {
      type: 'done';
      id: number;
      finishReason: 'stop' | 'length' | 'cancelled';
      stopString?: string;
      usage: { tokensIn: number; tokensOut: number; cachedTokens: number };
      timings: { queueMs: number; ttftMs: number; prefillMs: number; decodeMs: number; totalMs: number };
      /** Delivery 'final' or 'direct': the whole text (absent when empty). */
      text?: string;
      /** Delivery 'direct': formatted chunks the socket had not taken (absent when none). */
      tail?: string;
    }
  | { type: 'error'; id: number; code: string; message: string; tail?: string };

/**
 * How a request's output leaves the engine: `events` (a `tokens` event per step, the default),
 * `final` (no event per step; `done` carries the text) or `direct` (the decode thread writes each
 * step as an HTTP/1.1 chunk to a client's socket, and `done` carries the text; see DirectOutput).
 */
export type Delivery = 'events' | 'final' | 'direct';

/**
 * A direct stream: each chunk's payload is `prefix + JSON.stringify(text) + afterText`, then,
 * when `afterTokens` is given, the token ids joined by commas and `afterTokens`. Steps whose text
 * is held back (a possible stop string, partial UTF-8) write nothing when `skipEmpty` (default
 * true). After the first chunk, writes are at least `coalesceMs` apart (default 4).
 */
export interface DirectOutput {
  fd: number;
  prefix: string;
  afterText: string;
  afterTokens?: string;
  skipEmpty?: boolean;
  coalesceMs?: number;
}

export interface NativeEngineOptions {
  slots: number;
  contextSize: number;
  batchSize: number;
  threads: number;
  maxQueue: number;
  kvUnified: boolean;
  kvSize: number;
  flashAttention: -1 | 0 | 1;
  /** Whether a new request may start from a prompt prefix another slot holds or is prefilling. */
  prefixSharing: boolean;
  /** Whether sliding-window layers keep every position (llama.cpp's swa_full). */
  swaFull: boolean;
  /** Host memory for saved prompt states, MiB (0: none). */
  promptCacheMiB: number;
  /** Whether a top-k or greedy sampler reads only the best logits of a step. */
  bestLogitsOnly: boolean;
  /** Whether a step's unconstrained sequences are sampled on the decode's threads together. */
  parallelSampling: boolean;
  /**
   * Estimated bytes the engine allocated beyond the model (f16 KV cache, logits, batch arrays;
   * not the compute buffers), reported to V8 as external memory while the engine lives.
   */
  memoryBytes: number;
}

/**
 * One generation parameter as the addon validates it (its one table, addon/sampling.cpp).
 * int/float: inclusive `min`..`max`; stringList: `max` is the most entries. `default` is what
 * an absent parameter means (seed 4294967295 = LLAMA_DEFAULT_SEED: a random seed per request).
 */
export type NativeParamSpec =
  | { name: string; type: 'int' | 'float'; min: number; max: number; default: number }
  | { name: string; type: 'bool'; default: boolean }
  | { name: string; type: 'string'; default: string }
  | { name: string; type: 'stringList'; max: number; default: string[] }
  | { name: string; type: 'logitBias'; default: Array<[number, number]> };

/** A code the addon can raise and the HTTP status it maps to (addon/errors.h). */
export interface NativeErrorCode {
  code: string;
  status: number;
}

export interface NativeParams {
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  repeatLastN?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
  ignoreEos?: boolean;
  logitBias?: Array<[number, number]>;
  stop?: string[];
  grammar?: string;
  grammarRoot?: string;
}

/**
 * How a grammar parses and how wide it is (addon/sampling.h). `width`: the most parser stacks
 * one rule can open at one point (its alternatives, with rules referenced first counted as their
 * own alternatives); the full grammar check costs about vocabulary size × width per token.
 */
export interface GrammarReport {
  valid: boolean;
  verdict: 'valid' | 'syntax' | 'unsupported' | 'too-complex';
  /** null when valid; else what is wrong, e.g. "expecting name at line 1, column 12: `|`". */
  reason: string | null;
  /** Rules after parsing (groups and repetitions become rules of their own); 0 when it does not parse. */
  rules: number;
  alternatives: number;
  width: number;
  widestRule: string | null;
  /** The width limit in force (LMSERVE_GRAMMAR_MAX_WIDTH, default 1024; 0: none). */
  maxWidth: number;
}

/** How the engine sampled, beside the EngineStats. */
export interface SamplingStats {
  /** Tokens sampled from a step's best logits only (the engine's bestLogitsOnly). */
  bestLogitsSamples: number;
  /** Steps whose sequences were sampled on several threads (the engine's parallelSampling). */
  parallelSamplingSteps: number;
}

/** Counters of grammar-constrained sampling, beside the EngineStats. */
export interface GrammarSamplingStats {
  /** Tokens the grammar accepted as the unconstrained sampler chose them (one-candidate check). */
  grammarFastSamples: number;
  /** Tokens sampled again with the grammar over the whole vocabulary (the choice was rejected). */
  grammarFullSamples: number;
  /**
   * Of grammarFullSamples, those in a grammar state met before (by any request under the same
   * grammar on this model): its allowed tokens were known, so no pass of the grammar over the
   * vocabulary was needed, and the token was sampled on the decode thread at once.
   */
  grammarKnownStates: number;
  /**
   * Decode steps a constrained sequence sat out because its full grammar sampling (on the
   * engine's sampling thread) took longer than a quarter of a decode step (at least 1 ms); the
   * batch did not wait. That thread runs at a lower priority (nice +10, LMSERVE_SAMPLING_NICE).
   */
  grammarSkippedSteps: number;
  /**
   * The model's grammar cache (parsed grammars by content, LMSERVE_GRAMMAR_CACHE_SIZE entries,
   * default 64): requests whose grammar was cloned from a parsed one, and requests that parsed
   * theirs (invalid grammars included). Shared by every engine of the model.
   */
  grammarCacheHits: number;
  grammarCacheMisses: number;
}

/** Counters of prompt prefixes shared between slots, beside the EngineStats. */
export interface PrefixSharingStats {
  /** Requests that started from a prefix copied out of another slot's KV cache. */
  prefixCopies: number;
  /** Prompt tokens so copied instead of prefilled (also in each request's usage.cachedTokens). */
  prefixTokensCopied: number;
  /** Requests that held their slot until another slot's prefill had passed the prefix they share. */
  prefixWaits: number;
  /** Prompt states saved to host memory (promptCacheMiB), before a slot dropped most of its cache. */
  promptCacheSaves: number;
  /** Requests that started from a restored prompt state, and the prompt tokens it gave them. */
  promptCacheRestores: number;
  promptCacheTokensRestored: number;
  /** Entries dropped (oldest first) to keep the cache within promptCacheMiB. */
  promptCacheEvictions: number;
  /**
   * State buffers allocated. A save writes the buffer of an entry the cache dropped (restored
   * whole, held by a newer entry, evicted) when one is large enough, so at most promptCacheSaves.
   */
  promptCacheAllocations: number;
  /** What the cache holds now: the entries' buffers and those kept for later saves. */
  promptCacheBytes: number;
  promptCacheEntries: number;
  /** Milliseconds the decode loop spent saving and restoring states (no step runs meanwhile). */
  promptCacheMs: number;
}

export interface NativeEngine {
  submit(id: number, prompt: string | string[] | Int32Array, params: NativeParams, options?: { parseSpecial?: boolean; delivery?: Delivery; direct?: DirectOutput; eventIntervalMs?: number }): {
    tokensIn: number;
  };
  cancel(id: number): void;
  stats(): import('@lmserve/protocol').EngineStats & SamplingStats & GrammarSamplingStats & PrefixSharingStats;
  options(): NativeEngineOptions;
  /** What the context holds per device (host memory last), as llama.cpp accounts it. */
  memory(): DeviceMemory[];
  dispose(): void;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  tokenizePrompt(parts: string[]): Int32Array;
  hasControlText(text: string): boolean;
  detokenize(tokens: Int32Array, special: boolean): string;
  applyChatTemplate(messages: Array<{ role: string; content: string }>, addAssistant: boolean, template?: string): string;
  createEngine(options: Partial<Omit<NativeEngineOptions, 'memoryBytes'>>, onEvents: (events: NativeEvent[]) => void): Promise<NativeEngine>;
  dispose(): void;
  readonly disposed: boolean;
}

/** One device's memory as llama.cpp accounts it (host memory is the device named CPU). */
export interface DeviceMemory {
  /** ggml's device name ("CUDA0", "Metal"); "CPU" for host memory. */
  name: string;
  description: string;
  /** The backend that drives it ("CUDA", "Metal", "CPU"). */
  backend: string;
  type: 'gpu' | 'igpu' | 'accel' | 'cpu';
  /** What the device reports free / in total (host memory: as ggml reads it). */
  freeBytes: number;
  totalBytes: number;
  modelBytes: number;
  contextBytes: number;
  computeBytes: number;
}

/** Where a model's tensors go: a layer count, a split across GPU devices, tensors kept in host memory. */
export interface ModelPlacement {
  /** -1: llama.cpp's default (every layer on the GPU devices, when there are any). */
  gpuLayers?: number;
  /** Layers per GPU device, in llama.cpp's device order (empty: its default split). */
  tensorSplit?: number[];
  /** Tensor-name patterns (regular expressions) kept in host memory. */
  cpuTensors?: string[];
}

/** measureModel's answer: llama.cpp's own sizing of a model and one engine context (no_alloc load). */
export interface ModelMeasurement {
  /** The GPU-like devices the model would use (none on a CPU build). */
  devices: DeviceMemory[];
  host: DeviceMemory;
  /** Layers that would sit on GPU devices (llama.cpp's count: repeating layers + output). */
  gpuLayers: number;
  /** The model's repeating layers + its output layer. */
  layers: number;
  /** 'off' (a set layer count, or no GPU device), else llama.cpp's fit status. */
  fit: 'off' | 'success' | 'failure';
  tensorSplit: number[];
  cpuTensors: string[];
  /** The layer count to load with (-1: llama.cpp's default). */
  loadGpuLayers: number;
}

export interface NativeModelLoader {
  load(): Promise<NativeModel>;
  abort(): void;
}

export interface NativeBinding {
  ModelLoader: new (
    path: string,
    options: ModelPlacement & { useMmap?: boolean; vocabOnly?: boolean },
    onProgress?: (progress: number) => void,
  ) => NativeModelLoader;
  systemInfo(): {
    llamaSystemInfo: string;
    supportsGpuOffload: boolean;
    supportsMmap: boolean;
    devices: Array<{ name: string; description: string }>;
  };
  checkGrammar(model: NativeModel, grammar: string, root?: string): string | null;
  measureModel(
    path: string,
    load: ModelPlacement & { useMmap?: boolean },
    engine: Partial<Omit<NativeEngineOptions, 'memoryBytes'>>,
    fit: { replicas?: number; marginBytes?: number },
  ): ModelMeasurement;
  inspectGrammar(model: NativeModel, grammar: string, root?: string): GrammarReport;
  jsonSchemaToGrammar(schemaJson: string): string;
  paramSpecs(): NativeParamSpec[];
  errorCodes(): NativeErrorCode[];
  /** Soft RLIMIT_AS of this process in bytes (0: back to the hard limit); false where unsupported or refused. */
  setMemoryLimit(bytes: number): boolean;
  /**
   * V8's count of external memory reported by native objects on this thread (model weights,
   * engine KV caches). Node 20's process.memoryUsage().external does not include it.
   */
  externalMemory(): number;
}

/** Where the addon is: LMSERVE_ADDON_PATH, else build/Release/lmserve.node at the repo root. */
export function addonPath(): string {
  const override = process.env.LMSERVE_ADDON_PATH;
  if (override) return resolve(override);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'build', 'Release', 'lmserve.node');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error('the native addon is not built: run `npm install` (or `npm run build:addon`) at the repo root');
}

let cached: NativeBinding | undefined;

export function binding(): NativeBinding {
  if (!cached) {
    const require = createRequire(import.meta.url);
    cached = require(addonPath()) as NativeBinding;
  }
  return cached;
}
