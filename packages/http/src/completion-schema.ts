/**
 * The public shape of POST /v1/completions, validated once here at the edge. Field names in
 * errors are request paths ("params.temperature"); inner hops trust what this returns.
 */
import { z } from 'zod';
import { LmError, type GenerationParams } from '@lmserve/protocol';

const finite = () => z.number().finite();

const paramsSchema = z
  .object({
    max_tokens: z
      .number()
      .int()
      .max(1 << 30)
      .refine((v) => v === -1 || v >= 1, 'must be -1 (until the context is full) or a positive integer'),
    // Upper bounds match the engine's, so every range error names the public field.
    temperature: finite().min(0).max(100),
    top_k: z.number().int().min(0).max(1 << 30),
    top_p: finite().min(0).max(1),
    min_p: finite().min(0).max(1),
    repeat_penalty: finite().min(0).max(100),
    repeat_last_n: z.number().int().min(-1).max(1 << 20),
    presence_penalty: finite().min(-2).max(2),
    frequency_penalty: finite().min(-2).max(2),
    seed: z.number().int().min(0).max(0xffffffff),
    stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(16)]),
    ignore_eos: z.boolean(),
    grammar: z.string().min(1).max(1_000_000),
    grammar_root: z.string().min(1),
    logit_bias: z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), finite().min(-100).max(100)),
    stream: z.boolean(),
    raw: z.boolean(),
  })
  .partial()
  .strict();

const bodySchema = z.object({
  input: z.string({ required_error: 'is required', invalid_type_error: 'must be a string' }).min(1, 'must not be empty'),
  params: paramsSchema.default({}),
});

export interface ParsedCompletion {
  input: string;
  params: GenerationParams;
  stream: boolean;
  raw: boolean;
}

function toLmError(error: z.ZodError): LmError {
  const issue = error.issues[0];
  if (!issue) return new LmError('INVALID_REQUEST', 'invalid request', { field: 'body' });
  let field = issue.path.length > 0 ? issue.path.join('.') : 'body';
  if (issue.code === 'unrecognized_keys') field = [...issue.path, issue.keys[0]].join('.');
  const message = issue.code === 'unrecognized_keys' ? `unknown field ${field}` : `${field}: ${issue.message}`;
  return new LmError('INVALID_REQUEST', message, { field });
}

/** Validates a request body; throws LmError INVALID_REQUEST naming the field at fault. */
export function parseCompletionBody(body: unknown): ParsedCompletion {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new LmError('INVALID_REQUEST', 'the request body must be a JSON object', { field: 'body' });
  }
  const parsed = bodySchema.safeParse(body);
  if (!parsed.success) throw toLmError(parsed.error);
  const p = parsed.data.params;
  const params: GenerationParams = {};
  if (p.max_tokens !== undefined) params.maxTokens = p.max_tokens;
  if (p.temperature !== undefined) params.temperature = p.temperature;
  if (p.top_k !== undefined) params.topK = p.top_k;
  if (p.top_p !== undefined) params.topP = p.top_p;
  if (p.min_p !== undefined) params.minP = p.min_p;
  if (p.repeat_penalty !== undefined) params.repeatPenalty = p.repeat_penalty;
  if (p.repeat_last_n !== undefined) params.repeatLastN = p.repeat_last_n;
  if (p.presence_penalty !== undefined) params.presencePenalty = p.presence_penalty;
  if (p.frequency_penalty !== undefined) params.frequencyPenalty = p.frequency_penalty;
  if (p.seed !== undefined) params.seed = p.seed;
  if (p.stop !== undefined) params.stop = p.stop;
  if (p.ignore_eos !== undefined) params.ignoreEos = p.ignore_eos;
  if (p.grammar !== undefined) params.grammar = p.grammar;
  if (p.grammar_root !== undefined) params.grammarRoot = p.grammar_root;
  if (p.logit_bias !== undefined) {
    params.logitBias = Object.fromEntries(Object.entries(p.logit_bias).map(([k, v]) => [Number(k), v]));
  }
  return { input: parsed.data.input, params, stream: p.stream ?? false, raw: p.raw ?? false };
}
