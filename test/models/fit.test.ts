/**
 * Fit before load: the estimate read from a real GGUF header, and real supervisors whose
 * available memory is set with LMSERVE_MEMORY_AVAILABLE (the test/ops knob): a model larger
 * than the memory is refused with the numbers and no host is spawned; a second model is refused
 * naming the first one, which holds part of the memory.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { estimateNeed, judgeFit, parseBytes, readGgufMetadata } from '@lmserve/supervisor';
import { ServiceFixture, tinyBpeModel, tinyModel, waitFor } from '../service/service-fixture.js';

// The fixture's workers: CTX_SIZE 512, WORKER_CONCURRENCY 2, one replica, the default batch.
const FIXTURE = { contextSize: 512, concurrency: 2, replicas: 1, batchSize: 0 };

test('the GGUF header reader finds the shapes the estimate needs (arrays skipped, their length kept)', async () => {
  const meta = await readGgufMetadata(tinyBpeModel);
  assert.equal(meta.values.get('general.architecture'), 'qwen2');
  assert.equal(meta.values.get('qwen2.block_count'), 2);
  assert.equal(meta.values.get('qwen2.attention.head_count_kv'), 2);
  assert.equal(meta.values.get('tokenizer.ggml.tokens.length'), 151_936);
});

test('the estimate: weights (the file), KV cache n_layer × tokens × (k + v) × 2 bytes per replica, compute buffers', async () => {
  const need = await estimateNeed(tinyBpeModel, { ...FIXTURE, replicas: 2 });
  // qwen2 tiny-bpe: 2 layers, 64 wide, 4 heads (key length 16), 2 KV heads.
  assert.equal(need.kvBytes, 2 * 1024 * (16 * 2 + 16 * 2) * 2 * 2);
  assert.equal(need.kvTokens, 1024);
  assert.equal(need.computeBytes, (512 * (151_936 + 8 * 64) * 4 + (64 << 20)) * 2);
  assert.equal(need.totalBytes, need.weightsBytes + need.kvBytes + need.computeBytes);
  const twice = await estimateNeed(tinyBpeModel, { ...FIXTURE, contextSize: 1024, replicas: 2 });
  assert.equal(twice.kvBytes, need.kvBytes * 2, 'the KV cache grows with CTX_SIZE');
});

test('the verdict names what is needed, what is free and who holds the rest', async () => {
  const need = await estimateNeed(tinyModel, FIXTURE);
  const verdict = judgeFit('small', need, { bytes: need.totalBytes, source: 'test' }, [{ worker: 'big', state: 'ready', bytes: 1 << 30 }]);
  assert.equal(verdict.fits, false);
  assert.match(verdict.message, /^small does not fit in memory: needs 0\.14 GiB \(weights 0\.02 GiB \+ KV cache 0\.00 GiB \(1 × 1024 tokens\) \+ compute 0\.12 GiB\), 0\.00 GiB free of 0\.14 GiB available \(test; 1\.00 GiB of it held by big \(ready, 1\.00 GiB\)\)/);
  assert.equal(judgeFit('small', need, { bytes: need.totalBytes, source: 'test' }, []).fits, true);
  assert.equal(parseBytes('512M'), 512 << 20);
  assert.equal(parseBytes('1.5G'), 1.5 * 2 ** 30);
  assert.equal(parseBytes('lots'), null);
});

describe('a model larger than the memory it is given', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({ big: { model: tinyModel } });
    await service.start(['--all'], { env: { LMSERVE_MEMORY_AVAILABLE: '64M' } });
  });
  after(() => service.cleanup());

  test('is refused with the numbers, before any host is spawned', async () => {
    const info = await service.waitState('big', 'failed', 60_000);
    assert.match(info.reason ?? '', /^big does not fit in memory: needs 0\.14 GiB .* 0\.06 GiB free of 0\.06 GiB available \(LMSERVE_MEMORY_AVAILABLE; no other model of this supervisor holds any\)/);
    assert.equal(info.pid, null);
    assert.deepEqual(
      { fits: info.memory?.fits, available: info.memory?.available_bytes, source: info.memory?.available_source },
      { fits: false, available: 64 << 20, source: 'LMSERVE_MEMORY_AVAILABLE' },
    );
    const res = await fetch(service.url('big', '/readyz'));
    assert.equal(res.status, 503);
    assert.match(((await res.json()) as { reason: string }).reason, /does not fit in memory/);
    const { body } = await service.admin('GET', '/admin/events?worker=big');
    const events = (body.events as Array<{ event: { code: string; data: Record<string, any> } }>).map((e) => e.event);
    const failed = events.find((e) => e.code === 'model.load_failed');
    assert.equal(failed?.data.fit.needed_bytes, info.memory?.needed_bytes);
    assert.ok(!events.some((e) => e.code === 'host.spawned'), 'no host was spawned');
  });
});

describe('two models that fit one at a time', () => {
  const service = new ServiceFixture();

  before(async () => {
    const need = await estimateNeed(tinyModel, FIXTURE);
    // Room for one model and 8 MiB: not for a second once the first holds its weights.
    await service.configure({ first: { model: tinyModel }, second: { model: tinyModel } });
    await service.start(['first'], { env: { LMSERVE_MEMORY_AVAILABLE: String(need.totalBytes + (8 << 20)) } });
  });
  after(() => service.cleanup());

  test('the second is refused, naming the first and what it holds; stopping the first lets it load', async () => {
    await service.waitReady('first', 60_000);
    assert.equal((await service.admin('POST', '/admin/workers/second/start')).status, 200);
    const refused = await service.waitState('second', 'failed', 60_000);
    assert.match(refused.reason ?? '', /second does not fit in memory: .* held by first \(ready, 0\.02 GiB\)/);
    assert.deepEqual(refused.memory?.held_by.map((h) => h.worker), ['first']);
    await service.admin('POST', '/admin/workers/first/stop');
    assert.equal((await service.admin('POST', '/admin/workers/second/start')).status, 200);
    await waitFor('second ready', async () => ((await service.worker('second')).state === 'ready' ? true : undefined), 60_000);
  });
});
