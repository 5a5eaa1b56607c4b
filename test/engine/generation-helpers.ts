/** What the engine tests read from a generation, and how they compare two answers. */
import assert from 'node:assert/strict';
import type { EngineOptions, Generation, Model, SubmitRequest } from '@lmserve/engine';
import type { GenerationResult, TokenLogprob } from '@lmserve/protocol';

export interface Run {
  tokens: number[];
  /** One entry per token when the request asked for log-probabilities; else empty. */
  logprobs: TokenLogprob[];
  result: GenerationResult;
}

/** Reads a generation to its end. */
export async function run(generation: Generation): Promise<Run> {
  const tokens: number[] = [];
  const logprobs: TokenLogprob[] = [];
  for await (const chunk of generation) {
    tokens.push(...chunk.tokens);
    logprobs.push(...(chunk.logprobs ?? []));
  }
  return { tokens, logprobs, result: await generation.result };
}

/** Same tokens, and log-probabilities equal up to float noise (a batch of two sequences sums in another order). */
export function assertSameAnswer(got: Run, expected: Run): void {
  assert.deepEqual(got.tokens, expected.tokens);
  assert.equal(got.logprobs.length, expected.logprobs.length);
  got.logprobs.forEach((entry, i) => {
    const want = expected.logprobs[i]!;
    assert.ok(Math.abs(entry.logprob - want.logprob) < 1e-3, `token ${i}: logprob ${entry.logprob} against ${want.logprob}`);
  });
}

/** The reference answer: `request` alone in a fresh engine created with `options`, disposed after. */
export async function coldRun(model: Model, options: EngineOptions, request: SubmitRequest): Promise<Run> {
  const engine = await model.createEngine(options);
  try {
    return await run(engine.submit(request));
  } finally {
    engine.dispose();
  }
}
