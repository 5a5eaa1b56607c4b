/**
 * Fit before load: llama.cpp's sizing measured in a child process (and the fallback estimate
 * read from a real GGUF header), the verdict on RAM and on each GPU device, the placement the
 * host is given, and real supervisors whose available memory is set with
 * LMSERVE_MEMORY_AVAILABLE (the test/ops knob): a model larger than the memory is refused with
 * the numbers and no host is spawned; a second model is refused naming the first one, which
 * holds part of the memory.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { measureModel } from '@lmserve/engine';
import { buildHostSpec, estimateNeed, gpuMarginBytes, judgeFit, measureNeed, parseBytes, readGgufMetadata, type MemoryNeed, type WorkerConfig } from '@lmserve/supervisor';
import { ServiceFixture, tinyBpeModel, tinyModel, waitFor } from '../service/service-fixture.js';
import { modelPath } from '../helpers.js';

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
  assert.match(verdict.message, /^small does not fit in memory: needs 0\.14 GiB \(weights 0\.02 GiB \+ KV cache 0\.00 GiB \(1 × 1024 tokens\) \+ compute 0\.12 GiB; estimated\), 0\.00 GiB free of 0\.14 GiB available \(test; 1\.00 GiB of it held by big \(ready, 1\.00 GiB\)\)/);
  assert.equal(judgeFit('small', need, { bytes: need.totalBytes, source: 'test' }, []).fits, true);
  assert.equal(parseBytes('512M'), 512 << 20);
  assert.equal(parseBytes('1.5G'), 1.5 * 2 ** 30);
  assert.equal(parseBytes('lots'), null);
});

test("llama.cpp's sizing, measured in a child process: host weights, KV cache and compute per replica", async () => {
  const need = await measureNeed(tinyBpeModel, { ...FIXTURE, replicas: 2, gpuLayers: 'auto' });
  const one = measureModel(tinyBpeModel, { gpuLayers: -1 }, { slots: 2, contextSize: 512 });
  assert.equal(need.source, 'llama.cpp');
  assert.equal(need.weightsBytes, one.host.modelBytes, 'the weights once: replicas share the model');
  assert.equal(need.kvBytes, 2 * one.host.contextBytes);
  assert.equal(need.computeBytes, 2 * one.host.computeBytes);
  assert.equal(need.totalBytes, need.weightsBytes + need.kvBytes + need.computeBytes);
  assert.deepEqual(need.devices, one.devices, 'a CPU build: no GPU device');
  assert.equal(need.placement?.layers, 3);
  await assert.rejects(measureNeed('/nonexistent/model.gguf', { ...FIXTURE, gpuLayers: 'auto' }), { code: 'MODEL_FILE_NOT_FOUND' });
  assert.equal(gpuMarginBytes({}), 1 << 30);
  assert.equal(gpuMarginBytes({ LMSERVE_GPU_MARGIN: '512M' }), 512 << 20);
});

/** A need shaped as llama.cpp reports it for a model split over two GPUs (illustrative figures). */
function gpuNeed(): MemoryNeed {
  const G = 2 ** 30;
  return {
    totalBytes: 1 * G,
    weightsBytes: 0.5 * G,
    kvBytes: 0.25 * G,
    computeBytes: 0.25 * G,
    kvTokens: 8192,
    replicas: 1,
    source: 'llama.cpp',
    devices: [
      { name: 'CUDA0', description: 'NVIDIA H200', backend: 'CUDA', needBytes: 7 * G, weightsBytes: 6 * G, kvBytes: 0.5 * G, computeBytes: 0.5 * G, freeBytes: 20 * G, totalBytes: 24 * G },
      { name: 'CUDA1', description: 'NVIDIA L4', backend: 'CUDA', needBytes: 7 * G, weightsBytes: 6 * G, kvBytes: 0.5 * G, computeBytes: 0.5 * G, freeBytes: 10 * G, totalBytes: 24 * G },
    ],
    placement: { loadGpuLayers: 41, gpuLayers: 41, layers: 41, tensorSplit: [20, 21], cpuTensors: [], fit: 'success' },
  };
}

