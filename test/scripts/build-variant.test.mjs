import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { detectVariant } from '../../scripts/build-addon.mjs';

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
