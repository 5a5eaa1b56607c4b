/**
 * Scale-out over NATS: two supervisors (separate processes, separate ports and folders, as on two
 * machines) serve the same model on the same subject, so their queue group shares the requests;
 * after a kill -9 of one, the other answers every request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import { ServiceFixture, tinyModel, waitFor } from '../service/service-fixture.js';
import { natsConnect, natsRequest } from './nats-client.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

const SUBJECT = 'inference.request.shared';

describe('a queue group across two supervisors', () => {
  const east = new ServiceFixture();
  const west = new ServiceFixture();
  let nats: NatsServer;
  let nc: NatsConnection;

  /** The NATS request ids a supervisor served, from its own recent request ends. */
  const served = async (service: ServiceFixture): Promise<Set<string>> => {
    const { body } = await service.admin('GET', '/admin/requests?limit=1000');
    return new Set((body.requests as Array<{ request: { reqId: string; transport: string } }>).filter((r) => r.request.transport === 'nats').map((r) => r.request.reqId));
  };

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start({ jetstream: false, monitor: true });
    for (const service of [east, west]) {
      await service.configure({ shared: { model: tinyModel, env: { NATS_URL: nats.url, SUBJECT } } });
    }
    await Promise.all([east.start(['--all']), west.start(['--all'])]);
    await Promise.all([east.waitReady('shared'), west.waitReady('shared')]);
    await waitFor('both supervisors subscribed', async () => ((await nats.connections()).filter((c) => c.name === 'lmserve').length === 2 ? true : undefined));
    nc = await natsConnect(nats.url);
  });

  after(async () => {
    await nc?.close();
    await Promise.all([east.cleanup(), west.cleanup()]);
    await nats?.dispose();
  });

  test('both supervisors serve some of the requests, each exactly once', async () => {
    const replies = await Promise.all(
      Array.from({ length: 16 }, (_, i) => natsRequest(nc, SUBJECT, { input: `request ${i}`, params: { max_tokens: 2, ignore_eos: true } })),
    );
    const ids = replies.map((r) => r.body.id as string);
    assert.equal(new Set(ids).size, 16);
    for (const r of replies) assert.equal(r.body.usage.tokens_out, 2);
    const [byEast, byWest] = await waitFor('every request end', async () => {
      const both = [await served(east), await served(west)] as const;
      return both[0].size + both[1].size >= 16 ? both : undefined;
    });
    assert.ok(byEast.size > 0 && byWest.size > 0, `east served ${byEast.size}, west ${byWest.size}`);
    for (const id of ids) assert.ok(byEast.has(id) !== byWest.has(id), `${id} served by exactly one`);
  });

  test('after a kill -9 of one supervisor, the other answers every request', async () => {
    const killed = await east.terminate('SIGKILL');
    assert.equal(killed.signal, 'SIGKILL');
    await waitFor('the killed supervisor gone from NATS', async () => ((await nats.connections()).filter((c) => c.name === 'lmserve').length === 1 ? true : undefined));
    const before = await served(west);
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => natsRequest(nc, SUBJECT, { input: `after the kill ${i}`, params: { max_tokens: 2, ignore_eos: true } }, 30_000)),
    );
    for (const r of replies) assert.equal(r.body.usage.tokens_out, 2);
    const after = await waitFor('the request ends', async () => {
      const ids = await served(west);
      return ids.size >= before.size + 8 ? ids : undefined;
    });
    for (const r of replies) assert.ok(after.has(r.body.id), `${r.body.id} served by the survivor`);
  });
});
