/**
 * Admin REST and the CLI against a running supervisor; configuration errors stop only the
 * worker they belong to.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyBpeModel, tinyModel } from './service-fixture.js';

describe('admin REST, CLI and configuration errors', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({
      alpha: { model: tinyModel, env: { API_KEY: 'alpha-key' } },
      beta: { model: tinyBpeModel },
      broken: { model: tinyModel, env: { WORKER_CONCURRENCY: 'abc' } },
      // No MODEL_URL: with one, the worker would download its model (test/models/).
      missing: { model: join(service.dir, 'nowhere.gguf') },
      garbage: { model: join(service.envsDir, 'supervisor.env') },
    });
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
  });

  after(() => service.cleanup());

  const cli = (...args: string[]) => service.cli(args);

  test('admin calls need the bearer token', async () => {
    for (const token of [null, 'wrong-token']) {
      const res = await service.admin('GET', '/admin/workers', token);
      assert.equal(res.status, 401);
      assert.equal(res.body.error.code, 'UNAUTHORIZED');
      const post = await service.admin('POST', '/admin/workers/alpha/stop', token);
      assert.equal(post.status, 401);
    }
    assert.equal((await service.worker('alpha')).state, 'ready');
  });

  test('a worker with API_KEY needs it on /v1 but not on its health probes', async () => {
    const body = { input: 'key?', params: { max_tokens: 2 } };
    for (const headers of [{}, { authorization: 'Bearer nope' }]) {
      const res = await service.complete('alpha', body, { headers });
      assert.equal(res.status, 401);
      assert.equal(res.body.error.code, 'UNAUTHORIZED');
    }
    const ok = await service.complete('alpha', body, { headers: { authorization: 'Bearer alpha-key' } });
    assert.equal(ok.status, 200);
    assert.equal((await fetch(service.url('alpha', '/readyz'))).status, 200);
    assert.equal((await service.complete('beta', body)).status, 200);
  });

  test('an unknown worker name is a 404 NOT_FOUND', async () => {
    for (const action of ['start', 'stop', 'restart']) {
      const res = await service.admin('POST', `/admin/workers/nope/${action}`);
      assert.equal(res.status, 404);
      assert.equal(res.body.error.code, 'NOT_FOUND');
    }
  });

  test('a bad env value stops only that worker, with a message naming the key and the file', async () => {
    const broken = await service.worker('broken');
    assert.equal(broken.state, 'invalid-config');
    assert.match(broken.reason ?? '', /WORKER_CONCURRENCY/);
    assert.ok(broken.reason?.includes(join(service.envsDir, 'worker.broken.env')));
    assert.equal(broken.pid, null);
    const logged = service.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { worker?: string; level: string; reason?: string })
      .find((entry) => entry.worker === 'broken' && entry.level === 'error');
    assert.equal(logged?.reason, broken.reason);
    assert.equal((await service.worker('alpha')).state, 'ready');
    assert.equal((await service.worker('beta')).state, 'ready');
  });

  test('a missing model file is reported as model-missing and its port answers 503', async () => {
    const missing = await service.worker('missing');
    assert.equal(missing.state, 'model-missing');
    assert.match(missing.reason ?? '', /nowhere\.gguf/);
    const res = await fetch(service.url('missing', '/readyz'));
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { state: string }).state, 'model-missing');
  });

  test('a model that fails to load is reported with the reason from its host', async () => {
    const garbage = await service.waitState('garbage', 'failed');
    assert.match(garbage.reason ?? '', /failed to load: [A-Z_]+: /);
    assert.equal(garbage.pid, null);
  });

  test('admin start retries a worker that failed to load once its model is fixed', async () => {
    writeFileSync(
      join(service.envsDir, 'worker.garbage.env'),
      `MODEL_PATH=${tinyModel}\nHTTP_ADDR=127.0.0.1:${service.ports.get('garbage')}\nWORKER_CONCURRENCY=1\nCTX_SIZE=256\nMODEL_THREADS=1\n`,
    );
    assert.equal((await service.admin('POST', '/admin/workers/garbage/start')).status, 200);
    await service.waitReady('garbage');
    assert.equal((await service.worker('garbage')).reason, null);
    await service.admin('POST', '/admin/workers/garbage/stop');
  });

  test('admin start re-reads a fixed configuration', async () => {
    writeFileSync(
      join(service.envsDir, 'worker.broken.env'),
      `MODEL_PATH=${tinyModel}\nHTTP_ADDR=127.0.0.1:${service.ports.get('broken')}\nWORKER_CONCURRENCY=1\nCTX_SIZE=256\nMODEL_THREADS=1\n`,
    );
    const res = await service.admin('POST', '/admin/workers/broken/start');
    assert.equal(res.status, 200);
    await service.waitReady('broken');
    const worker = await service.worker('broken');
    assert.deepEqual(worker.slots, { busy: 0, total: 1 });
    await service.admin('POST', '/admin/workers/broken/stop');
  });

  test('stop drains the in-flight request, then the port answers 503 until start', async () => {
    let firstToken!: () => void;
    const streaming = new Promise<void>((r) => (firstToken = r));
    const pending = service.stream('beta', { input: 'finish me', params: { max_tokens: 60, ignore_eos: true } }, (e) => {
      if (e.event === 'token') firstToken();
    });
    await streaming;
    const stopped = await service.admin('POST', '/admin/workers/beta/stop');
    assert.equal(stopped.status, 200);
    assert.equal(stopped.body.worker.state, 'stopped');
    assert.equal(stopped.body.worker.pid, null);
    const done = (await pending).at(-1);
    assert.equal(done?.event, 'done');
    assert.equal(done?.data.finish_reason, 'length');
    assert.equal(done?.data.usage.tokens_out, 60);

    const ready = await fetch(service.url('beta', '/readyz'));
    assert.equal(ready.status, 503);
    assert.equal(((await ready.json()) as { state: string }).state, 'stopped');
    const refused = await service.complete('beta', { input: 'x', params: { max_tokens: 2 } });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.error.code, 'MODEL_NOT_READY');

    assert.equal((await service.admin('POST', '/admin/workers/beta/start')).status, 200);
    await service.waitReady('beta');
    assert.equal((await service.complete('beta', { input: 'x', params: { max_tokens: 2 } })).status, 200);
  });

  test('restart replaces the host process', async () => {
    const before = await service.worker('alpha');
    const res = await service.admin('POST', '/admin/workers/alpha/restart');
    assert.equal(res.status, 200);
    await service.waitReady('alpha');
    const after = await service.worker('alpha');
    assert.notEqual(after.pid, before.pid);
    assert.equal(after.state, 'ready');
  });

  test('CLI list-workers and status show the workers', async () => {
    const list = await cli('list-workers');
    assert.match(list.stdout, /^NAME\s+STATE\s+PID\s+PORT/m);
    assert.match(list.stdout, /^alpha\s+ready\s+\d+\s+\d+/m);
    assert.match(list.stdout, /^broken\s+stopped/m);
    assert.match(list.stdout, /^missing\s+model-missing/m);
    assert.match(list.stdout, /^garbage\s+stopped/m);
    const json = JSON.parse((await cli('list-workers', '--json')).stdout) as Array<{ name: string }>;
    assert.deepEqual(json.map((w) => w.name), ['alpha', 'beta', 'broken', 'garbage', 'missing']);
    const status = JSON.parse((await cli('status', '--json')).stdout) as { pid: number; workers: unknown[] };
    assert.equal(status.pid, service.child?.pid);
    assert.equal(status.workers.length, 5);
  });

  test('CLI test sends a sample request and prints the answer and its timings', async () => {
    const { stdout } = await cli('test', 'alpha', '--max-tokens', '4');
    assert.match(stdout, /^output: /m);
    assert.match(stdout, /^tokens: +\d+ in, \d+ out/m);
    assert.match(stdout, /^timings: ttft [\d.]+ ms, duration [\d.]+ ms/m);
    await assert.rejects(cli('test', 'missing'), (err: { stderr: string }) => /MODEL_NOT_READY/.test(err.stderr));
  });

  test('CLI stop NAME stops one worker', async () => {
    const { stdout } = await cli('stop', 'beta');
    assert.match(stdout, /beta: stopped/);
    assert.equal((await service.worker('beta')).state, 'stopped');
    assert.equal((await service.worker('alpha')).state, 'ready');
  });
});
