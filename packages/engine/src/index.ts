export { loadModel, Model } from './model.js';
export type { ChatMessage, GenerateOptions, LoadOptions, ModelInfo } from './model.js';
export { Engine } from './engine.js';
export type { EngineOptions, SubmitRequest } from './engine.js';
export { Generation } from './generation.js';
export { addonPath } from './binding.js';
import { binding } from './binding.js';

/** Backend and device information from llama.cpp (CPU features, GPUs the build can use). */
export function systemInfo(): ReturnType<ReturnType<typeof binding>['systemInfo']> {
  return binding().systemInfo();
}

/** Converts a JSON schema to a GBNF grammar with llama.cpp's converter. */
export function jsonSchemaToGrammar(schema: unknown): string {
  return binding().jsonSchemaToGrammar(typeof schema === 'string' ? schema : JSON.stringify(schema));
}

export * from '@lmserve/protocol';
