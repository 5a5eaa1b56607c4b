/**
 * The one table of generation parameters. Each row names a parameter in the original
 * `{input, params}` API, in OpenAI's request body and in Ollama's `options`, with its type,
 * bounds and default. The edge validators and the name mappers are derived from it, and a test
 * checks its bounds against the native engine's own table (`nativeParamSpecs()`).
 */
import { z } from 'zod';
import { LmError, type GenerationParams } from '@lmserve/protocol';

export type ParamType = 'int' | 'float' | 'bool' | 'string' | 'stringList' | 'logitBias' | 'jsonSchema';

export interface ParamSpec {
  /** The engine's name (GenerationParams key, camelCase; the addon's name too). */
  key: keyof GenerationParams;
  /** The original API's name under `params`. */
  name: string;
  /** The name in an OpenAI request body (null: not accepted there). Extensions as llama-server has them. */
  openai: string | null;
  /** The name under an Ollama request's `options` (null: not accepted there). */
  ollama: string | null;
  type: ParamType;
  min?: number;
  max?: number;
  /** The engine's default when the parameter is absent (undefined: none, e.g. a random seed). */
  default?: number | boolean | string;
  /** stringList: at most this many strings. string: at most this many characters. */
  maxItems?: number;
  maxLength?: number;
  /** false: handled before the engine (the native table does not have it). */
  native?: boolean;
  description: string;
}

/** Largest JSON schema (bytes of its JSON text). */
export const MAX_JSON_SCHEMA_BYTES = 64 * 1024;

/** Most stop strings a request may give, and the longest one. */
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_LENGTH = 1024;
/** Largest inline grammar (bytes of UTF-8); larger ones are refused before any parser sees them. */
export const MAX_GRAMMAR_BYTES = 128 * 1024;

export const PARAMETERS: readonly ParamSpec[] = [
  { key: 'maxTokens', name: 'max_tokens', openai: 'max_tokens', ollama: 'num_predict', type: 'int', min: -1, max: 2 ** 30, default: -1, description: 'tokens to generate at most; -1 until the context is full, 0 reads the prompt only' },
  { key: 'temperature', name: 'temperature', openai: 'temperature', ollama: 'temperature', type: 'float', min: 0, max: 100, default: 0.8, description: '0 is greedy' },
  { key: 'topK', name: 'top_k', openai: 'top_k', ollama: 'top_k', type: 'int', min: 0, max: 2 ** 30, default: 40, description: '0 disables' },
  { key: 'topP', name: 'top_p', openai: 'top_p', ollama: 'top_p', type: 'float', min: 0, max: 1, default: 0.95, description: '1 disables' },
  { key: 'minP', name: 'min_p', openai: 'min_p', ollama: 'min_p', type: 'float', min: 0, max: 1, default: 0.05, description: '0 disables' },
  { key: 'repeatPenalty', name: 'repeat_penalty', openai: 'repeat_penalty', ollama: 'repeat_penalty', type: 'float', min: 0, max: 100, default: 1, description: '1 disables' },
  { key: 'repeatLastN', name: 'repeat_last_n', openai: 'repeat_last_n', ollama: 'repeat_last_n', type: 'int', min: -1, max: 2 ** 20, default: 64, description: 'tokens the penalties look back at; -1 the whole context' },
  { key: 'presencePenalty', name: 'presence_penalty', openai: 'presence_penalty', ollama: 'presence_penalty', type: 'float', min: -2, max: 2, default: 0, description: "OpenAI's range" },
  { key: 'frequencyPenalty', name: 'frequency_penalty', openai: 'frequency_penalty', ollama: 'frequency_penalty', type: 'float', min: -2, max: 2, default: 0, description: "OpenAI's range" },
  { key: 'seed', name: 'seed', openai: 'seed', ollama: 'seed', type: 'int', min: 0, max: 4294967295, description: 'absent: a random seed' },
  { key: 'stop', name: 'stop', openai: 'stop', ollama: 'stop', type: 'stringList', maxItems: MAX_STOP_STRINGS, maxLength: MAX_STOP_LENGTH, description: 'a string or a list; generation ends before the first match' },
  { key: 'ignoreEos', name: 'ignore_eos', openai: 'ignore_eos', ollama: 'ignore_eos', type: 'bool', default: false, description: 'never end on an end-of-generation token' },
  // Its size, nesting and repetition limits are the grammar guard's (INVALID_GRAMMAR).
  { key: 'grammar', name: 'grammar', openai: 'grammar', ollama: null, type: 'string', description: `GBNF the output must match (at most ${MAX_GRAMMAR_BYTES} bytes)` },
  { key: 'grammarRoot', name: 'grammar_root', openai: null, ollama: null, type: 'string', maxLength: 256, default: 'root', description: "the grammar's start rule" },
  { key: 'logitBias', name: 'logit_bias', openai: 'logit_bias', ollama: null, type: 'logitBias', min: -100, max: 100, description: 'token id -> bias; -100 bans the token' },
  // OpenAI's logprobs/top_logprobs map onto it in their routes.
  { key: 'logprobs', name: 'logprobs', openai: null, ollama: null, type: 'int', min: -1, max: 20, default: -1, description: "log-probabilities with each token: -1 none, 0 the chosen token's, N also the N most likely" },
  // OpenAI's response_format and Ollama's format map onto it in their routes.
  { key: 'jsonSchema', name: 'json_schema', openai: null, ollama: null, type: 'jsonSchema', native: false, maxLength: MAX_JSON_SCHEMA_BYTES, description: "a JSON schema the output must match (llama.cpp's converter); not with grammar" },
];

