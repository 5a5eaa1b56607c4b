/**
 * Ollama request bodies (POST /api/generate, POST /api/chat) into the core's input and
 * parameters. `options` is read with the core's table in its `ollama` dialect: unsupported
 * options are ignored, as Ollama ignores options a runner does not use; known ones are checked.
 * `keep_alive`, `template`, `context` and `tools` are accepted and ignored (models stay loaded).
 */
import { MAX_JSON_SCHEMA_BYTES, checkParams, parseInput, parseParams } from '@lmserve/core';
import { LmError, type ChatMessage, type GenerateInput, type GenerationParams } from '@lmserve/protocol';

export interface OllamaCall {
  /** null: no prompt or no messages, which Ollama answers by loading the model (done_reason "load"). */
  input: GenerateInput | null;
  params: GenerationParams;
  raw: boolean;
  /** Ollama streams unless `stream` is false. */
  stream: boolean;
}

function invalid(field: string, what: string): LmError {
  return new LmError('INVALID_REQUEST', `${field} ${what}`, { field });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionsParams(value: unknown): GenerationParams {
  if (value === undefined || value === null) return {};
  if (!isObject(value)) throw invalid('options', 'must be an object');
  const options: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) if (v !== null) options[key] = v;
  // Ollama's num_predict -2 means "fill the context", which is -1 here.
  if (options.num_predict === -2) options.num_predict = -1;
  return parseParams(options, 'ollama', 'options.');
}

/** format: "json" → the library's built-in `json` grammar; a JSON schema → params.jsonSchema. */
function format(value: unknown, params: GenerationParams): GenerationParams {
  if (value === undefined || value === null || value === '') return params;
  if (value === 'json') return { ...params, grammar: 'json' };
  if (!isObject(value)) throw invalid('format', 'must be "json" or a JSON schema object');
  if (Buffer.byteLength(JSON.stringify(value)) > MAX_JSON_SCHEMA_BYTES) throw invalid('format', `must be at most ${MAX_JSON_SCHEMA_BYTES} bytes of JSON`);
  return { ...params, jsonSchema: value };
}

function common(body: Record<string, unknown>): { params: GenerationParams; stream: boolean } {
  const stream = body.stream ?? true;
  if (typeof stream !== 'boolean') throw invalid('stream', 'must be a boolean');
  const params = format(body.format, optionsParams(body.options));
  checkParams(params, 'options.');
  return { params, stream };
}

function noImages(value: unknown, field: string): void {
  if (value !== undefined && value !== null && !(Array.isArray(value) && value.length === 0)) throw invalid(field, 'are not supported (text models only)');
}

/** POST /api/generate: `prompt` (with `system`, unless `raw`). */
export function parseGenerateRequest(value: unknown): OllamaCall {
  if (!isObject(value)) throw invalid('body', 'must be a JSON object');
  const { params, stream } = common(value);
  noImages(value.images, 'images');
  const raw = value.raw ?? false;
  if (typeof raw !== 'boolean') throw invalid('raw', 'must be a boolean');
  const { prompt, system } = value;
  if (prompt !== undefined && prompt !== null && typeof prompt !== 'string') throw invalid('prompt', 'must be a string');
  if (system !== undefined && system !== null && typeof system !== 'string') throw invalid('system', 'must be a string');
  if (!prompt) return { input: null, params, raw, stream };
  let input: GenerateInput;
  if (raw || !system) input = parseInput(prompt, 'prompt');
  else input = parseInput([{ role: 'system', content: system }, { role: 'user', content: prompt }], 'prompt');
  return { input, params, raw, stream };
}

const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant']);

/** POST /api/chat: `messages` (tool turns and images are not supported). */
export function parseChatRequest(value: unknown): OllamaCall {
  if (!isObject(value)) throw invalid('body', 'must be a JSON object');
  const { params, stream } = common(value);
  const messages = value.messages ?? [];
  if (!Array.isArray(messages)) throw invalid('messages', 'must be a list of {role, content} messages');
  if (messages.length === 0) return { input: null, params, raw: false, stream };
  const turns: ChatMessage[] = messages.map((item: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObject(item)) throw invalid(at, 'must be an object with role and content');
    if (typeof item.role !== 'string' || !ROLES.has(item.role)) throw invalid(`${at}.role`, 'must be system, user or assistant (tool turns are not supported)');
    noImages(item.images, `${at}.images`);
    const content = item.content ?? '';
    if (typeof content !== 'string') throw invalid(`${at}.content`, 'must be a string');
    return { role: item.role as ChatMessage['role'], content };
  });
  return { input: parseInput(turns, 'messages'), params, raw: false, stream };
}
