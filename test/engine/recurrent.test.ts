/**
 * Recurrent models (Mamba, RWKV) and hybrids (LFM2, Granite 4, Falcon-H1: attention layers beside
 * recurrent ones) on the generated `tiny-mamba` and `tiny-lfm2` models: a sequence's recurrent
 * part is one state after its last token, not cells per position, so it cannot be cut back to an
 * earlier position (llama_memory_seq_rm fails on a partial range) and prefix copies are not
 * partial. Every path that reuses or moves a sequence
 * (the slot's own prompt, the host-memory prompt cache, prefix sharing, cancellation) must then
 * still answer exactly as a fresh engine does.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Engine, type EngineOptions, type Model } from '@lmserve/engine';
import type { GenerationParams } from '@lmserve/protocol';
import { modelPath } from '../helpers.js';
import { assertSameAnswer, coldRun, run, type Run } from './generation-helpers.js';

const PROMPT = 'The harbour town woke slowly that morning. Fishermen checked their nets while the baker pulled the first loaves.';
const OTHER = 'A mountain village slept under deep snow. The shepherds counted their goats before the long winter night.';
// Long enough (> 32 tokens) for a checkpoint at its last token when the prompt cache is on.
const LONG = `${PROMPT} ${OTHER}`;
const GREEDY: GenerationParams = { maxTokens: 24, temperature: 0, ignoreEos: true, logprobs: 2 };
const BASE: EngineOptions = { slots: 2, contextSize: 512 };

for (const [preset, architecture] of [['tiny-mamba', 'mamba'], ['tiny-lfm2', 'lfm2']] as const) describe(`recurrent state (${preset})`, () => {
  let model: Model;
  let reference: Run;
  let other: Run;
  const engines: Engine[] = [];
  const engine = async (options: EngineOptions = {}) => {
    const e = await model.createEngine({ ...BASE, ...options });
    engines.push(e);
    return e;
  };
  before(async () => {
    model = await loadModel(await modelPath(preset));
    reference = await coldRun(model, BASE, { prompt: PROMPT, params: GREEDY });
    other = await coldRun(model, BASE, { prompt: OTHER, params: GREEDY });
  });
  after(() => {
    for (const e of engines) e.dispose();
    model.dispose();
  });

  test('the model is recurrent or hybrid, and its answers follow the prompt (the checks below can fail)', async () => {
    assert.equal(model.info.architecture, architecture);
    assert.equal(reference.tokens.length, GREEDY.maxTokens);
    assert.notDeepEqual(reference.tokens, other.tokens);
    assertSameAnswer(await coldRun(model, BASE, { prompt: PROMPT, params: GREEDY }), reference);
  });

  test('sequences decoded together keep their own states', async () => {
    const e = await engine({ slots: 4 });
    const answers = await Promise.all([PROMPT, OTHER, PROMPT, OTHER].map((prompt) => run(e.submit({ prompt, params: GREEDY }))));
    answers.forEach((answer, i) => assertSameAnswer(answer, i % 2 === 0 ? reference : other));
  });

  test('the same prompt again is prefilled from the start (a state cannot be cut back) and answers as cold', async () => {
    const e = await engine({ slots: 1 });
    assertSameAnswer(await run(e.submit({ prompt: PROMPT, params: GREEDY })), reference);
    const again = await run(e.submit({ prompt: PROMPT, params: GREEDY }));
    assert.equal(again.result.usage.cachedTokens, 0);
    assertSameAnswer(again, reference);
  });

  test('a prompt that continues the whole sequence reuses the state and answers as cold', async () => {
    const e = await engine({ slots: 1 });
    const promptTokens = model.tokenize(PROMPT, { addSpecial: true });
    const first = await run(e.submit({ prompt: promptTokens, params: GREEDY }));
    // The slot holds the prompt and every answer token but the last (sampled, never decoded).
    const next = [...promptTokens, ...first.tokens, ...model.tokenize(' And then the tide came in.', { addSpecial: false })];
    const warm = await run(e.submit({ prompt: next, params: GREEDY }));
    assert.equal(warm.result.usage.cachedTokens, promptTokens.length + first.tokens.length - 1);
    assertSameAnswer(warm, await coldRun(model, BASE, { prompt: next, params: GREEDY }));
    // One token changed inside the sequence: nothing can be kept.
    const changed = [...next];
    changed[promptTokens.length + 2] = changed[promptTokens.length + 2] === 100 ? 101 : 100;
    const fresh = await run(e.submit({ prompt: changed, params: GREEDY }));
    assert.equal(fresh.result.usage.cachedTokens, 0);
    assertSameAnswer(fresh, await coldRun(model, BASE, { prompt: changed, params: GREEDY }));
  });

  test('a request cancelled mid-answer leaves a slot that answers the next prompt as cold', async () => {
    const e = await engine({ slots: 1 });
    const long = e.submit({ prompt: PROMPT, params: { maxTokens: 100000, temperature: 0, ignoreEos: true } });
    const it = long[Symbol.asyncIterator]();
    for (let n = 0; n < 10; ) {
      const next = await it.next();
      assert.ok(!next.done);
      n += next.value.tokens.length;
    }
    long.cancel();
    await it.return?.();
    assert.equal((await long.result).finishReason, 'cancelled');
    assertSameAnswer(await run(e.submit({ prompt: PROMPT, params: GREEDY })), reference);
    assertSameAnswer(await run(e.submit({ prompt: OTHER, params: GREEDY })), other);
  });

  test('the host-memory prompt cache keeps and restores whole states, and every answer is as cold', async () => {
    const e = await engine({ slots: 1, promptCacheMiB: 64 });
    const promptTokens = model.tokenize(LONG, { addSpecial: true });
    const first = await run(e.submit({ prompt: promptTokens, params: GREEDY }));
    assertSameAnswer(first, await coldRun(model, BASE, { prompt: LONG, params: GREEDY }));
    // Another prompt takes the only slot: the first sequence's state is saved whole.
    assertSameAnswer(await run(e.submit({ prompt: OTHER, params: GREEDY })), other);
    assert.ok(e.stats().promptCacheSaves >= 2, 'the checkpoint and the whole state were saved');
    // Its continuation comes back: restored (the whole sequence is the new prompt's prefix).
    const next = [...promptTokens, ...first.tokens, ...model.tokenize(' The bells rang at noon.', { addSpecial: false })];
    const warm = await run(e.submit({ prompt: next, params: GREEDY }));
    assert.equal(e.stats().promptCacheRestores, 1);
    assert.equal(warm.result.usage.cachedTokens, promptTokens.length + first.tokens.length - 1);
    assertSameAnswer(warm, await coldRun(model, BASE, { prompt: next, params: GREEDY }));
    // The first prompt again: the checkpoint at its last token is restored.
    const again = await run(e.submit({ prompt: LONG, params: GREEDY }));
    assert.equal(e.stats().promptCacheRestores, 2);
    assert.equal(again.result.usage.cachedTokens, promptTokens.length - 1);
    assertSameAnswer(again, first);
  });

  test('a repeated prompt restores the state saved at its last token, every time, and answers as cold', async () => {
    const e = await engine({ slots: 1, promptCacheMiB: 64 });
    const n = model.tokenize(LONG, { addSpecial: true }).length;
    assert.ok(n >= 32, `${n} tokens: long enough for a checkpoint`);
    const cold = await coldRun(model, BASE, { prompt: LONG, params: GREEDY });
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await run(e.submit({ prompt: LONG, params: GREEDY })));
    assert.deepEqual(runs.map((r) => r.result.usage.cachedTokens), [0, n - 1, n - 1]);
    for (const r of runs) assertSameAnswer(r, cold);
    assert.equal(e.stats().promptCacheRestores, 2);
    // Without the prompt cache there is nothing to restore from.
    const plain = await engine({ slots: 1 });
    await run(plain.submit({ prompt: LONG, params: GREEDY }));
    assert.equal((await run(plain.submit({ prompt: LONG, params: GREEDY }))).result.usage.cachedTokens, 0);
    // A short prompt takes no checkpoint (its prefill costs about what a save and a restore do).
    const saves = e.stats().promptCacheSaves;
    await run(e.submit({ prompt: 'Short.', params: GREEDY }));
    const short = await run(e.submit({ prompt: 'Short.', params: GREEDY }));
    assert.equal(short.result.usage.cachedTokens, 0);
    // One save: the first short answer's whole state when the second takes the slot (the long
    // prompt's whole state is in the cache already); a checkpoint would make it two.
    assert.equal(e.stats().promptCacheSaves - saves, 1);
  });

  test('a long shared prefix in a busy slot is not copied (no partial state), and the answer is as cold', async () => {
    const e = await engine({ slots: 2 });
    const prefix = 'System: answer as the harbour museum would. '.repeat(6);
    const a = e.submit({ prompt: `${prefix}Question one: where are the ships?`, params: { maxTokens: 100000, temperature: 0, ignoreEos: true } });
    const it = a[Symbol.asyncIterator]();
    assert.ok(!(await it.next()).done);
    const promptB = `${prefix}Question two: where are the maps?`;
    const b = await run(e.submit({ prompt: promptB, params: GREEDY }));
    a.cancel();
    await it.return?.();
    await a.result;
    assert.equal(e.stats().prefixCopies, 0);
    assert.equal(b.result.usage.cachedTokens, 0);
    assertSameAnswer(b, await coldRun(model, BASE, { prompt: promptB, params: GREEDY }));
  });
});