export type ParamDialect = 'original' | 'openai' | 'ollama';

function nameIn(spec: ParamSpec, dialect: ParamDialect): string | null {
  return dialect === 'original' ? spec.name : spec[dialect];
}

function safeSize(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '');
  } catch {
    return Infinity;
  }
}

/** The zod schema of one parameter; messages are completed with the field path by the caller. */
function schemaFor(spec: ParamSpec): z.ZodTypeAny {
  const number = () =>
    z.number({ invalid_type_error: 'must be a number' }).refine(Number.isFinite, 'must be a finite number');
  const range = `must be between ${spec.min} and ${spec.max}`;
  switch (spec.type) {
    case 'int':
      return number()
        .refine(Number.isInteger, 'must be an integer')
        .refine((v) => v >= (spec.min as number) && v <= (spec.max as number), range);
    case 'float':
      return number().refine((v) => v >= (spec.min as number) && v <= (spec.max as number), range);
    case 'bool':
      return z.boolean({ invalid_type_error: 'must be a boolean' });
    case 'string': {
      const max = spec.maxLength ?? Infinity;
      return z
        .string({ invalid_type_error: 'must be a string' })
        .min(1, 'must not be empty')
        .refine((s) => Buffer.byteLength(s) <= max, `must be at most ${max} bytes`);
    }
    case 'stringList': {
      const one = z
        .string({ invalid_type_error: 'must be a string' })
        .min(1, 'must not be empty')
        .max(spec.maxLength ?? Infinity, `must be at most ${spec.maxLength} characters`);
      const maxItems = spec.maxItems ?? Infinity;
      const list = z.union([one, z.array(one).max(maxItems, `may hold at most ${spec.maxItems} strings`)], {
        errorMap: (issue, ctx) =>
          issue.code === 'invalid_union' ? { message: 'must be a string or an array of strings' } : { message: ctx.defaultError },
      });
      // zod checks an array's length but still parses every element (a 4 MB body of a million
      // one-letter strings took half a second of the event loop, GHSA-mrhx-c7xc-m3w5): one
      // element past the limit is enough for the same error.
      return z.preprocess((v) => (Array.isArray(v) && v.length > maxItems ? v.slice(0, maxItems + 1) : v), list);
    }
    case 'jsonSchema':
      // Its size is checked before anything walks it (zod's record parse of a 4 MB object took
      // 0.7 s); the converter checks the rest.
      return z.unknown().superRefine((value, ctx) => {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be a JSON schema object' });
        } else if (safeSize(value) > (spec.maxLength ?? Infinity)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be at most ${spec.maxLength} bytes of JSON` });
        }
      });
    case 'logitBias': {
      // A plain loop: zod's record parse cost about 8 µs an entry (300,000 entries, within the
      // default body limit, held the event loop for 2.4 s); this costs about what reading the JSON does.
      const min = spec.min as number;
      const max = spec.max as number;
      const tokenId = /^\d{1,9}$/;
      return z.unknown().transform((value, ctx): Array<[number, number]> => {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be an object of token id -> bias' });
          return z.NEVER;
        }
        const pairs: Array<[number, number]> = [];
        const record = value as Record<string, unknown>;
        for (const key of Object.keys(record)) {
          const bias = record[key];
          const problem = !tokenId.test(key)
            ? 'keys must be token ids'
            : typeof bias !== 'number'
              ? 'must be a number'
              : !Number.isFinite(bias)
                ? 'must be a finite number'
                : bias < min || bias > max
                  ? range
                  : null;
          if (problem !== null) {
            ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem, path: [key] });
            return z.NEVER;
          }
          pairs.push([Number(key), bias as number]);
        }
        return pairs;
      });
    }
  }
}

/** The params object of a dialect, as a zod object keyed by that dialect's names. */
export function paramsSchema(dialect: ParamDialect): z.ZodObject<Record<string, z.ZodTypeAny>> {
  const shape: Record<string, z.ZodTypeAny> = {};
  for (const spec of PARAMETERS) {
    const name = nameIn(spec, dialect);
    if (name !== null) shape[name] = schemaFor(spec).optional();
  }
  return z.object(shape);
}

/** Converts validated values (keyed by a dialect's names) into engine parameters. */
export function toGenerationParams(values: Record<string, unknown>, dialect: ParamDialect): GenerationParams {
  const out: Record<string, unknown> = {};
  for (const spec of PARAMETERS) {
    const name = nameIn(spec, dialect);
    if (name === null) continue;
    const value = values[name];
    if (value === undefined || value === null) continue;
    out[spec.key] = value;
  }
  return out as GenerationParams;
}

/** The first zod issue as an INVALID_REQUEST naming the field (with `prefix`, e.g. "params."). */
export function zodError(error: z.ZodError, prefix = ''): LmError {
  const issue = error.issues[0];
  if (!issue) return new LmError('INVALID_REQUEST', 'invalid request', { field: 'body' });
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]] : issue.path;
  const field = path.length > 0 ? prefix + path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i > 0 ? '.' : ''}${p}`)).join('') : prefix.replace(/\.$/, '') || 'body';
  const message = issue.code === 'unrecognized_keys' ? `unknown field ${field}` : `${field} ${issue.message}`;
  return new LmError('INVALID_REQUEST', message, { field });
}

const schemas = new Map<ParamDialect, z.ZodTypeAny>();

function dialectSchema(dialect: ParamDialect): z.ZodTypeAny {
  let schema = schemas.get(dialect);
  if (!schema) {
    schema = dialect === 'original' ? paramsSchema(dialect).strict() : paramsSchema(dialect).passthrough();
    schemas.set(dialect, schema);
  }
  return schema;
}

/**
 * Validates and maps the parameters of a dialect: the original API's `params` (unknown fields
 * refused), OpenAI's body or Ollama's `options` (unknown fields ignored, as those servers do).
 */
export function parseParams(value: unknown, dialect: ParamDialect, prefix: string): GenerationParams {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    const field = prefix.replace(/\.$/, '');
    throw new LmError('INVALID_REQUEST', `${field} must be an object`, { field });
  }
  const parsed = dialectSchema(dialect).safeParse(value);
  if (!parsed.success) throw zodError(parsed.error, prefix);
  const params = toGenerationParams(parsed.data, dialect);
  if (params.grammar !== undefined && params.jsonSchema !== undefined) {
    const field = `${prefix}json_schema`;
    throw new LmError('INVALID_REQUEST', `${field} and ${prefix}grammar cannot both be given`, { field });
  }
  return params;
}

