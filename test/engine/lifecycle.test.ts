import assert from 'node:assert/strict';
import { test, describe } from 'node:test';
import { loadModel } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

describe('dispose and resource lifetime', () => {
  test('dispose twice is safe and later calls throw DISPOSED', async () => {
    const model = await loadModel(await modelPath('tiny'));
    const engine = await model.createEngine({ slots: 2, contextSize: 128 });
    engine.dispose();
    engine.dispose();
    assert.throws(() => engine.submit({ prompt: 'x' }), { code: 'DISPOSED' });
    model.dispose();
    model.dispose();
    assert.equal(model.disposed, true);
    assert.throws(() => model.tokenize('x'), { code: 'DISPOSED' });
    assert.throws(() => model.generate('x'), { code: 'DISPOSED' });
    await assert.rejects(model.createEngine(), { code: 'DISPOSED' });
  });

  test('disposing an engine mid-generation fails its requests with DISPOSED', async () => {
    const model = await loadModel(await modelPath('tiny'));
    try {
      const engine = await model.createEngine({ slots: 2, contextSize: 512 });
      const generation = engine.submit({ prompt: 'long', params: { maxTokens: 100000, ignoreEos: true } });
      for await (const _ of generation) break;
      const running = engine.submit({ prompt: 'long', params: { maxTokens: 100000, ignoreEos: true } });
      engine.dispose();
      await assert.rejects(running.result, { code: 'DISPOSED' });
    } finally {
      model.dispose();
    }
  });

  test('a model loaded twice in one process shares its weights', async () => {
    const path = await modelPath('tiny');
    const a = await loadModel(path);
    const b = await loadModel(path);
    a.dispose();
    const result = await b.generate('still here', { maxTokens: 4, ignoreEos: true }).result;
    assert.equal(result.usage.tokensOut, 4);
    b.dispose();
  });

  test('200 load/generate/dispose cycles keep RSS bounded', async () => {
    const path = await modelPath('tiny');
    const cycle = async () => {
      const model = await loadModel(path);
      const result = await model.generate('cycle', { maxTokens: 4, ignoreEos: true }, { contextSize: 256 }).result;
      assert.equal(result.usage.tokensOut, 4);
      model.dispose();
    };
    for (let i = 0; i < 20; i++) await cycle();
    globalThis.gc?.();
    const warm = process.memoryUsage.rss();
    for (let i = 0; i < 180; i++) await cycle();
    globalThis.gc?.();
    const grown = process.memoryUsage.rss() - warm;
    // A leak of the model (17 MB) or a context per cycle would add gigabytes over 180 cycles.
    assert.ok(grown < 64 * 1024 * 1024, `RSS grew by ${(grown / 1048576).toFixed(1)} MiB over 180 cycles`);
  });
});
