import assert from 'node:assert/strict';
import { test } from 'node:test';
import { asJsonLine } from '@lmserve/supervisor';

test("a host's JSON lines pass as they are; anything else is wrapped with the worker's name", () => {
  const json = '{"ts":"x","level":"info","component":"host","msg":"ready"}';
  assert.equal(asJsonLine(json, 'alpha'), json);
  const wrapped = JSON.parse(asJsonLine('llama_model_load: error loading model', 'alpha'));
  assert.equal(wrapped.worker, 'alpha');
  assert.equal(wrapped.component, 'host');
  assert.equal(wrapped.msg, 'llama_model_load: error loading model');
  assert.equal(wrapped.raw, true);
  assert.ok(!Number.isNaN(Date.parse(wrapped.ts)));
});

test("a host's OpenMP threads wait passively unless the operator set OMP_WAIT_POLICY", async () => {
  const { hostEnvironment } = await import('@lmserve/supervisor');
  assert.equal(hostEnvironment({ PATH: '/bin' }).OMP_WAIT_POLICY, 'passive');
  assert.equal(hostEnvironment({ PATH: '/bin' }).PATH, '/bin');
  assert.equal(hostEnvironment({ OMP_WAIT_POLICY: 'active' }).OMP_WAIT_POLICY, 'active');
});
