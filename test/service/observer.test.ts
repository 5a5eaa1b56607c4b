/**
 * The observer as a real supervisor publishes it (read back through /admin/events and
 * /admin/requests): lifecycle events in order with their data, one request end per request
 * with its ids and usage, and the request id on every log line of the request in all three
 * processes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

interface Event {
  code: string;
  worker: string | null;
  level: string;
  data: Record<string, any>;
}

async function events(service: ServiceFixture, worker: string, since = 0): Promise<Array<{ seq: number; event: Event }>> {
  const res = await service.admin('GET', `/admin/events?worker=${worker}&since=${since}`);
  assert.equal(res.status, 200);
  return res.body.events;
}

describe('the observer', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({ alpha: { model: tinyModel } }, { LOG_LEVEL: 'debug', RESTART_BACKOFF_MS: '200' });
    await service.start();
    await service.waitReady('alpha');
  });

  after(() => service.cleanup());

  test('a start publishes config.loaded, host.spawned, model.loading, model.loaded, services.init, server.ready in that order', async () => {
    const all = (await service.admin('GET', '/admin/events')).body.events as Array<{ event: Event }>;
    assert.equal(all[0]?.event.code, 'startup');
    const codes = (await events(service, 'alpha')).map((e) => e.event.code);
    const order = ['config.loaded', 'host.spawned', 'model.loading', 'model.loaded', 'services.init', 'server.ready'];
    const firsts = order.map((code) => codes.indexOf(code));
    assert.ok(firsts.every((i) => i >= 0), `all present: ${codes.join(',')}`);
    assert.deepEqual([...firsts].sort((a, b) => a - b), firsts, `in order: ${codes.join(',')}`);
    const loaded = (await events(service, 'alpha')).find((e) => e.event.code === 'model.loaded')?.event as Event;
    assert.ok(loaded.data.loadSeconds > 0 && loaded.data.loadSeconds < 60);
    assert.equal(loaded.data.backend, 'cpu');
    assert.ok(Array.isArray(loaded.data.devices) && loaded.data.devices.length > 0);
    // The tiny model: 2 repeating layers + the output layer; a CPU build offloads none.
    assert.equal(loaded.data.gpuLayers, 0);
    assert.equal(loaded.data.layers, 3);
    const worker = (await service.admin('GET', '/admin/workers')).body.workers.find((w: { name: string }) => w.name === 'alpha');
    assert.equal(worker.load.backend, 'cpu');
    assert.equal(worker.load.gpu_layers, 0);
    assert.equal(worker.load.layers, 3);
    assert.ok(worker.load.seconds > 0);
    // llama.cpp's breakdown of what was loaded: on a CPU build, all of it in host memory.
    assert.deepEqual(worker.load.devices, ['CPU']);
    const host = worker.load.memory.find((d: { name: string }) => d.name === 'CPU');
    assert.ok(host.model_bytes > 0 && host.context_bytes > 0 && host.compute_bytes > 0, JSON.stringify(host));
    assert.deepEqual(loaded.data.memory.map((d: { name: string }) => d.name), ['CPU']);
    const init = (await events(service, 'alpha')).find((e) => e.event.code === 'services.init')?.event as Event;
    assert.equal(init.data.endpoints[0].transport, 'http');
    assert.equal(init.data.endpoints[0].port, service.ports.get('alpha'));
  });

  test('each request publishes one end with its transport, ids, worker, usage and timings', async () => {
    const since = (await service.admin('GET', '/admin/requests')).body.requests.at(-1)?.seq ?? 0;
    const ok = await service.complete('alpha', { input: 'Hello', params: { max_tokens: 4, ignore_eos: true, seed: 1 } });
    assert.equal(ok.status, 200);
    const bad = await service.complete('alpha', { input: 'Hello', params: { top_p: 7 } });
    assert.equal(bad.status, 400);
    const ends = await waitFor('two request ends', async () => {
      const list = (await service.admin('GET', `/admin/requests?since=${since}`)).body.requests;
      return list.length >= 2 ? list : undefined;
    });
    assert.equal(ends.length, 2);
    const [done, failed] = ends.map((e: any) => e.request);
    const worker = await service.worker('alpha');
    assert.equal(done.reqId, ok.body.id);
    assert.equal(done.transport, 'http');
    assert.equal(done.worker, 'alpha');
    assert.equal(done.hostPid, worker.pid);
    assert.equal(done.status, 'completed');
    assert.equal(done.httpStatus, 200);
    assert.equal(done.usage.tokensOut, 4);
    assert.equal(done.usage.tokensOut, ok.body.usage.tokens_out);
    assert.equal(done.usage.tokensIn, ok.body.usage.tokens_in);
    assert.equal(done.output, ok.body.output);
    assert.equal(done.input, 'Hello');
    assert.equal(done.inputLen, 5);
    assert.ok(done.timings.ttftMs > 0 && done.timings.ttftMs <= done.timings.totalMs);
    assert.ok(done.timings.queueMs >= 0);
    assert.match(failed.reqId, /^http-/);
    assert.notEqual(failed.reqId, done.reqId);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.errorCode, 'INVALID_REQUEST');
    assert.equal(failed.httpStatus, 400);
  });

  test('the request id is on every log line of the request in the supervisor, the host and the replica', async () => {
    const res = await service.complete('alpha', { input: 'trace me', params: { max_tokens: 2 } });
    assert.equal(res.status, 200);
    const id = res.body.id as string;
    const lines = await waitFor('the replica line', async () => {
      const found = service.stderr
        .split('\n')
        .filter((l) => l.includes(id))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      return found.some((l) => l.component === 'replica' && l.msg === 'generation ended') && found.some((l) => l.msg === 'request ended') ? found : undefined;
    });
    const components = new Set(lines.map((l) => l.component));
    assert.deepEqual([...components].sort(), ['host', 'replica', 'supervisor']);
    for (const line of lines) assert.equal(line.reqId, id, JSON.stringify(line));
  });

  test('kill -9 of a host publishes exactly crash, restart, model.loaded, server.ready', async () => {
    const before = await service.worker('alpha');
    const since = (await events(service, 'alpha')).at(-1)?.seq ?? 0;
    process.kill(before.pid as number, 'SIGKILL');
    await waitFor('alpha ready again', async () => {
      const w = await service.worker('alpha');
      return w.state === 'ready' && w.pid !== before.pid ? w : undefined;
    });
    const after = await waitFor('server.ready', async () => {
      const list = await events(service, 'alpha', since);
      return list.some((e) => e.event.code === 'server.ready') ? list : undefined;
    });
    const key = new Set(['crash', 'restart', 'model.loaded', 'server.ready']);
    assert.deepEqual(after.map((e) => e.event.code).filter((c) => key.has(c)), ['crash', 'restart', 'model.loaded', 'server.ready']);
    const others = after.map((e) => e.event.code).filter((c) => !key.has(c));
    assert.ok(others.every((c) => ['host.spawned', 'model.loading', 'services.init'].includes(c)), others.join(','));
    const crash = after.find((e) => e.event.code === 'crash')?.event as Event;
    assert.equal(crash.data.signal, 'SIGKILL');
    assert.equal(crash.data.hostPid, before.pid);
    assert.equal(crash.level, 'error');
    assert.equal(typeof crash.data.stderrTail, 'string');
  });

  test('stopping a worker publishes stop', async () => {
    const since = (await events(service, 'alpha')).at(-1)?.seq ?? 0;
    const res = await service.admin('POST', '/admin/workers/alpha/stop');
    assert.equal(res.status, 200);
    const list = await events(service, 'alpha', since);
    assert.deepEqual(list.map((e) => e.event.code), ['stop']);
  });
});