test('the verdict on each GPU device: its need against its free memory less what loading workers are about to take there', () => {
  const ram = { bytes: 64 * 2 ** 30, source: 'test' };
  const fits = judgeFit('big', gpuNeed(), ram, []);
  assert.equal(fits.fits, true, fits.message);
  assert.match(fits.message, /CUDA1 \(NVIDIA L4\) needs 7\.00 GiB .* 10\.00 GiB free of 24\.00 GiB; 41 of 41 layers on the GPU$/);
  // A worker loading 4 GiB onto CUDA1 leaves 6 GiB there: CUDA1 is short, CUDA0 is not; RAM is fine.
  const loading = [{ worker: 'other', state: 'starting' as const, bytes: 2 ** 30, devices: { CUDA1: 4 * 2 ** 30 } }];
  const short = judgeFit('big', gpuNeed(), ram, loading);
  assert.equal(short.fits, false);
  assert.equal(short.ramFits, true);
  assert.deepEqual(short.devices.map((d) => [d.name, d.fits, d.heldBytes]), [['CUDA0', true, 0], ['CUDA1', false, 4 * 2 ** 30]]);
  assert.match(
    short.message,
    /^big does not fit in GPU memory: CUDA1 \(NVIDIA L4\) needs 7\.00 GiB \(weights 6\.00 GiB \+ KV cache 0\.50 GiB \+ compute 0\.50 GiB\), 6\.00 GiB free of 24\.00 GiB \(4\.00 GiB about to be taken by other\); 41 of 41 layers on the GPU; lower GPU_LAYERS/,
  );
  assert.doesNotMatch(short.message, /CUDA0/);
});

test("the host is given the fit's placement for GPU_LAYERS=auto, and GPU_LAYERS as set otherwise", () => {
  const config = { name: 'w', modelName: 'm', modelPath: '/m.gguf', gpuLayers: 'auto', replicas: 1, concurrency: 2, contextSize: 512, batchSize: 0, threads: 0, maxQueue: 8, promptTemplate: null } as unknown as WorkerConfig;
  const placement = { loadGpuLayers: 30, gpuLayers: 30, layers: 41, tensorSplit: [12, 18], cpuTensors: ['blk\\.11\\.ffn_(gate|up|gate_up|down).*'], fit: 'success' as const };
  const fitted = buildHostSpec(config, 1000, 'info', [3], placement);
  assert.deepEqual([fitted.gpuLayers, fitted.tensorSplit, fitted.cpuTensors], [30, [12, 18], placement.cpuTensors]);
  const none = buildHostSpec(config, 1000, 'info', [3], { ...placement, fit: 'off', loadGpuLayers: -1, tensorSplit: [], cpuTensors: [] });
  assert.deepEqual([none.gpuLayers, none.tensorSplit, none.cpuTensors], ['auto', undefined, undefined]);
  const set = buildHostSpec({ ...config, gpuLayers: 12 }, 1000, 'info', [3], placement);
  assert.deepEqual([set.gpuLayers, set.tensorSplit], [12, undefined]);
});

test("llama.cpp's sizing follows SWA_FULL: a sliding-window model's window layers keep the window, not the context", async () => {
  // tiny-swa: gemma3, 2 layers, window 32 on layer 0. 4 slots x 2048 positions, batch 32: the
  // window layer keeps 256 cells per sequence (32 + 32, padded to 256) instead of 2048.
  const swaModel = await modelPath('tiny-swa');
  const settings = { contextSize: 2048, concurrency: 4, replicas: 1, batchSize: 32, gpuLayers: 'auto' as const };
  const windowed = await measureNeed(swaModel, settings);
  const full = await measureNeed(swaModel, { ...settings, swaFull: true });
  assert.equal(windowed.kvBytes, measureModel(swaModel, { gpuLayers: -1 }, { slots: 4, contextSize: 2048, batchSize: 32 }).host.contextBytes);
  assert.ok(full.kvBytes > windowed.kvBytes * 1.5, `KV ${windowed.kvBytes} windowed, ${full.kvBytes} full`);
  // The full layer's KV is the same either way: 2048 x 4 cells; the window layer's is an eighth.
  const fullLayer = full.kvBytes / 2;
  assert.ok(Math.abs(windowed.kvBytes - (fullLayer + fullLayer / 8)) <= fullLayer * 0.05, `KV ${windowed.kvBytes} against ${fullLayer * 1.125}`);
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
    const measured = measureModel(tinyModel, { gpuLayers: -1 }, { slots: 2, contextSize: 512 }).host;
    const needed = measured.modelBytes + measured.contextBytes + measured.computeBytes;
    const gibs = (n: number) => (n / 2 ** 30).toFixed(2).replace('.', '\\.');
    assert.match(
      info.reason ?? '',
      new RegExp(`^big does not fit in memory: needs ${gibs(needed)} GiB \\(.*; llama\\.cpp's sizing\\), 0\\.06 GiB free of 0\\.06 GiB available \\(LMSERVE_MEMORY_AVAILABLE; no other model of this supervisor holds any\\)`),
    );
    assert.equal(info.memory?.needed_bytes, needed, "llama.cpp's figures, measured before the spawn");
    assert.equal(info.memory?.source, 'llama.cpp');
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
    const need = await measureNeed(tinyModel, { ...FIXTURE, gpuLayers: 'auto' });
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
