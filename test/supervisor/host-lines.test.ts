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

test("a host's OpenMP threads keep libgomp's default wait alone, spin briefly on shared cores, and the operator's setting wins", async () => {
  const { hostEnvironment, SHARED_CPU_SPIN_COUNT } = await import('@lmserve/supervisor');
  assert.deepEqual(hostEnvironment({ PATH: '/bin' }), { PATH: '/bin' });
  assert.deepEqual(hostEnvironment({ PATH: '/bin' }, false), { PATH: '/bin' });
  assert.deepEqual(hostEnvironment({ PATH: '/bin' }, true), { PATH: '/bin', GOMP_SPINCOUNT: SHARED_CPU_SPIN_COUNT });
  assert.equal(SHARED_CPU_SPIN_COUNT, '300');
  assert.deepEqual(hostEnvironment({ OMP_WAIT_POLICY: 'passive' }, true), { OMP_WAIT_POLICY: 'passive' });
  assert.deepEqual(hostEnvironment({ GOMP_SPINCOUNT: '5000' }, true), { GOMP_SPINCOUNT: '5000' });
});
