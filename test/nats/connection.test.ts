/**
 * The NATS connection of the service against a real nats-server: token auth (a NATS_TOKEN key and
 * a token inside NATS_URL; a wrong one is an event, never a failure), one connection for workers
 * with the same settings, NATS down at start (HTTP serves meanwhile, then it connects by itself),
 * and a server restart mid-run (disconnected, reconnected, serving again), all visible in /readyz,
 * /admin/workers, the events and the metrics.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import { ServiceFixture, freePort, tinyModel, waitFor } from '../service/service-fixture.js';
import { natsConnect, natsRequest } from './nats-client.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

const TOKEN = 'tok-3f9a1c';

async function readyz(service: ServiceFixture, worker: string): Promise<any> {
  return (await fetch(service.url(worker, '/readyz'))).json();
}

async function events(service: ServiceFixture, worker: string, code: string): Promise<any[]> {
  const { body } = await service.admin('GET', `/admin/events?worker=${worker}&limit=2000`);
  return (body.events as Array<{ event: any }>).map((e) => e.event).filter((e) => e.code === code);
}

async function natsConnectedMetric(service: ServiceFixture, worker: string): Promise<number | undefined> {
  const text = await (await fetch(service.url(worker, '/metrics'))).text();
  const line = text.split('\n').find((l) => l.startsWith(`lmserve_nats_connected{`) && l.includes(`worker="${worker}"`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

describe('NATS authentication and shared connections', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let nc: NatsConnection;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start({ token: TOKEN, monitor: true, jetstream: false });
    const keyed = { NATS_URL: nats.url, NATS_TOKEN: TOKEN };
    await service.configure({
      keyed: { model: tinyModel, env: keyed },
      twin: { model: tinyModel, env: keyed },
      inurl: { model: tinyModel, env: { NATS_URL: `nats://${TOKEN}@127.0.0.1:${nats.port}` } },
      wrong: { model: tinyModel, env: { NATS_URL: nats.url, NATS_TOKEN: 'not-the-token' } },
    });
    await service.start(['--all']);
    await Promise.all(['keyed', 'twin', 'inurl', 'wrong'].map((w) => service.waitReady(w)));
    nc = await natsConnect(nats.url, { token: TOKEN });
  });

  after(async () => {
    await nc?.close();
    await service.cleanup();
    await nats?.dispose();
  });

  test('NATS_TOKEN and a token inside NATS_URL both authenticate', async () => {
    for (const worker of ['keyed', 'inurl']) {
      await waitFor(`${worker} connected`, async () => ((await readyz(service, worker)).nats.connected ? true : undefined));
      const reply = await natsRequest(nc, `inference.request.${worker}`, { input: 'Hi', params: { max_tokens: 2, ignore_eos: true } });
      assert.equal(reply.body.usage.tokens_out, 2, worker);
    }
  });

  test('a wrong token is a nats.error event and nats.connected=false; HTTP still serves', async () => {
    const [error] = await waitFor('the nats.error event', async () => {
      const found = await events(service, 'wrong', 'nats.error');
      return found.length > 0 ? found : undefined;
    });
    assert.match(error.msg, /authorization/i);
    const ready = await readyz(service, 'wrong');
    assert.equal(ready.state, 'ready');
    assert.equal(ready.nats.connected, false);
    const res = await service.complete('wrong', { input: 'Hi', params: { max_tokens: 1 } });
    assert.equal(res.status, 200);
    assert.equal(await natsConnectedMetric(service, 'wrong'), 0);
    assert.equal(await natsConnectedMetric(service, 'keyed'), 1);
  });

  test('workers with the same settings share one connection', async () => {
    await waitFor('every worker connected', async () => ((await readyz(service, 'twin')).nats.connected ? true : undefined));
    const ours = (await nats.connections()).filter((c) => c.name === 'lmserve');
    // keyed, twin and inurl (its URL's token parsed out: the same settings) share one; wrong never got in.
    assert.equal(ours.length, 1, JSON.stringify(ours));
    assert.equal(ours[0]?.subscriptions, 6, 'a subject and a cancel subject for each of the three workers');
    // Each model host's replica has its own (it publishes its NATS streams' tokens), with no subscription.
    await waitFor('the hosts connected', async () => {
      const hosts = (await nats.connections()).filter((c) => c.name?.startsWith('lmserve-host '));
      return hosts.length === 3 ? hosts : undefined;
    });
    const hosts = (await nats.connections()).filter((c) => c.name?.startsWith('lmserve-host '));
    assert.deepEqual(hosts.map((c) => c.name).sort(), ['lmserve-host inurl 0', 'lmserve-host keyed 0', 'lmserve-host twin 0']);
    assert.ok(hosts.every((c) => c.subscriptions === 0));
    const twin = await natsRequest(nc, 'inference.request.twin', { input: 'Hi', params: { max_tokens: 1 } });
    assert.equal(twin.body.model, 'twin');
  });

  test('/admin/workers shows the NATS state of each worker; secrets are never logged', async () => {
    const keyed = await service.worker('keyed');
    assert.equal(keyed.transports.nats?.connected, true);
    assert.equal(keyed.transports.nats?.subject, 'inference.request.keyed');
    assert.equal(keyed.transports.nats?.queue, 'lmserve.inference.request.keyed');
    assert.ok(!JSON.stringify(await service.workers()).includes(TOKEN));
    assert.ok(!service.output.includes(TOKEN), 'the token appears in the supervisor output');
  });
});

describe('NATS down at start, then restarted mid-run', () => {
  const service = new ServiceFixture();
  let nats: NatsServer | undefined;
  let port: number;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    port = await freePort();
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: `nats://127.0.0.1:${port}` } } });
    await service.start(['--all']);
    await service.waitReady('alpha');
  });

  after(async () => {
    await service.cleanup();
    await nats?.dispose();
  });

  test('while NATS is down, HTTP serves and /readyz says nats.connected=false', async () => {
    const ready = await readyz(service, 'alpha');
    assert.equal(ready.state, 'ready');
    assert.deepEqual(
      { connected: ready.nats.connected, subject: ready.nats.subject, queue: ready.nats.queue },
      { connected: false, subject: 'inference.request.alpha', queue: 'lmserve.inference.request.alpha' },
    );
    const res = await service.complete('alpha', { input: 'Hi', params: { max_tokens: 1 } });
    assert.equal(res.status, 200);
    assert.equal((await service.worker('alpha')).transports.nats?.connected, false);
    assert.equal(await natsConnectedMetric(service, 'alpha'), 0);
  });

  test('once nats-server starts, the worker connects by itself and serves', async () => {
    nats = await NatsServer.start({ port });
    await waitFor('nats.connected', async () => ((await readyz(service, 'alpha')).nats.connected ? true : undefined));
    const [connected] = await events(service, 'alpha', 'nats.connected');
    assert.ok(connected, 'a nats.connected event');
    assert.equal(connected.data.subject, 'inference.request.alpha');
    const nc = await natsConnect(nats.url);
    try {
      const reply = await natsRequest(nc, 'inference.request.alpha', { input: 'Hi', params: { max_tokens: 2, ignore_eos: true } });
      assert.equal(reply.body.usage.tokens_out, 2);
    } finally {
      await nc.close();
    }
    assert.equal(await natsConnectedMetric(service, 'alpha'), 1);
  });

  test('a nats-server restart: disconnected, reconnected, serving again', async () => {
    const server = nats as NatsServer;
    await server.stop();
    await waitFor('nats.disconnected', async () => ((await events(service, 'alpha', 'nats.disconnected')).length > 0 ? true : undefined));
    assert.equal((await readyz(service, 'alpha')).nats.connected, false);
    assert.equal((await service.complete('alpha', { input: 'Hi', params: { max_tokens: 1 } })).status, 200, 'HTTP serves while NATS is away');
    await server.restart();
    await waitFor('nats.reconnected', async () => ((await events(service, 'alpha', 'nats.reconnected')).length > 0 ? true : undefined));
    await waitFor('/readyz nats.connected', async () => ((await readyz(service, 'alpha')).nats.connected ? true : undefined));
    const nc = await natsConnect(server.url);
    try {
      const reply = await waitFor('a reply after the restart', () =>
        natsRequest(nc, 'inference.request.alpha', { input: 'Hi again', params: { max_tokens: 2, ignore_eos: true } }, 2000),
      );
      assert.equal(reply.body.usage.tokens_out, 2);
    } finally {
      await nc.close();
    }
  });
});