/** Every parameter's name in the original API, for documentation and error messages. */
export function parameterNames(dialect: ParamDialect): string[] {
  return PARAMETERS.map((spec) => nameIn(spec, dialect)).filter((n): n is string => n !== null);
}

/** The table as Markdown, for the README (a test keeps the README's copy equal to this). */
export function parameterTableMarkdown(): string {
  const cell = (v: string | null) => (v === null ? '—' : `\`${v}\``);
  const range = (p: ParamSpec) => {
    if (p.type === 'int' || p.type === 'float' || p.type === 'logitBias') return `${p.type === 'logitBias' ? 'bias ' : ''}${p.min} … ${p.max}`;
    if (p.type === 'stringList') return `≤ ${p.maxItems} strings of ≤ ${p.maxLength} chars`;
    if (p.type === 'jsonSchema') return `≤ ${p.maxLength} bytes`;
    return p.maxLength !== undefined ? `≤ ${p.maxLength} bytes` : '';
  };
  const rows = PARAMETERS.map((p) =>
    [cell(p.name), cell(p.openai), cell(p.ollama === null ? null : `options.${p.ollama}`), p.type, range(p), p.default === undefined ? '' : `\`${String(p.default)}\``, p.description].join(' | '),
  );
  return ['| params | OpenAI | Ollama | type | range | default | notes |', '| --- | --- | --- | --- | --- | --- | --- |', ...rows.map((r) => `| ${r} |`)].join('\n');
}
