/**
 * The host-memory prompt cache (engine option promptCacheMiB, worker key CACHE_RAM), as
 * llama-server's --cache-ram. A slot picked for a prompt that shares little with what it holds
 * saves that state first; a later prompt that starts the same way restores it and prefills only
 * the rest. Every answer must be the one a fresh engine gives: the same tokens, the same
 * log-probabilities up to float noise.
 */
import assert from 'node:assert/strict';
import { test, describe, before, after } from 'node:test';
import { loadModel, type Engine, type EngineOptions, type Model } from '@lmserve/engine';
import type { GenerationParams } from '@lmserve/protocol';
import { modelPath } from '../helpers.js';
import { assertSameAnswer, coldRun, run } from './generation-helpers.js';

const SYSTEM =
  'System: you are the assistant of the harbour museum. Answer briefly and name the gallery. ' +
  'The museum has four galleries: ships, lighthouses, maps and the fishing fleet. '.repeat(6);
const question = (i: number) => `User: question ${i}, which gallery shows item ${i * 7}?\nAssistant:`;
const OTHER = (i: number) => `Completely different text number ${i}: the weather report for the coast, wind from the west.`;
const GREEDY: GenerationParams = { maxTokens: 12, temperature: 0, ignoreEos: true, logprobs: 1 };

