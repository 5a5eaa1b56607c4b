/**
 * A cancelled request frees its slot within one decode step, during prefill as during decoding:
 * shown on the engine's own counters (decode steps, busy slots, prompt tokens processed), not on
 * timing. The bench model with an 8-token batch makes a 400-token prompt take ~50 prefill steps.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Engine, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('cancellation frees the slot within one decode step', () => {
  let model: Model;
  let engine: Engine;
  const prompt = Array.from({ length: 80 }, (_, i) => `word${i} and more`).join(' ');

  before(async () => {
    model = await loadModel(await modelPath('bench'));
    engine = await model.createEngine({ slots: 2, contextSize: 1024, batchSize: 8, threads: 1 });
  });
  after(() => {
    engine.dispose();
    model.dispose();
  });

  test('during prefill: no token generated, the prompt not finished, one step at most after the cancel', async () => {
    const promptTokens = model.tokenize(prompt).length;
    assert.ok(promptTokens > 200, `${promptTokens} prompt tokens`);
    const before = engine.stats();
    const generation = engine.submit({ prompt, params: { maxTokens: 16, ignoreEos: true } });
    await until('prefill under way', () => engine.stats().decodeSteps - before.decodeSteps >= 3);
    generation.cancel();
    const atCancel = engine.stats();
    const result = await generation.result;
    const done = engine.stats();
    assert.equal(result.finishReason, 'cancelled');
    assert.equal(result.usage.tokensOut, 0);
    assert.equal(done.slotsBusy, 0);
    assert.ok(done.decodeSteps - atCancel.decodeSteps <= 1, `${done.decodeSteps - atCancel.decodeSteps} steps after the cancel`);
    assert.ok(done.decodeSteps - before.decodeSteps < Math.ceil(promptTokens / 8), 'the prompt was not prefilled to its end');
  });

  test('during decoding, beside another sequence that keeps going', async () => {
    const other = engine.submit({ prompt: 'Keep going', params: { maxTokens: 64, ignoreEos: true } });
    const generation = engine.submit({ prompt: 'Count with me', params: { maxTokens: 500, ignoreEos: true } });
    let seen = 0;
    for await (const chunk of generation) {
      seen += chunk.tokens.length;
      if (seen >= 4) break; // leaving the loop cancels
    }
    const atCancel = engine.stats();
    // The step under way when the cancel arrived may finish with it; the next one starts without it.
    await until('two more decode steps', () => engine.stats().decodeSteps >= atCancel.decodeSteps + 2);
    assert.equal(engine.stats().slotsBusy, 1, 'the cancelled sequence left its slot; the other holds its own');
    const result = await generation.result;
    assert.equal(result.finishReason, 'cancelled');
    assert.ok(result.usage.tokensOut - seen <= 2, `${result.usage.tokensOut - seen} tokens after the cancel`);
    assert.equal((await other.result).usage.tokensOut, 64, 'the other sequence was not disturbed');
    assert.equal(engine.stats().slotsBusy, 0);
  });
});
