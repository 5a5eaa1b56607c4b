/**
 * measureModel: llama.cpp's own sizing of a model and an engine context (a no_alloc load, no
 * buffer allocated), the figures fit-before-load judges with. The test that it is right: the
 * engine created afterwards with the same options holds exactly what was measured, per device.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModel, measureModel, systemInfo } from '@lmserve/engine';
import { modelPath, tempDir } from '../helpers.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CASES = [
  { preset: 'tiny', engine: { slots: 2, contextSize: 512 } },
  { preset: 'tiny', engine: { slots: 4, contextSize: 1024, batchSize: 64 } },
  { preset: 'tiny-bpe', engine: { slots: 3, contextSize: 256 } },
] as const;

for (const { preset, engine: options } of CASES) {
  test(`the measurement of ${preset} with ${JSON.stringify(options)} is what the engine then holds`, async () => {
    const path = await modelPath(preset);
    const measured = measureModel(path, {}, options);
    const model = await loadModel(path);
    const engine = await model.createEngine(options);
    try {
      const held = engine.memory();
      const host = held.find((d) => d.name === 'CPU');
      assert.ok(host, JSON.stringify(held));
      assert.deepEqual(
        { model: measured.host.modelBytes, context: measured.host.contextBytes, compute: measured.host.computeBytes },
        { model: host.modelBytes, context: host.contextBytes, compute: host.computeBytes },
      );
      assert.ok(measured.host.modelBytes > 0 && measured.host.contextBytes > 0 && measured.host.computeBytes > 0);
      // The GPU-like devices: the same list, the same bytes (none on a CPU build).
      assert.deepEqual(
        measured.devices.map((d) => [d.name, d.modelBytes, d.contextBytes, d.computeBytes]),
        held.filter((d) => d.name !== 'CPU').map((d) => [d.name, d.modelBytes, d.contextBytes, d.computeBytes]),
      );
      assert.equal(measured.layers, model.info.layerCount + 1);
    } finally {
      engine.dispose();
      model.dispose();
    }
  });
}

test('the KV cache measured grows with the cells; the weights do not', async () => {
  const path = await modelPath('tiny');
  const one = measureModel(path, {}, { slots: 2, contextSize: 512 });
  const two = measureModel(path, {}, { slots: 4, contextSize: 512 });
  assert.equal(two.host.modelBytes, one.host.modelBytes);
  assert.equal(two.host.contextBytes, 2 * one.host.contextBytes);
});

test('a CPU build: no GPU device, no layer offloaded, no fit run; GPU_LAYERS is reported as asked', { skip: systemInfo().supportsGpuOffload }, async () => {
  const path = await modelPath('tiny');
  const auto = measureModel(path, { gpuLayers: -1 }, { slots: 1, contextSize: 128 });
  assert.deepEqual({ devices: auto.devices, gpuLayers: auto.gpuLayers, fit: auto.fit, load: auto.loadGpuLayers }, { devices: [], gpuLayers: 0, fit: 'off', load: -1 });
  const set = measureModel(path, { gpuLayers: 2 }, { slots: 1, contextSize: 128 });
  assert.equal(set.loadGpuLayers, 2);
  assert.equal(set.gpuLayers, 0);
});

test('a file that is not a model, or bad options, are refused with a code', async () => {
  const dir = tempDir();
  try {
    const fake = join(dir.path, 'fake.gguf');
    writeFileSync(fake, 'GGUF but nothing else that a header needs');
    assert.throws(() => measureModel(fake), { code: 'INVALID_MODEL_FILE' });
    assert.throws(() => measureModel(join(dir.path, 'absent.gguf')), { code: 'MODEL_FILE_NOT_FOUND' });
    const path = await modelPath('tiny');
    assert.throws(() => measureModel(path, {}, { slots: 0 }), { code: 'INVALID_REQUEST', message: /options\.slots/ });
    assert.throws(() => measureModel(path, { gpuLayers: -5 }), { code: 'INVALID_REQUEST', message: /load\.gpuLayers/ });
  } finally {
    dir.cleanup();
  }
});
