import assert from 'node:assert/strict';
import { test, describe, before, after } from 'node:test';
import { loadModel, LmError, type Engine, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

// Parsed grammars are cached per model by content: the first request with a grammar parses it
// (a miss), the next ones clone the parsed sampler (hits). The counters are the model's, so the
// tests read deltas.
describe('the grammar cache', () => {
  let model: Model;
  let engine: Engine;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
    engine = await model.createEngine({ slots: 8, contextSize: 512, maxQueue: 128 });
  });
  after(() => {
    engine.dispose();
    model.dispose();
  });

  function counters(e: Engine = engine): { hits: number; misses: number } {
    const s = e.stats();
    return { hits: s.grammarCacheHits, misses: s.grammarCacheMisses };
  }

  function delta(before: { hits: number; misses: number }, e: Engine = engine): { hits: number; misses: number } {
    const now = counters(e);
    return { hits: now.hits - before.hits, misses: now.misses - before.misses };
  }

  test('the same grammar 10 times: 1 miss, 9 hits, and every output conforms', async () => {
    const start = counters();
    const grammar = 'root ::= ("yes" | "no")';
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, seed) =>
        engine.submit({ prompt: `Question ${seed}?`, params: { grammar, seed, temperature: 1, maxTokens: 16 } }).result,
      ),
    );
    assert.deepEqual(delta(start), { hits: 9, misses: 1 });
    for (const [seed, r] of results.entries()) {
      assert.ok(r.text === 'yes' || r.text === 'no', `seed ${seed}: ${JSON.stringify(r.text)}`);
      assert.equal(r.finishReason, 'stop');
    }
    // Sequentially too: each request gets its own clone, fresh at the grammar's start.
    const again = counters();
    for (let seed = 10; seed < 20; seed++) {
      const r = await engine.submit({ prompt: `Again ${seed}?`, params: { grammar, seed, temperature: 1, maxTokens: 16 } }).result;
      assert.ok(r.text === 'yes' || r.text === 'no', `seed ${seed}: ${JSON.stringify(r.text)}`);
      assert.equal(r.finishReason, 'stop');
    }
    assert.deepEqual(delta(again), { hits: 10, misses: 0 });
  });

  test('two concurrent requests with the same grammar do not share its state', async () => {
    const grammar = 'root ::= "ab" | "ac"';
    const start = counters();
    // Had the clones shared their stacks, the second "a" accepted would find them past it.
    for (let round = 0; round < 3; round++) {
      const pair = await Promise.all(
        [0, 1].map((i) =>
          engine.submit({ prompt: `Pair ${round} ${i}:`, params: { grammar, seed: round * 2 + i, temperature: 1, maxTokens: 8 } }).result,
        ),
      );
      for (const r of pair) {
        assert.ok(r.text === 'ab' || r.text === 'ac', `round ${round}: ${JSON.stringify(r.text)}`);
        assert.equal(r.finishReason, 'stop');
      }
    }
    assert.deepEqual(delta(start), { hits: 5, misses: 1 });
  });

  test('the root is part of the key, and the cache is shared by every engine of the model', async () => {
    const grammar = 'root ::= "yes" | "no"\nother ::= "maybe"';
    const start = counters();
    const a = await engine.submit({ prompt: 'Q:', params: { grammar, seed: 1, maxTokens: 8 } }).result;
    assert.ok(a.text === 'yes' || a.text === 'no', JSON.stringify(a.text));
    const b = await engine.submit({ prompt: 'Q:', params: { grammar, grammarRoot: 'other', seed: 1, maxTokens: 8 } }).result;
    assert.equal(b.text, 'maybe');
    assert.deepEqual(delta(start), { hits: 0, misses: 2 });

    const second = await model.createEngine({ slots: 2, contextSize: 256 });
    try {
      const c = await second.submit({ prompt: 'Q:', params: { grammar, grammarRoot: 'other', seed: 2, maxTokens: 8 } }).result;
      assert.equal(c.text, 'maybe');
      assert.deepEqual(delta(start, second), { hits: 1, misses: 2 });
    } finally {
      second.dispose();
    }
  });

  test('invalid grammars are refused on every try and never cached', () => {
    const start = counters();
    for (let i = 0; i < 3; i++) {
      assert.throws(
        () => engine.submit({ prompt: 'x', params: { grammar: 'answer ::= "yes"' } }),
        (err: unknown) => err instanceof LmError && err.code === 'INVALID_GRAMMAR' && /root rule 'root' is not defined/.test(err.message),
      );
      const wide = `root ::= ${Array.from({ length: 2000 }, (_, k) => `"w${k}"`).join(' | ')}`;
      assert.throws(
        () => engine.submit({ prompt: 'x', params: { grammar: wide } }),
        (err: unknown) => err instanceof LmError && err.code === 'INVALID_GRAMMAR' && /too complex/.test(err.message),
      );
    }
    assert.deepEqual(delta(start), { hits: 0, misses: 6 });
  });

  test('the least recently used grammar goes beyond 64 entries', async () => {
    const first = 'root ::= "first"';
    const start = counters();
    assert.equal((await engine.submit({ prompt: 'A:', params: { grammar: first, maxTokens: 16 } }).result).text, 'first');
    // 64 other grammars push it out.
    await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        engine.submit({ prompt: 'B:', params: { grammar: `root ::= "g${i}"`, maxTokens: 1 } }).result,
      ),
    );
    assert.deepEqual(delta(start), { hits: 0, misses: 65 });
    assert.equal((await engine.submit({ prompt: 'A:', params: { grammar: first, maxTokens: 16 } }).result).text, 'first');
    assert.deepEqual(delta(start), { hits: 0, misses: 66 });
    // The most recent ones are still there.
    await engine.submit({ prompt: 'B:', params: { grammar: 'root ::= "g63"', maxTokens: 1 } }).result;
    assert.deepEqual(delta(start), { hits: 1, misses: 66 });
  });
});
