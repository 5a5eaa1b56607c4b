/**
 * Models with sliding-window attention (gemma 2/3, gpt-oss, ...) on the generated `tiny-swa`
 * model (gemma3 architecture, layer 0 attends to the last 32 positions, layer 1 to all). By
 * default (swaFull: false, as llama-server) the window layers keep only the window plus a batch
 * of cells per sequence, overwriting older positions; a cached prompt may then be reused only
 * while the cells its window needs are still there, else the answer silently changes (the first
 * test fails without the engine's WindowHolds check: cachedTokens 32 and other tokens).
 */
import assert from 'node:assert/strict';
import { test, describe, before, after } from 'node:test';
import { loadModel, type Engine, type EngineOptions, type Model } from '@lmserve/engine';
import type { GenerationParams } from '@lmserve/protocol';
import { modelPath } from '../helpers.js';
import { assertSameAnswer, run, type Run } from './generation-helpers.js';

const PROMPT = 'The harbour town woke slowly that morning. Fishermen checked their nets while the baker pulled the first loaves from a stone oven.';
const GREEDY: GenerationParams = { maxTokens: 40, temperature: 0, ignoreEos: true, logprobs: 2 };
// With batchSize 32 each sequence's window layer has 256 cells (32 + 32, padded to 256): a
// sequence longer than that overwrites its oldest positions.
const LONG = 600;

for (const kvUnified of [false, true]) {
  describe(`sliding-window attention (kvUnified: ${kvUnified})`, () => {
    let model: Model;
    let reference: Run;
    const engines: Engine[] = [];
    const engine = async (options: EngineOptions = {}) => {
      const e = await model.createEngine({ slots: 1, contextSize: 2048, batchSize: 32, kvUnified, ...options });
      engines.push(e);
      return e;
    };
    before(async () => {
      model = await loadModel(await modelPath('tiny-swa'));
      // The answer of a fresh engine, to which every later one must be identical.
      const cold = await model.createEngine({ slots: 1, contextSize: 2048, batchSize: 32, kvUnified });
      try {
        reference = await run(cold.submit({ prompt: PROMPT, params: GREEDY }));
      } finally {
        cold.dispose();
      }
      assert.equal(reference.result.usage.cachedTokens, 0);
    });
    after(() => {
      for (const e of engines) e.dispose();
      model.dispose();
    });

    test('swaFull defaults to false and must be a boolean', async () => {
      const e = await engine();
      assert.equal(e.options.swaFull, false);
      const full = await engine({ swaFull: true });
      assert.equal(full.options.swaFull, true);
      await assert.rejects(engine({ swaFull: 'yes' as unknown as boolean }), (err: Error & { code?: string; field?: string }) => {
        assert.equal(err.code, 'INVALID_REQUEST');
        assert.equal(err.field, 'options.swaFull');
        return true;
      });
    });

    test('a prompt whose window cells were overwritten is prefilled again and answers as cold', async () => {
      const e = await engine();
      const long = await run(e.submit({ prompt: PROMPT, params: { maxTokens: LONG, temperature: 0, ignoreEos: true } }));
      assert.equal(long.tokens.length, LONG);
      const again = await run(e.submit({ prompt: PROMPT, params: GREEDY }));
      assert.equal(again.result.usage.cachedTokens, 0, 'the overwritten window is not reused');
      assert.deepEqual(again.tokens, reference.tokens);
      assert.deepEqual(again.logprobs, reference.logprobs);
    });

    test('a prompt whose window cells are still there is reused and answers as cold', async () => {
      const e = await engine();
      await run(e.submit({ prompt: PROMPT, params: { maxTokens: 20, temperature: 0, ignoreEos: true } }));
      const again = await run(e.submit({ prompt: PROMPT, params: GREEDY }));
      const promptTokens = again.result.usage.tokensIn;
      assert.equal(again.result.usage.cachedTokens, promptTokens - 1, 'all but the last prompt token reused');
      assert.deepEqual(again.tokens, reference.tokens);
      assert.deepEqual(again.logprobs, reference.logprobs);
    });

    test('swaFull: true keeps every position: the prompt is reused after a long answer', async () => {
      const e = await engine({ swaFull: true });
      await run(e.submit({ prompt: PROMPT, params: { maxTokens: LONG, temperature: 0, ignoreEos: true } }));
      const again = await run(e.submit({ prompt: PROMPT, params: GREEDY }));
      assert.equal(again.result.usage.cachedTokens, again.result.usage.tokensIn - 1);
      assert.deepEqual(again.tokens, reference.tokens);
      assert.deepEqual(again.logprobs, reference.logprobs);
    });

    const prefix = 'System: answer as the harbour museum would. '.repeat(8);
    const promptA = `${prefix}Question one: where are the ships?`;
    const promptB = `${prefix}Question two: where are the maps?`;
    const coldB = async () => {
      const cold = await engine({ prefixSharing: false });
      return run(cold.submit({ prompt: promptB, params: GREEDY }));
    };
    /** B submitted while A (no end) has generated `generated` tokens; A is cancelled after. */
    const besideA = async (e: Engine, generated: number) => {
      const a = e.submit({ prompt: promptA, params: { maxTokens: 100000, temperature: 0, ignoreEos: true } });
      const it = a[Symbol.asyncIterator]();
      for (let n = 0; n < generated; ) {
        const next = await it.next();
        assert.ok(!next.done);
        n += next.value.tokens.length;
      }
      const b = await run(e.submit({ prompt: promptB, params: GREEDY }));
      a.cancel();
      await it.return?.();
      await a.result;
      return b;
    };

    test('a prefix a busy slot holds with its window is copied, and the answer is as cold', async () => {
      // Default batch (512): 768 window cells per sequence, nothing overwritten yet.
      const e = await engine({ slots: 2, batchSize: 512 });
      const b = await besideA(e, 1);
      const shared = b.result.usage.cachedTokens ?? 0;
      assert.ok(shared > 32, `copied ${shared} tokens`);
      assert.equal(e.stats().prefixCopies, 1);
      assertSameAnswer(b, await coldB());
    });

    test('a prefix whose window the busy slot has overwritten is not copied, and the answer is as cold', async () => {
      const e = await engine({ slots: 2 });
      const b = await besideA(e, LONG);
      assert.equal(b.result.usage.cachedTokens, 0);
      assert.equal(e.stats().prefixCopies, 0);
      assertSameAnswer(b, await coldB());
    });
  });
}
