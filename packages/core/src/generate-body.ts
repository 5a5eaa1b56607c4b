/**
 * The original API's request, `{"input", "params"}`, as every transport receives it (HTTP
 * POST /v1/completions, NATS request/reply, JetStream jobs). Validated once, here; inner hops
 * trust what this returns. Field names in errors are request paths ("params.temperature",
 * "input[1].role").
 */
import { LmError, type ChatMessage, type GenerateInput, type GenerationParams } from '@lmserve/protocol';
import { checkGrammarText } from './grammar-guard.js';
import { parseParams } from './params.js';

/** Most chat messages one request may hold, and the longest input text (characters). */
export const MAX_MESSAGES = 1024;
export const MAX_INPUT_CHARS = 4 * 1024 * 1024;

const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant']);

export interface ParsedGenerate {
  input: GenerateInput;
  params: GenerationParams;
  stream: boolean;
  raw: boolean;
}

function invalid(field: string, what: string): LmError {
  return new LmError('INVALID_REQUEST', `${field} ${what}`, { field });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A string, or a non-empty list of {role, content} turns. */
export function parseInput(value: unknown, field = 'input'): GenerateInput {
  if (value === undefined || value === null) throw invalid(field, 'is required');
  if (typeof value === 'string') {
    if (value.length === 0) throw invalid(field, 'must not be empty');
    if (value.length > MAX_INPUT_CHARS) throw invalid(field, `must be at most ${MAX_INPUT_CHARS} characters`);
    return value;
  }
  if (!Array.isArray(value)) throw invalid(field, 'must be a string or a list of {role, content} messages');
  if (value.length === 0) throw invalid(field, 'must hold at least one message');
  if (value.length > MAX_MESSAGES) throw invalid(field, `may hold at most ${MAX_MESSAGES} messages`);
  let chars = 0;
  const messages: ChatMessage[] = value.map((item: unknown, i) => {
    const at = `${field}[${i}]`;
    if (!isObject(item)) throw invalid(at, 'must be an object with role and content');
    for (const key of Object.keys(item)) {
      if (key !== 'role' && key !== 'content') throw new LmError('INVALID_REQUEST', `unknown field ${at}.${key}`, { field: `${at}.${key}` });
    }
    const { role, content } = item;
    if (typeof role !== 'string' || !ROLES.has(role)) throw invalid(`${at}.role`, 'must be system, user or assistant');
    if (typeof content !== 'string') throw invalid(`${at}.content`, 'must be a string');
    chars += content.length;
    return { role: role as ChatMessage['role'], content };
  });
  if (chars > MAX_INPUT_CHARS) throw invalid(field, `must be at most ${MAX_INPUT_CHARS} characters in all`);
  return messages;
}

/** Validates the generation parameters that the engine does not check itself before queueing. */
export function checkParams(params: GenerationParams, prefix = 'params.'): void {
  if (params.grammar !== undefined) checkGrammarText(params.grammar, `${prefix}grammar`);
}

/** Validates an original-API body; throws LmError INVALID_REQUEST (or INVALID_GRAMMAR) naming the field. */
export function parseGenerateBody(body: unknown): ParsedGenerate {
  if (!isObject(body)) throw invalid('body', 'must be a JSON object');
  for (const key of Object.keys(body)) {
    if (key !== 'input' && key !== 'params') throw new LmError('INVALID_REQUEST', `unknown field ${key}`, { field: key });
  }
  const input = parseInput(body.input);
  const raw = body.params;
  if (raw !== undefined && raw !== null && !isObject(raw)) throw invalid('params', 'must be an object');
  const { stream, raw: rawFlag, ...rest } = (raw ?? {}) as Record<string, unknown>;
  if (stream !== undefined && typeof stream !== 'boolean') throw invalid('params.stream', 'must be a boolean');
  if (rawFlag !== undefined && typeof rawFlag !== 'boolean') throw invalid('params.raw', 'must be a boolean');
  if (rawFlag === true && typeof input !== 'string') throw invalid('params.raw', 'needs input to be a string (chat messages are always templated)');
  const params = parseParams(rest, 'original', 'params.');
  checkParams(params);
  return { input, params, stream: stream ?? false, raw: rawFlag ?? false };
}

/** Characters of input text (the audit trail's input_len). */
export function inputLength(input: GenerateInput): number {
  return typeof input === 'string' ? input.length : input.reduce((n, m) => n + m.content.length, 0);
}
