/**
 * How the model hosts' OpenMP threads wait (hostEnvironment): libgomp's default while the
 * service's models fit the machine's cores, GOMP_SPINCOUNT=300 when their threads together ask
 * for more; what the operator set wins. Read from each host's real environment.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { afterEach, describe, test } from 'node:test';
import { ServiceFixture, tinyModel } from './service-fixture.js';

function hostEnv(pid: number): Record<string, string> {
  const pairs = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
}

async function hostPid(service: ServiceFixture, name: string): Promise<number> {
  const info = await service.waitReady(name);
  assert.ok(info.pid, `${name} has a host`);
  return info.pid;
}

describe('OpenMP wait of the model hosts', { skip: process.platform !== 'linux' && 'reads /proc' }, () => {
  let service: ServiceFixture | undefined;
  afterEach(async () => {
    await service?.cleanup();
    service = undefined;
  });

  test('one model on its cores: libgomp default (no GOMP_SPINCOUNT, no OMP_WAIT_POLICY)', async () => {
    service = new ServiceFixture();
    await service.configure({ alpha: { model: tinyModel, env: { MODEL_THREADS: '1' } } });
    await service.start(['--all'], { env: { OMP_WAIT_POLICY: undefined, GOMP_SPINCOUNT: undefined } });
    const env = hostEnv(await hostPid(service, 'alpha'));
    assert.equal(env.LMSERVE_WORKER, 'alpha');
    assert.equal(env.GOMP_SPINCOUNT, undefined);
    assert.equal(env.OMP_WAIT_POLICY, undefined);
  });

  test('models asking for more threads than cores: GOMP_SPINCOUNT=300 in every host; the operator wins', async () => {
    service = new ServiceFixture();
    const cores = String(availableParallelism());
    await service.configure({ alpha: { model: tinyModel, env: { MODEL_THREADS: cores } }, beta: { model: tinyModel, env: { MODEL_THREADS: '1' } } });
    await service.start(['--all'], { env: { OMP_WAIT_POLICY: undefined, GOMP_SPINCOUNT: undefined } });
    for (const name of ['alpha', 'beta']) assert.equal(hostEnv(await hostPid(service, name)).GOMP_SPINCOUNT, '300');
    await service.cleanup();

    service = new ServiceFixture();
    await service.configure({ alpha: { model: tinyModel, env: { MODEL_THREADS: cores } }, beta: { model: tinyModel, env: { MODEL_THREADS: '1' } } });
    await service.start(['--all'], { env: { OMP_WAIT_POLICY: 'passive', GOMP_SPINCOUNT: undefined } });
    const env = hostEnv(await hostPid(service, 'alpha'));
    assert.equal(env.OMP_WAIT_POLICY, 'passive');
    assert.equal(env.GOMP_SPINCOUNT, undefined);
  });
});
