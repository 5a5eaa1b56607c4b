import assert from 'node:assert/strict';
import { test, describe, before, after } from 'node:test';
import { loadModel, type Engine, type Generation, type Model } from '@lmserve/engine';
import { modelPath, countTicks } from '../helpers.js';

async function waitUntil(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 1));
}

async function drain(generation: Generation): Promise<{ text: string; chunks: number }> {
  let chunks = 0;
  for await (const _ of generation) chunks++;
  const result = await generation.result;
  return { text: result.text, chunks };
}

describe('continuous batching engine', () => {
  let model: Model;
  let engine: Engine;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
    engine = await model.createEngine({ slots: 8, contextSize: 512, maxQueue: 16 });
  });
  after(() => {
    engine.dispose();
    model.dispose();
  });

  test('8 concurrent sequences complete with their own maxTokens', async () => {
    const { value: results, ticks } = await countTicks(() =>
      Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          engine.submit({ prompt: `Sequence ${i} says`, params: { maxTokens: 8 + i * 5, seed: i, ignoreEos: true } }).result,
        ),
      ),
    );
    results.forEach((r, i) => {
      assert.equal(r.usage.tokensOut, 8 + i * 5, `sequence ${i}`);
      assert.equal(r.finishReason, 'length');
    });
    assert.ok(ticks >= 5, `the event loop turned only ${ticks} times`);
    const stats = engine.stats();
    assert.equal(stats.slotsBusy, 0);
    assert.ok(stats.decodeSteps < results.reduce((n, r) => n + r.usage.tokensOut, 0), 'sequences shared decode steps');
  });

  test('a fixed-seed sequence gives the same text alone and beside 7 others', async () => {
    const params = { maxTokens: 24, temperature: 0.8, seed: 777, ignoreEos: true };
    const alone = await engine.submit({ prompt: 'The lighthouse keeper', params }).result;
    const crowd = Array.from({ length: 7 }, (_, i) =>
      engine.submit({ prompt: `Other prompt number ${i} with more words`, params: { maxTokens: 30, seed: 100 + i, ignoreEos: true } }),
    );
    const beside = engine.submit({ prompt: 'The lighthouse keeper', params });
    const [result] = await Promise.all([beside.result, ...crowd.map((g) => g.result)]);
    assert.equal(result?.text, alone.text);
  });

  test('cancelling one of 8 leaves the other 7 intact', async () => {
    const params = (i: number) => ({ maxTokens: 20, seed: 50 + i, temperature: 0.7, ignoreEos: true });
    const solo: string[] = [];
    for (let i = 0; i < 8; i++) solo.push((await engine.submit({ prompt: `Tale ${i}:`, params: params(i) }).result).text);
    const controller = new AbortController();
    const generations = Array.from({ length: 8 }, (_, i) =>
      engine.submit({ prompt: `Tale ${i}:`, params: i === 3 ? { ...params(i), maxTokens: 100000 } : params(i), ...(i === 3 ? { signal: controller.signal } : {}) }),
    );
    const victim = (async () => {
      let n = 0;
      for await (const _ of generations[3]!) if (++n === 3) controller.abort();
    })();
    const results = await Promise.all(generations.map((g) => g.result));
    await victim;
    assert.equal(results[3]?.finishReason, 'cancelled');
    for (let i = 0; i < 8; i++) {
      if (i === 3) continue;
      assert.equal(results[i]?.finishReason, 'length');
      assert.equal(results[i]?.text, solo[i], `sequence ${i} unchanged by the cancellation`);
    }
  });

  test('a grammar in one slot does not affect its neighbour', async () => {
    const free = { maxTokens: 16, seed: 11, temperature: 0.9, ignoreEos: true };
    const alone = await engine.submit({ prompt: 'Neighbour', params: free }).result;
    const constrained = engine.submit({ prompt: 'Digits:', params: { maxTokens: 40, seed: 5, grammar: 'root ::= [0-9]{10,20}' } });
    const neighbour = engine.submit({ prompt: 'Neighbour', params: free });
    const [c, n] = await Promise.all([constrained.result, neighbour.result]);
    assert.match(c.text, /^[0-9]{10,20}$/);
    assert.equal(n.text, alone.text);
  });

  test('a repeated prompt reuses the cached prefix and reports it', async () => {
    const prompt = 'A fairly long shared system prompt that a chat client would send every single time. User: hello';
    const first = await engine.submit({ prompt, params: { maxTokens: 4, ignoreEos: true } }).result;
    const second = await engine.submit({ prompt, params: { maxTokens: 4, ignoreEos: true } }).result;
    assert.equal(second.usage.tokensIn, first.usage.tokensIn);
    assert.equal(second.usage.cachedTokens, second.usage.tokensIn - 1, 'all but the last prompt token came from the cache');
    const extended = await engine.submit({ prompt: prompt + ' and more', params: { maxTokens: 4, ignoreEos: true } }).result;
    assert.ok(extended.usage.cachedTokens >= first.usage.tokensIn - 1, `reused ${extended.usage.cachedTokens}`);
  });

  test('a long prompt is prefilled in chunks while other sequences keep generating', async () => {
    const small = await model.createEngine({ slots: 2, contextSize: 2048, batchSize: 64 });
    try {
      const runner = small.submit({ prompt: 'Runner', params: { maxTokens: 100000, ignoreEos: true } });
      const it = runner[Symbol.asyncIterator]();
      await it.next();
      let runnerChunks = 0;
      let longStarted = false;
      const longPrompt = 'lorem ipsum dolor sit amet '.repeat(120); // ~1400 tokens = 20+ chunks of 64
      const long = small.submit({ prompt: longPrompt, params: { maxTokens: 1 } });
      const longDone = (async () => {
        for await (const _ of long) longStarted = true;
      })();
      while (!longStarted) {
        const next = await it.next();
        if (next.done) break;
        runnerChunks++;
      }
      runner.cancel();
      await longDone;
      await it.return?.();
      // One runner token per step while the long prompt took ~22 steps of 64 tokens.
      assert.ok(runnerChunks >= 10, `runner got ${runnerChunks} tokens during the long prefill`);
    } finally {
      small.dispose();
    }
  });

  test('a short prompt that arrives while a long one prefills is through first', async () => {
    // The oldest prompt keeps a quarter of each step's prompt budget; the shortest gets the rest.
    const small = await model.createEngine({ slots: 2, contextSize: 4096, batchSize: 16 });
    try {
      const order: string[] = [];
      const long = small.submit({ prompt: 'lorem ipsum dolor sit amet '.repeat(400), params: { maxTokens: 1 } });
      const longDone = long.result.then(() => order.push('long'));
      await waitUntil(() => small.stats().slotsBusy === 1);
      const short = small.submit({ prompt: 'A short question?', params: { maxTokens: 1 } });
      const shortDone = short.result.then(() => order.push('short'));
      await Promise.all([longDone, shortDone]);
      assert.deepEqual(order, ['short', 'long'], 'the short prompt did not wait for the ~2,400 tokens of the long one');
    } finally {
      small.dispose();
    }
  });

  test('an overfull queue fails fast with QUEUE_FULL', async () => {
    const tight = await model.createEngine({ slots: 1, contextSize: 256, maxQueue: 2 });
    try {
      const params = { maxTokens: 100000, ignoreEos: true };
      const running = [tight.submit({ prompt: 'a', params }), tight.submit({ prompt: 'b', params }), tight.submit({ prompt: 'c', params })];
      assert.throws(() => tight.submit({ prompt: 'd', params }), { code: 'QUEUE_FULL' });
      const stats = tight.stats();
      assert.equal(stats.queued + stats.slotsBusy, 3);
      for (const g of running) g.cancel();
      const results = await Promise.all(running.map((g) => g.result));
      assert.ok(results.every((r) => r.finishReason === 'cancelled'));
      const after = await tight.submit({ prompt: 'e', params: { maxTokens: 2, ignoreEos: true } }).result;
      assert.equal(after.usage.tokensOut, 2);
    } finally {
      tight.dispose();
    }
  });

  test('stats report busy slots, queue and KV use while running', async () => {
    const generations = Array.from({ length: 4 }, (_, i) => engine.submit({ prompt: `stat ${i}`, params: { maxTokens: 100000, ignoreEos: true } }));
    // Admission is FIFO: once the last one has produced a token, all four hold a slot.
    await generations[3]![Symbol.asyncIterator]().next();
    const stats = engine.stats();
    assert.equal(stats.slots, 8);
    assert.equal(stats.slotsBusy, 4);
    assert.equal(stats.queued, 0);
    assert.ok(stats.kvUsed > 0 && stats.kvUsedRatio > 0 && stats.kvUsedRatio <= 1);
    for (const g of generations) g.cancel();
    await Promise.all(generations.map((g) => g.result));
  });
});

