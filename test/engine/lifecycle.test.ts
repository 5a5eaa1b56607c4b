import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { test, describe } from 'node:test';
import { addonPath, loadModel, reportedNativeMemory } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

interface RawEvent {
  type: string;
  id: number;
  code?: string;
}
interface RawEngine {
  submit(id: number, prompt: string, params: object): unknown;
  stats(): { slotsBusy: number; queued: number };
  dispose(): void;
}
interface RawBinding {
  ModelLoader: new (path: string, options: object) => {
    load(): Promise<{ createEngine(o: object, cb: (e: RawEvent[]) => void): Promise<RawEngine>; dispose(): void }>;
  };
}

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

  test('disposing an engine with one running and one queued request fails both with DISPOSED', async () => {
    const model = await loadModel(await modelPath('tiny'));
    try {
      const engine = await model.createEngine({ slots: 1, contextSize: 512 });
      const running = engine.submit({ prompt: 'first', params: { maxTokens: 100000, ignoreEos: true } });
      // Wait for its first token without leaving the iterator (leaving it would cancel the
      // generation and free the slot): it holds the only slot now.
      await running[Symbol.asyncIterator]().next();
      const queued = engine.submit({ prompt: 'second', params: { maxTokens: 4, ignoreEos: true } });
      assert.equal(engine.stats().queued, 1);
      engine.dispose();
      await assert.rejects(running.result, { code: 'DISPOSED' });
      await assert.rejects(queued.result, { code: 'DISPOSED' });
    } finally {
      model.dispose();
    }
  });

  test('the native loop itself ends a running and a queued request with DISPOSED on stop', async () => {
    // Engine.dispose() fails its generations in JS at once; this checks what the addon sends.
    const raw = createRequire(import.meta.url)(addonPath()) as RawBinding;
    const model = await new raw.ModelLoader(await modelPath('tiny'), {}).load();
    const events: RawEvent[] = [];
    let notify: (() => void) | undefined;
    const engine = await model.createEngine({ slots: 1, contextSize: 512 }, (batch) => {
      events.push(...batch);
      notify?.();
    });
    const until = async (done: () => boolean) => {
      while (!done()) await new Promise<void>((resolve) => (notify = resolve));
    };
    try {
      engine.submit(1, 'first', { maxTokens: 100000, ignoreEos: true });
      await until(() => events.some((e) => e.id === 1 && e.type === 'tokens'));
      engine.submit(2, 'second', { maxTokens: 4, ignoreEos: true });
      const stats = engine.stats();
      assert.equal(stats.slotsBusy, 1);
      assert.equal(stats.queued, 1);
      engine.dispose();
      await until(() => events.filter((e) => e.type !== 'tokens').length === 2);
      const ends = events.filter((e) => e.type !== 'tokens').map((e) => ({ id: e.id, type: e.type, code: e.code }));
      assert.deepEqual(ends.sort((a, b) => a.id - b.id), [
        { id: 1, type: 'error', code: 'DISPOSED' },
        { id: 2, type: 'error', code: 'DISPOSED' },
      ]);
    } finally {
      engine.dispose();
      model.dispose();
    }
  });

  test('a model disposed while createEngine runs: the engine is disposed and the call rejects DISPOSED', async () => {
    const model = await loadModel(await modelPath('tiny'));
    const before = reportedNativeMemory();
    const pending = model.createEngine({ slots: 2, contextSize: 256 });
    model.dispose();
    await assert.rejects(pending, { code: 'DISPOSED' });
    // Neither the engine's context nor the weights are still reported as held.
    assert.ok(reportedNativeMemory() < before, `${reportedNativeMemory()} >= ${before}`);
  });

  test('threads 0 means one per core, as llama-server counts them, never more than the machine has', async () => {
    // llama_context_default_params alone would give 4 on any machine (twice the cores of a
    // 2-core one); llama-server uses common_cpu_get_num_math(), and so do we.
    const model = await loadModel(await modelPath('tiny'));
    try {
      const auto = await model.createEngine({ slots: 1, contextSize: 128 });
      const { threads } = auto.options;
      auto.dispose();
      assert.ok(Number.isInteger(threads) && threads >= 1 && threads <= availableParallelism(), `threads ${threads} on ${availableParallelism()} CPUs`);
      const set = await model.createEngine({ slots: 1, contextSize: 128, threads: 3 });
      assert.equal(set.options.threads, 3);
      set.dispose();
    } finally {
      model.dispose();
    }
  });

  test("an engine's memory is reported to V8 while it lives and taken back on dispose", async () => {
    // process.memoryUsage().external on Node 20 counts ArrayBuffer backing stores only, not
    // what AdjustExternalMemory reports (checked: it does not move when an engine is created),
    // so the check reads V8's counter itself.
    const model = await loadModel(await modelPath('tiny'));
    try {
      const before = reportedNativeMemory();
      const engine = await model.createEngine({ slots: 4, contextSize: 2048 });
      const { memoryBytes } = engine.options;
      const { layerCount, vocabSize } = model.info;
      // At least one f16 K and V value per layer and cell, and one row of logits per slot.
      assert.ok(memoryBytes >= 2 * layerCount * 4 * 2048 * 2 + 4 * vocabSize * 4, `${memoryBytes}`);
      const created = reportedNativeMemory();
      assert.ok(created - before >= memoryBytes, `grew by ${created - before}, engine holds ${memoryBytes}`);
      const larger = await model.createEngine({ slots: 4, contextSize: 4096 });
      // Twice the cells: the KV part doubles, the logits and the batch stay.
      const kv = larger.options.memoryBytes - memoryBytes;
      assert.ok(kv > 0 && kv < memoryBytes, `KV of 4 × 2048 more cells: ${kv}`);
      larger.dispose();
      engine.dispose();
      const disposed = reportedNativeMemory();
      assert.ok(created - disposed >= memoryBytes, `shrank by ${created - disposed}, engine held ${memoryBytes}`);
      assert.ok(Math.abs(disposed - before) < 1024 * 1024, `back to ${disposed} from ${before}`);
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
