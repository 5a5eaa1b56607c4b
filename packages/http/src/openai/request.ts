/**
 * OpenAI request bodies (POST /v1/chat/completions, POST /v1/completions) into the core's
 * input and parameters. Parameters come from the core's table in its `openai` dialect; unknown
 * fields are ignored, as OpenAI-compatible servers do; a field set to null counts as absent.
 * Field names in errors are the body's (`temperature`, `messages[1].content`).
 */
import { MAX_JSON_SCHEMA_BYTES, checkParams, parseInput, parseParams } from '@lmserve/core';
import { LmError, type ChatMessage, type GenerateInput, type GenerationParams } from '@lmserve/protocol';

/** Most alternatives a request may ask for per token (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

export interface OpenAiCall {
  /** One input per choice: chat has one, a completion one per prompt. */
  inputs: GenerateInput[];
  params: GenerationParams;
  /** Completions send their prompt as is; chat is templated. */
  raw: boolean;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage and no choices. */
  includeUsage: boolean;
  /** Alternatives per token to report (0: the chosen token only); null: no logprobs. */
  logprobs: number | null;
}

function invalid(field: string, what: string): LmError {
  return new LmError('INVALID_REQUEST', `${field} ${what}`, { field });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The body without null fields (clients send `"stop": null` for "not set"). */
function withoutNulls(body: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) if (value !== null) out[key] = value;
  return out;
}

function chatContent(value: unknown, at: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (!Array.isArray(value)) throw invalid(at, 'must be a string or a list of content parts');
  return value
    .map((part: unknown, i) => {
      if (!isObject(part) || part.type !== 'text') throw invalid(`${at}[${i}]`, 'must be a text part ({"type": "text", "text": ...}); other parts are not supported');
      if (typeof part.text !== 'string') throw invalid(`${at}[${i}].text`, 'must be a string');
      return part.text;
    })
    .join('\n');
}

const CHAT_ROLES: Record<string, ChatMessage['role']> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

/** OpenAI messages as the core's chat input (developer turns are system turns). */
function chatMessages(value: unknown): GenerateInput {
  if (!Array.isArray(value)) throw invalid('messages', 'must be a list of {role, content} messages');
  const turns = value.map((item: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObject(item)) throw invalid(at, 'must be an object with role and content');
    const role = typeof item.role === 'string' ? CHAT_ROLES[item.role] : undefined;
    if (!role) throw invalid(`${at}.role`, 'must be system, developer, user or assistant (tool turns are not supported)');
    return { role, content: chatContent(item.content, `${at}.content`) };
  });
  return parseInput(turns, 'messages');
}

function integer(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw invalid(field, `must be an integer from ${min} to ${max}`);
  return value;
}

/** response_format: json_object → the library's built-in `json` grammar; json_schema → params.jsonSchema. */
function responseFormat(value: unknown, params: GenerationParams): GenerationParams {
  if (value === undefined) return params;
  if (!isObject(value) || typeof value.type !== 'string') throw invalid('response_format', 'must be an object with a type');
  if (value.type === 'text') return params;
  if (params.grammar !== undefined) throw invalid('response_format', 'cannot be given with grammar');
  if (value.type === 'json_object') return { ...params, grammar: 'json' };
  if (value.type !== 'json_schema') throw invalid('response_format.type', 'must be text, json_object or json_schema');
  const spec = value.json_schema;
  if (!isObject(spec)) throw invalid('response_format.json_schema', 'must be an object with a schema');
  const schema = spec.schema;
  if (schema === undefined || schema === null) return { ...params, grammar: 'json' };
  if (!isObject(schema)) throw invalid('response_format.json_schema.schema', 'must be a JSON schema object');
  if (Buffer.byteLength(JSON.stringify(schema)) > MAX_JSON_SCHEMA_BYTES) {
    throw invalid('response_format.json_schema.schema', `must be at most ${MAX_JSON_SCHEMA_BYTES} bytes of JSON`);
  }
  return { ...params, jsonSchema: schema };
}

/** The parameters shared by both routes. */
function commonParams(body: Record<string, unknown>): { params: GenerationParams; stream: boolean; includeUsage: boolean } {
  const values = { ...body };
  let renamed = false;
  if (values.max_completion_tokens !== undefined) {
    values.max_tokens = values.max_completion_tokens;
    renamed = true;
  }
  let params: GenerationParams;
  try {
    params = parseParams(values, 'openai', '');
  } catch (err) {
    if (renamed && err instanceof LmError && err.field === 'max_tokens') {
      throw invalid('max_completion_tokens', err.message.replace(/^max_tokens /, ''));
    }
    throw err;
  }
  if (body.n !== undefined) integer(body.n, 'n', 1, 1);
  if (body.best_of !== undefined) integer(body.best_of, 'best_of', 1, 1);
  const stream = body.stream ?? false;
  if (typeof stream !== 'boolean') throw invalid('stream', 'must be a boolean');
  let includeUsage = false;
  const options = body.stream_options;
  if (options !== undefined) {
    if (!isObject(options)) throw invalid('stream_options', 'must be an object');
    if (options.include_usage !== undefined && options.include_usage !== null && typeof options.include_usage !== 'boolean') {
      throw invalid('stream_options.include_usage', 'must be a boolean');
    }
    includeUsage = options.include_usage === true;
  }
  params = responseFormat(body.response_format, params);
  checkParams(params, '');
  return { params, stream, includeUsage };
}

/** POST /v1/chat/completions. */
export function parseChatRequest(value: unknown): OpenAiCall {
  if (!isObject(value)) throw invalid('body', 'must be a JSON object');
  const body = withoutNulls(value);
  const input = chatMessages(body.messages);
  const { params, stream, includeUsage } = commonParams(body);
  let logprobs: number | null = null;
  if (body.logprobs !== undefined && typeof body.logprobs !== 'boolean') throw invalid('logprobs', 'must be a boolean');
  if (body.top_logprobs !== undefined) {
    const top = integer(body.top_logprobs, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
    if (body.logprobs !== true) throw invalid('top_logprobs', 'needs logprobs to be true');
    logprobs = top;
  } else if (body.logprobs === true) {
    logprobs = 0;
  }
  return { inputs: [input], params: logprobs === null ? params : { ...params, logprobs }, raw: false, stream, includeUsage, logprobs };
}

/** POST /v1/completions with `prompt` (a string or a list of strings). */
export function parseCompletionRequest(value: unknown): OpenAiCall {
  if (!isObject(value)) throw invalid('body', 'must be a JSON object');
  const body = withoutNulls(value);
  const prompt = body.prompt;
  let inputs: GenerateInput[];
  if (typeof prompt === 'string') inputs = [parseInput(prompt, 'prompt')];
  else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((p) => typeof p === 'string')) {
    if (prompt.length > 64) throw invalid('prompt', 'may hold at most 64 prompts');
    inputs = prompt.map((p: string, i) => parseInput(p, `prompt[${i}]`));
  } else throw invalid('prompt', 'must be a string or a non-empty list of strings (token ids are not supported)');
  if (body.echo !== undefined && body.echo !== false) throw invalid('echo', 'is not supported');
  if (body.suffix !== undefined) throw invalid('suffix', 'is not supported');
  const { params, stream, includeUsage } = commonParams(body);
  const logprobs = body.logprobs === undefined ? null : integer(body.logprobs, 'logprobs', 0, MAX_TOP_LOGPROBS);
  return { inputs, params: logprobs === null ? params : { ...params, logprobs }, raw: true, stream, includeUsage, logprobs };
}
