import assert from 'node:assert/strict';
import { test, describe, before, after } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { loadModel, type Engine, type EngineOptions, type Model } from '@lmserve/engine';
import type { GenerationParams } from '@lmserve/protocol';
import { modelPath } from '../helpers.js';
import { coldRun, run } from './generation-helpers.js';

// A system prompt of a few hundred tokens that every request below starts with.
const SYSTEM =
  'System: you are the assistant of the harbour museum. Answer briefly, name the gallery, never invent opening hours. ' +
  'The museum has four galleries: ships, lighthouses, maps and the fishing fleet. '.repeat(12) +
  'Tickets are sold at the entrance.\n';
const question = (i: number) => `User: question ${i}, which gallery shows item ${i * 7}?\nAssistant:`;
const GREEDY: GenerationParams = { maxTokens: 16, temperature: 0, ignoreEos: true };

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** Resolves once `predicate` holds, checking on every turn of the event loop. */
async function until(predicate: () => boolean, what: string, turns = 200000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (predicate()) return;
    await tick();
  }
  assert.fail(`timed out waiting for ${what}`);
}

for (const kvUnified of [false, true]) {
  describe(`shared prompt prefixes (kvUnified: ${kvUnified})`, () => {
    let model: Model;
    const engines: Engine[] = [];
    const engine = async (options: EngineOptions) => {
      const e = await model.createEngine({ contextSize: 1024, kvUnified, ...options });
      engines.push(e);
      return e;
    };
    // The reference: the same request alone in a fresh engine that shares nothing.
    const cold = (prompt: string, params = GREEDY) =>
      coldRun(model, { slots: 1, contextSize: 1024, kvUnified, prefixSharing: false }, { prompt, params });
    before(async () => {
      model = await loadModel(await modelPath('tiny'));
    });
    after(() => {
      for (const e of engines) e.dispose();
      model.dispose();
    });

    test('a request copies the prefix a busy slot holds and generates what it would cold', async () => {
      const e = await engine({ slots: 4 });
      const promptA = SYSTEM + question(1);
      const promptB = SYSTEM + question(2);
      const shared = commonPrefix(model.tokenize(promptA), model.tokenize(promptB));
      assert.ok(shared > 200, `the prompts share ${shared} tokens`);
      const a = e.submit({ prompt: promptA, params: { maxTokens: 100000, ignoreEos: true } });
      const it = a[Symbol.asyncIterator]();
      await it.next(); // A holds its slot and is generating
      const b = await run(e.submit({ prompt: promptB, params: GREEDY }));
      a.cancel();
      await it.return?.();
      await a.result;
      assert.equal(b.result.usage.cachedTokens, shared, 'the whole shared prefix came from A');
      const stats = e.stats();
      assert.equal(stats.prefixCopies, 1);
      assert.equal(stats.prefixTokensCopied, shared);
      const reference = await cold(promptB);
      assert.equal(reference.result.usage.cachedTokens, 0);
      assert.deepEqual(b.tokens, reference.tokens, 'same greedy tokens as cold');
    });

    test('a burst of requests with one prefix prefills it once', async () => {
      // Small batches: the first prompt takes several steps, so the others arrive while it is
      // being prefilled and wait for it instead of prefilling the same prefix beside it.
      const e = await engine({ slots: 8, batchSize: 32 });
      const prompts = Array.from({ length: 8 }, (_, i) => SYSTEM + question(i));
      const tokens = prompts.map((p) => model.tokenize(p));
      const runs = await Promise.all(prompts.map((prompt) => run(e.submit({ prompt, params: GREEDY }))));
      const stats = e.stats();
      assert.equal(runs[0]!.result.usage.cachedTokens, 0, 'the first request prefilled the prefix');
      for (let i = 1; i < 8; i++) {
        const shared = commonPrefix(tokens[0]!, tokens[i]!);
        assert.ok(runs[i]!.result.usage.cachedTokens >= shared, `request ${i} reused ${runs[i]!.result.usage.cachedTokens} of ${shared}`);
      }
      // Copied from the first one's slot, except where a request came in after an earlier one
      // had finished and took that slot with its cache (the submits are not one instant).
      assert.ok(stats.prefixCopies >= 1, `${stats.prefixCopies} copies`);
      const prefix = commonPrefix(tokens[0]!, tokens[1]!);
      const tokensIn = runs.reduce((n, r) => n + r.result.usage.tokensIn, 0);
      assert.ok(stats.promptTokensProcessed < 2 * prefix, `prefilled ${stats.promptTokensProcessed} of ${tokensIn} prompt tokens`);
      for (let i = 0; i < 8; i++) {
        assert.deepEqual(runs[i]!.tokens, (await cold(prompts[i]!)).tokens, `request ${i}: same greedy tokens as cold`);
      }
    });

    test('a request cancelled while it waits for a shared prefix ends cancelled', async () => {
      // 8-token steps over a prompt of ~830 tokens: A prefills for ~100 steps, B waits for it.
      const e = await engine({ slots: 2, batchSize: 8, contextSize: 2048 });
      const long = SYSTEM.repeat(3);
      const a = e.submit({ prompt: long + question(1), params: GREEDY });
      const b = e.submit({ prompt: long + question(2), params: GREEDY });
      await until(() => e.stats().prefixWaits === 1, 'B to wait for A');
      b.cancel();
      const [ra, rb] = await Promise.all([run(a), run(b)]);
      assert.equal(rb.result.finishReason, 'cancelled');
      assert.equal(rb.result.usage.tokensOut, 0);
      assert.equal(e.stats().prefixCopies, 0, 'B never started: it was cancelled while waiting');
      assert.equal(ra.result.finishReason, 'length');
      assert.equal(e.stats().slotsBusy, 0);
      // The engine goes on: a third request with the prefix is served from A's cache.
      const c = await run(e.submit({ prompt: long + question(3), params: GREEDY }));
      const shared = commonPrefix(model.tokenize(long + question(1)), model.tokenize(long + question(3)));
      assert.equal(c.result.usage.cachedTokens, shared);
    });

    test('a waiting request whose source is cancelled prefills the rest itself', async () => {
      const e = await engine({ slots: 2, batchSize: 8, contextSize: 2048 });
      const long = SYSTEM.repeat(3);
      const a = e.submit({ prompt: long + question(1), params: GREEDY });
      const b = e.submit({ prompt: long + question(2), params: GREEDY });
      await until(() => e.stats().prefixWaits === 1, 'B to wait for A');
      a.cancel();
      const [ra, rb] = await Promise.all([run(a), run(b)]);
      assert.equal(ra.result.finishReason, 'cancelled');
      assert.equal(rb.result.finishReason, 'length');
      assert.deepEqual(rb.tokens, (await cold(long + question(2))).tokens, 'same greedy tokens as cold');
    });

    test('a request stops waiting for a source that gets no prefill budget', async () => {
      // Prompt budget: a quarter to the oldest admission (O), the rest to the shortest remaining
      // prompt. Q (~600 tokens, unrelated) is shorter than S (the shared part and ~700 more), so
      // for ~100 steps of 8 tokens S gets none, and W (waiting for S's ~280 shared tokens) gives
      // up after 2 + 2 × 36 steps and prefills its prompt itself.
      const e = await engine({ slots: 4, batchSize: 8, contextSize: 2048 });
      const o = e.submit({ prompt: 'An unrelated and very long document about nets. '.repeat(170), params: { maxTokens: 1 } });
      await until(() => e.stats().slotsBusy === 1, 'O to hold a slot');
      const q = e.submit({ prompt: 'Another unrelated text about boats and harbours. '.repeat(60), params: { maxTokens: 1 } });
      await until(() => e.stats().slotsBusy === 2, 'Q to hold a slot');
      const s = e.submit({ prompt: SYSTEM + 'A long tail that only S has, about lighthouses. '.repeat(70) + question(1), params: GREEDY });
      const w = e.submit({ prompt: SYSTEM + question(2), params: GREEDY });
      const [, , , rw] = await Promise.all([run(o), run(q), run(s), run(w)]);
      const stats = e.stats();
      assert.equal(stats.prefixWaits, 1, 'W waited for S');
      assert.equal(rw.result.usage.cachedTokens, 0, 'W prefilled its whole prompt');
      assert.equal(stats.prefixCopies, 0);
      assert.deepEqual(rw.tokens, (await cold(SYSTEM + question(2))).tokens, 'same greedy tokens as cold');
    });

    test('unrelated prompts neither copy nor wait', async () => {
      const e = await engine({ slots: 4, batchSize: 32 });
      const prompts = ['ships', 'maps', 'lighthouses', 'nets'].map(
        (topic, i) => `${i}: a long description of ${topic}, `.repeat(10) + 'Summary:',
      );
      const runs = await Promise.all(prompts.map((prompt) => run(e.submit({ prompt, params: GREEDY }))));
      const stats = e.stats();
      assert.equal(stats.prefixCopies, 0);
      assert.equal(stats.prefixWaits, 0);
      for (let i = 0; i < prompts.length; i++) {
        assert.equal(runs[i]!.result.usage.cachedTokens, 0);
        assert.deepEqual(runs[i]!.tokens, (await cold(prompts[i]!)).tokens, `prompt ${i}`);
      }
    });
  });
}

describe('prefix sharing switched off', () => {
  let model: Model;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
  });
  after(() => model.dispose());

  test('prefixSharing: false prefills every prompt in full', async () => {
    const e = await model.createEngine({ slots: 4, contextSize: 1024, batchSize: 32, prefixSharing: false });
    try {
      assert.equal(e.options.prefixSharing, false);
      const prompts = Array.from({ length: 4 }, (_, i) => SYSTEM + question(i));
      const runs = await Promise.all(prompts.map((prompt) => run(e.submit({ prompt, params: GREEDY }))));
      const stats = e.stats();
      assert.equal(stats.prefixCopies + stats.prefixWaits, 0);
      assert.equal(stats.promptTokensProcessed, runs.reduce((n, r) => n + r.result.usage.tokensIn, 0));
    } finally {
      e.dispose();
    }
  });

  test('options.prefixSharing must be a boolean', async () => {
    await assert.rejects(
      model.createEngine({ prefixSharing: 'yes' as unknown as boolean }),
      (err: { code?: string }) => err.code === 'INVALID_REQUEST',
    );
  });
});