for (const kvUnified of [false, true]) {
  describe(`prompt cache in host memory (kvUnified: ${kvUnified})`, () => {
    let model: Model;
    const engines: Engine[] = [];
    const engine = async (options: EngineOptions) => {
      const e = await model.createEngine({ slots: 2, contextSize: 1024, kvUnified, ...options });
      engines.push(e);
      return e;
    };
    const cold = (prompt: string | number[]) =>
      coldRun(model, { slots: 1, contextSize: 1024, kvUnified, prefixSharing: false }, { prompt, params: GREEDY });
    before(async () => {
      model = await loadModel(await modelPath('tiny'));
    });
    after(() => {
      for (const e of engines) e.dispose();
      model.dispose();
    });

    test('a prompt whose slot went to another request is restored, not prefilled, and answers the same', async () => {
      const prompt = SYSTEM + question(1);
      const n = model.tokenize(prompt).length;
      const expected = await cold(prompt);
      const e = await engine({ promptCacheMiB: 64 });
      const first = await run(e.submit({ prompt, params: GREEDY }));
      assertSameAnswer(first, expected);
      // Sequential requests take the lowest idle slot: the other prompt replaces the first one's
      // cells there, which are saved first.
      await run(e.submit({ prompt: OTHER(1), params: GREEDY }));
      let stats = e.stats();
      assert.equal(stats.promptCacheSaves, 1);
      assert.equal(stats.promptCacheEntries, 1);
      assert.ok(stats.promptCacheBytes > 0);
      const again = await run(e.submit({ prompt, params: GREEDY }));
      assertSameAnswer(again, expected);
      // Everything but the last prompt token, whose logits give the first output token.
      assert.equal(again.result.usage.cachedTokens, n - 1);
      stats = e.stats();
      assert.equal(stats.promptCacheRestores, 1);
      assert.equal(stats.promptCacheTokensRestored, n - 1);
      // The other prompt was saved in turn when the slot went back to the first one.
      assert.equal(stats.promptCacheSaves, 2);
    });

    test('states kept in mapped memory (LMSERVE_CACHE_MAP_BYTES) restore the same answer', async () => {
      // The engine maps states from 1 MiB on; this model's are smaller, so map every one here.
      const saved = process.env.LMSERVE_CACHE_MAP_BYTES;
      process.env.LMSERVE_CACHE_MAP_BYTES = '1';
      let e: Engine;
      try {
        e = await engine({ promptCacheMiB: 64 });
      } finally {
        if (saved === undefined) delete process.env.LMSERVE_CACHE_MAP_BYTES;
        else process.env.LMSERVE_CACHE_MAP_BYTES = saved;
      }
      const prompts = [SYSTEM + question(5), SYSTEM + question(6), OTHER(5)];
      const expected = await Promise.all(prompts.map((p) => cold(p)));
      // Each prompt replaces the one before in the lowest slot (saved first), twice round.
      for (let round = 0; round < 2; round++) {
        for (const [i, prompt] of prompts.entries()) {
          const got = await run(e.submit({ prompt, params: GREEDY }));
          assertSameAnswer(got, expected[i]!);
          if (round === 1) assert.ok(got.result.usage.cachedTokens > 0, `prompt ${i} restored`);
        }
      }
      const stats = e.stats();
      assert.ok(stats.promptCacheRestores >= 3 && stats.promptCacheSaves >= 3, JSON.stringify(stats));
    });

    test('without the cache the same sequence prefills the prompt again', async () => {
      const prompt = SYSTEM + question(2);
      const e = await engine({});
      await run(e.submit({ prompt, params: GREEDY }));
      await run(e.submit({ prompt: OTHER(2), params: GREEDY }));
      const again = await run(e.submit({ prompt, params: GREEDY }));
      assert.equal(again.result.usage.cachedTokens, 0);
      assert.equal(e.stats().promptCacheSaves, 0);
      assert.equal(e.stats().promptCacheRestores, 0);
    });

    test("a conversation's next turn restores the earlier turn and its answer", async () => {
      const e = await engine({ promptCacheMiB: 64 });
      const turn1 = model.tokenize(SYSTEM + question(3));
      const answer = await run(e.submit({ prompt: turn1, params: GREEDY }));
      await run(e.submit({ prompt: OTHER(3), params: GREEDY }));
      // The next turn sends the whole conversation: the first prompt, the answer, a new question.
      // The slot held the answer's tokens but the last (sampled, never decoded).
      const turn2 = [...turn1, ...answer.tokens, ...model.tokenize(question(4), { addSpecial: false })];
      const expected = await cold(turn2);
      const got = await run(e.submit({ prompt: turn2, params: GREEDY }));
      assertSameAnswer(got, expected);
      assert.equal(got.result.usage.cachedTokens, turn1.length + answer.tokens.length - 1);
    });

    test('a prompt its own slot still holds is reused in place, neither saved nor restored', async () => {
      const e = await engine({ promptCacheMiB: 64 });
      const prompt = SYSTEM + question(5);
      await run(e.submit({ prompt, params: GREEDY }));
      // Both idle slots: the prompt's own slot is picked again and reuses its cells.
      const again = await run(e.submit({ prompt, params: GREEDY }));
      assert.ok(again.result.usage.cachedTokens > 0);
      assert.equal(e.stats().promptCacheRestores, 0);
      assert.equal(e.stats().promptCacheSaves, 0);
    });

    test('the same short prompt again keeps its slot and saves nothing, though most of the slot was the answer', async () => {
      const e = await engine({ promptCacheMiB: 64 });
      const prompt = question(6);
      const long: GenerationParams = { ...GREEDY, maxTokens: 48 };
      const n = model.tokenize(prompt).length;
      assert.ok(48 > n, `the answer (48 tokens) must outweigh the prompt (${n}) for this test`);
      const first = await run(e.submit({ prompt, params: long }));
      // The slot keeps n - 1 of its n + 47 cells: more than half is dropped, all of it the old answer.
      const again = await run(e.submit({ prompt, params: long }));
      assert.equal(again.result.usage.cachedTokens, n - 1);
      assertSameAnswer(again, first);
      assert.equal(e.stats().promptCacheSaves, 0);
      // A different prompt in the same slot still saves what the slot held.
      await run(e.submit({ prompt: OTHER(6), params: GREEDY }));
      assert.equal(e.stats().promptCacheSaves, 1);
      const back = await run(e.submit({ prompt, params: long }));
      assert.equal(back.result.usage.cachedTokens, n - 1);
      assertSameAnswer(back, first);
      assert.equal(e.stats().promptCacheRestores, 1);
    });

    test('a prompt that comes back with another answer is not saved twice, and is still restored', async () => {
      const e = await engine({ slots: 1, promptCacheMiB: 64 });
      const prompt = SYSTEM + question(7);
      const n = model.tokenize(prompt).length;
      const sampled = (seed: number): GenerationParams => ({ maxTokens: 24, temperature: 1, seed, ignoreEos: true });
      const first = await run(e.submit({ prompt, params: sampled(1) }));
      await run(e.submit({ prompt: OTHER(7), params: GREEDY })); // saves the prompt and its first answer
      assert.equal(e.stats().promptCacheSaves, 1);
      const second = await run(e.submit({ prompt, params: sampled(2) })); // restored; saves OTHER(7) first
      assert.equal(second.result.usage.cachedTokens, n - 1);
      assert.notDeepEqual(second.tokens, first.tokens, 'the two seeds must give two answers for this test');
      assert.equal(e.stats().promptCacheSaves, 2);
      // The slot now holds the prompt with its second answer; the cache already has the prompt.
      await run(e.submit({ prompt: 'Zebra crossings, tram lines and the timetable of the night buses.', params: GREEDY }));
      assert.equal(e.stats().promptCacheSaves, 2);
      assert.equal(e.stats().promptCacheEntries, 2);
      const third = await run(e.submit({ prompt, params: GREEDY }));
      assert.equal(third.result.usage.cachedTokens, n - 1);
      assertSameAnswer(third, await cold(prompt));
    });

    test('the cache stays within its budget, dropping the oldest entries', async () => {
      const e = await engine({ promptCacheMiB: 1 });
      const prompt = (i: number) => `${i} `.repeat(3) + SYSTEM + question(10 + i);
      await run(e.submit({ prompt: prompt(0), params: GREEDY }));
      await run(e.submit({ prompt: prompt(1), params: GREEDY }));
      const entryBytes = e.stats().promptCacheBytes;
      assert.ok(entryBytes > 0, 'the first prompt was saved');
      const fit = Math.floor((1024 * 1024) / entryBytes);
      assert.ok(fit >= 1 && fit < 40, `${entryBytes} bytes an entry`);
      for (let i = 2; i < fit + 4; i++) await run(e.submit({ prompt: prompt(i), params: GREEDY }));
      const stats = e.stats();
      assert.ok(stats.promptCacheBytes <= 1024 * 1024, `${stats.promptCacheBytes} bytes held`);
      assert.ok(stats.promptCacheEvictions >= 2, `${stats.promptCacheEvictions} evictions`);
      assert.equal(stats.promptCacheEntries, stats.promptCacheSaves - stats.promptCacheEvictions);
      // Once full, a save writes the buffer of the entry it evicted when that is large enough
      // (the states differ by a few tokens: not every time).
      assert.ok(
        stats.promptCacheAllocations < stats.promptCacheSaves - 1,
        `${stats.promptCacheAllocations} buffers allocated for ${stats.promptCacheSaves} saves`,
      );
      // The oldest is gone: prefilled again. The newest saved one is restored.
      const oldest = await run(e.submit({ prompt: prompt(0), params: GREEDY }));
      assert.equal(oldest.result.usage.cachedTokens, 0);
      const newest = await run(e.submit({ prompt: prompt(fit + 2), params: GREEDY }));
      assert.ok(newest.result.usage.cachedTokens > 0);
    });
  });
}

