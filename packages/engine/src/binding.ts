/**
 * The only module that loads the native addon. Everything native goes through the typed
 * `NativeBinding` interface below; other packages use the classes in model.ts / engine.ts.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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
  | { type: 'tokens'; id: number; text: string; tokens: number[] }
  | {
      type: 'done';
      id: number;
      finishReason: 'stop' | 'length' | 'cancelled';
      stopString?: string;
      usage: { tokensIn: number; tokensOut: number; cachedTokens: number };
      timings: { queueMs: number; ttftMs: number; prefillMs: number; decodeMs: number; totalMs: number };
    }
  | { type: 'error'; id: number; code: string; message: string };

export interface NativeEngineOptions {
  slots: number;
  contextSize: number;
  batchSize: number;
  threads: number;
  maxQueue: number;
  kvUnified: boolean;
  kvSize: number;
  flashAttention: -1 | 0 | 1;
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

export interface NativeEngine {
  submit(id: number, prompt: string | Int32Array, params: NativeParams, options?: { parseSpecial?: boolean }): {
    tokensIn: number;
  };
  cancel(id: number): void;
  stats(): import('@lmserve/protocol').EngineStats;
  options(): NativeEngineOptions;
  dispose(): void;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, special: boolean): string;
  applyChatTemplate(messages: Array<{ role: string; content: string }>, addAssistant: boolean, template?: string): string;
  createEngine(options: Partial<NativeEngineOptions>, onEvents: (events: NativeEvent[]) => void): Promise<NativeEngine>;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeModelLoader {
  load(): Promise<NativeModel>;
  abort(): void;
}

export interface NativeBinding {
  ModelLoader: new (
    path: string,
    options: { gpuLayers?: number; useMmap?: boolean },
    onProgress?: (progress: number) => void,
  ) => NativeModelLoader;
  systemInfo(): {
    llamaSystemInfo: string;
    supportsGpuOffload: boolean;
    supportsMmap: boolean;
    devices: Array<{ name: string; description: string }>;
  };
  checkGrammar(model: NativeModel, grammar: string, root?: string): string | null;
  jsonSchemaToGrammar(schemaJson: string): string;
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