describe('a full KV cache', () => {
  test('is handled per request: sequences wait or end with length, never an abort', async () => {
    const model = await loadModel(await modelPath('tiny'));
    // 4 sequences that want 30 + 120 tokens each share 256 cells: the cache must run out.
    const engine = await model.createEngine({ slots: 4, contextSize: 256, kvUnified: true, kvSize: 256, batchSize: 64 });
    try {
      const prompt = (i: number) => `Sequence ${i} ` + 'padding words here '.repeat(6);
      const generations = Array.from({ length: 4 }, (_, i) =>
        engine.submit({ prompt: prompt(i), params: { maxTokens: 120, seed: i, ignoreEos: true } }),
      );
      const results = await Promise.all(generations.map((g) => g.result));
      for (const r of results) {
        assert.equal(r.finishReason, 'length');
        assert.ok(r.usage.tokensOut > 0 && r.usage.tokensOut <= 120);
      }
      const total = results.reduce((n, r) => n + r.usage.tokensIn + r.usage.tokensOut, 0);
      assert.ok(total > 256, 'more tokens went through than the cache holds at once');
      assert.ok(results.some((r) => r.usage.tokensOut < 120), 'some sequence was ended by the full cache');
      const after = await engine.submit({ prompt: 'still fine', params: { maxTokens: 8, ignoreEos: true } }).result;
      assert.equal(after.usage.tokensOut, 8);
    } finally {
      engine.dispose();
      model.dispose();
    }
  });
});
