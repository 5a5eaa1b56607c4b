/**
 * params.logprobs: each generated token's log-probability and the top alternatives, from the
 * raw logits of its position (before any sampler), only when asked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadModel, type GenerationParams, type Model } from '@lmserve/engine';
import type { TokenChunk } from '@lmserve/protocol';
import { modelPath } from '../helpers.js';

async function chunks(model: Model, prompt: string, params: GenerationParams): Promise<TokenChunk[]> {
  const generation = model.generate(prompt, params);
  const out: TokenChunk[] = [];
  for await (const chunk of generation) out.push(chunk);
  await generation.result;
  return out.filter((c) => c.tokens.length > 0);
}

describe('logprobs', () => {
  let model: Model;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
  });
  after(() => model.dispose());

  test('greedy: one entry per token, the chosen token first among its sorted alternatives', async () => {
    const got = await chunks(model, 'Once upon a time', { maxTokens: 8, temperature: 0, ignoreEos: true, logprobs: 5 });
    assert.equal(got.reduce((n, c) => n + c.tokens.length, 0), 8);
    for (const chunk of got) {
      assert.equal(chunk.logprobs?.length, chunk.tokens.length);
      chunk.logprobs?.forEach((entry, i) => {
        assert.equal(entry.id, chunk.tokens[i]);
        assert.equal(entry.top.length, 5);
        const values = entry.top.map((t) => t.logprob);
        assert.deepEqual(values, [...values].sort((a, b) => b - a));
        assert.equal(entry.top[0]?.id, entry.id);
        assert.ok(Math.abs(entry.logprob - (values[0] ?? 1)) < 1e-9);
        assert.ok(entry.logprob <= 0 && Number.isFinite(entry.logprob));
        assert.ok(values.reduce((s, v) => s + Math.exp(v), 0) <= 1 + 1e-6);
        assert.deepEqual(entry.bytes, [...Buffer.from(entry.text)]);
      });
    }
  });

  test('from the raw distribution: top_k 1 does not make the chosen token certain', async () => {
    const got = await chunks(model, 'Hello', { maxTokens: 6, topK: 1, temperature: 1, ignoreEos: true, logprobs: 0, seed: 1 });
    const entries = got.flatMap((c) => c.logprobs ?? []);
    assert.equal(entries.length, 6);
    for (const e of entries) {
      assert.equal(e.top.length, 0);
      assert.ok(e.logprob < -1e-6, `logprob ${e.logprob} would be 0 after the sampler chain`);
    }
  });

  test('absent unless asked', async () => {
    const got = await chunks(model, 'Hello', { maxTokens: 4, ignoreEos: true, seed: 2 });
    for (const c of got) assert.equal(c.logprobs, undefined);
  });

  test('under a grammar (full sampling on the sampling thread) too', async () => {
    const got = await chunks(model, 'Pick:', { maxTokens: 10, grammar: 'root ::= ("A" | "B"){6}', logprobs: 2, seed: 3 });
    const entries = got.flatMap((c) => c.logprobs ?? []);
    assert.equal(entries.length, got.reduce((n, c) => n + c.tokens.length, 0));
    assert.ok(entries.length >= 1);
    for (const e of entries) {
      assert.equal(e.top.length, 2);
      assert.ok(e.logprob <= (e.top[0]?.logprob ?? 0) + 1e-9);
    }
  });
});