describe('prompt cache on a sliding-window model', () => {
  let model: Model;
  const engines: Engine[] = [];
  before(async () => {
    model = await loadModel(await modelPath('tiny-swa'));
  });
  after(() => {
    for (const e of engines) e.dispose();
    model.dispose();
  });

  test('a restored state is used only where its window cells are still there', async () => {
    const e = await model.createEngine({ slots: 2, contextSize: 2048, batchSize: 32, promptCacheMiB: 64 });
    engines.push(e);
    const prompt = model.tokenize('The harbour town woke slowly that morning. Fishermen checked their nets while the baker pulled the first loaves from a stone oven. '.repeat(2));
    assert.ok(prompt.length * 8 >= prompt.length + 380, `${prompt.length} prompt tokens: worth restoring for the prompt alone`);
    // A long answer: the window layer (32 positions, 256 cells) overwrote the prompt's cells.
    const long = await run(e.submit({ prompt, params: { maxTokens: 380, temperature: 0, ignoreEos: true } }));
    await run(e.submit({ prompt: OTHER(1), params: GREEDY }));
    const cold = (p: number[]) => coldRun(model, { slots: 1, contextSize: 2048, batchSize: 32 }, { prompt: p, params: GREEDY });
    // The prompt alone: its window cells are gone from the saved state, so after the restore the
    // engine finds them missing and prefills it all.
    const short = await run(e.submit({ prompt, params: GREEDY }));
    assertSameAnswer(short, await cold(prompt));
    assert.equal(short.result.usage.cachedTokens, 0);
    assert.equal(e.stats().promptCacheRestores, 0);
    // The whole conversation and more: the state's end holds the window, so it is restored.
    await run(e.submit({ prompt: OTHER(2), params: GREEDY }));
    const whole = [...prompt, ...long.tokens, ...model.tokenize(' And then?', { addSpecial: false })];
    const next = await run(e.submit({ prompt: whole, params: GREEDY }));
    assertSameAnswer(next, await cold(whole));
    assert.equal(next.result.usage.cachedTokens, prompt.length + long.tokens.length - 1);
  });
});

test('engine options: promptCacheMiB and kvUnified are checked', async () => {
  const model = await loadModel(await modelPath('tiny'));
  try {
    for (const [options, field] of [
      [{ promptCacheMiB: -1 }, 'options.promptCacheMiB'],
      [{ promptCacheMiB: 1.5 }, 'options.promptCacheMiB'],
      [{ kvUnified: 'yes' }, 'options.kvUnified'],
    ] as const) {
      await assert.rejects(model.createEngine(options as EngineOptions), (err: Error & { code?: string; field?: string }) => {
        assert.equal(err.code, 'INVALID_REQUEST');
        assert.equal(err.field, field);
        return true;
      });
    }
    const e = await model.createEngine({ promptCacheMiB: 16 });
    assert.equal(e.options.promptCacheMiB, 16);
    e.dispose();
  } finally {
    model.dispose();
  }
});
