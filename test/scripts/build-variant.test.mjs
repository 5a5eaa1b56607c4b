import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { buildPlan, detectVariant } from '../../scripts/build-addon.mjs';

const hasGpu = spawnSync('nvidia-smi', ['-L'], { stdio: 'ignore' }).status === 0;

test('an explicit request wins: flag first, then LMSERVE_GPU', () => {
  assert.equal(detectVariant(['--cuda'], {}), 'cuda');
  assert.equal(detectVariant(['--cpu'], { LMSERVE_GPU: 'cuda' }), 'cpu');
  assert.equal(detectVariant([], { LMSERVE_GPU: 'CUDA' }), 'cuda');
  assert.equal(detectVariant([], { LMSERVE_GPU: 'vulkan' }), 'vulkan');
});

test('an unknown variant is an error that names LMSERVE_GPU', () => {
  assert.throws(() => detectVariant([], { LMSERVE_GPU: 'rocm-ish' }), /LMSERVE_GPU/);
});

test('without a request, CUDA only when nvidia-smi finds a GPU (nvcc alone is not enough)', { skip: process.platform === 'darwin' }, () => {
  assert.equal(detectVariant([], {}), hasGpu ? 'cuda' : 'cpu');
});

test('build/ is configured afresh whenever its defines may differ from the wanted ones', () => {
  const stamp = '{"defines":["GGML_CUDA=ON","CMAKE_CUDA_ARCHITECTURES=89"]}';
  const other = '{"defines":["GGML_CUDA=ON","CMAKE_CUDA_ARCHITECTURES=90"]}';
  // Nothing configured yet: cmake-js build configures.
  assert.equal(buildPlan({ force: false, configured: false, previousStamp: null, stamp }), 'build');
  // The last finished build had these defines: the build tool decides what changed.
  assert.equal(buildPlan({ force: false, configured: true, previousStamp: stamp, stamp }), 'incremental');
  assert.equal(buildPlan({ force: true, configured: true, previousStamp: stamp, stamp }), 'build');
  // Other defines (another variant or CUDA architecture): cmake-js build would keep the old cache.
  assert.equal(buildPlan({ force: false, configured: true, previousStamp: other, stamp }), 'rebuild');
  // Configured by a build that never finished (no stamp): its cache may hold other defines.
  assert.equal(buildPlan({ force: false, configured: true, previousStamp: null, stamp }), 'rebuild');
});
