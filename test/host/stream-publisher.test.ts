/**
 * The replica's NATS publisher against a real nats-server: no stream while it is not connected
 * (the caller relays instead), token messages with the request's headers and body in order, a
 * settle that resolves once the server has them, and a stream that follows a server restart.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createInbox, type NatsConnection } from '@nats-io/transport-node';
import { createLogger, type NatsConnectionSettings } from '@lmserve/protocol';
import { StreamPublisher } from '../../packages/host/src/stream-publisher.js';
import { headerMap, natsConnect } from '../nats/nats-client.js';
import { NatsServer, natsServerAvailable } from '../nats/nats-server.js';
import { waitFor } from '../service/service-fixture.js';

const log = createLogger({ test: 'stream-publisher' }, { level: 'error', write: () => undefined });

function settings(url: string): NatsConnectionSettings {
  return { servers: [url], token: null, user: null, password: null, creds: null, nkeySeed: null, tls: null };
}

describe('StreamPublisher', () => {
  let nats: NatsServer;
  let nc: NatsConnection;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    nc = await natsConnect(nats.url);
  });

  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('nothing to open while no server is reached', async () => {
    const publisher = new StreamPublisher(settings('nats://127.0.0.1:1'), log, 'lmserve-host test 0');
    try {
      assert.equal(publisher.open({ subject: 'x', headers: {} }, 'r1'), null);
    } finally {
      await publisher.close();
    }
  });

  test('token messages in order, with the headers and the request id; settled once the server has them', async () => {
    const publisher = new StreamPublisher(settings(nats.url), log, 'lmserve-host test 0');
    try {
      const target = { subject: createInbox(), headers: { 'Lm-Request-Id': 'nats-1', 'Lm-Event': 'token', 'Lm-Cancel': 'lmserve.cancel.x' } };
      const sub = nc.subscribe(target.subject);
      await nc.flush();
      const stream = await waitFor('the publisher connected', async () => publisher.open(target, 'nats-1') ?? undefined);
      for (let i = 0; i < 50; i++) assert.equal(stream.tokens(`t${i} `, [i, i + 1000]), true);
      await stream.settled();
      // The server has routed all 50 before settled() resolved: a message published now comes after them.
      nc.publish(target.subject, 'after');
      const got: { headers: Record<string, string>; body: string }[] = [];
      for await (const msg of sub) {
        got.push({ headers: headerMap(msg.headers), body: msg.string() });
        if (got.length === 51) break;
      }
      assert.equal(got.at(-1)?.body, 'after');
      const tokens = got.slice(0, 50).map((m) => JSON.parse(m.body));
      assert.deepEqual(tokens.map((t) => t.text).join(''), Array.from({ length: 50 }, (_, i) => `t${i} `).join(''));
      assert.deepEqual(tokens[7], { id: 'nats-1', text: 't7 ', tokens: [7, 1007] });
      for (const m of got.slice(0, 50)) {
        assert.equal(m.headers['Lm-Request-Id'], 'nats-1');
        assert.equal(m.headers['Lm-Event'], 'token');
        assert.equal(m.headers['Lm-Cancel'], 'lmserve.cancel.x');
      }
      assert.ok(stream.usable);
    } finally {
      await publisher.close();
    }
  });

  test('after a server restart it reconnects and publishes again', async () => {
    const publisher = new StreamPublisher(settings(nats.url), log, 'lmserve-host test 0');
    try {
      const target = { subject: 'lmserve.test.restart', headers: { 'Lm-Event': 'token' } };
      await waitFor('the publisher connected', async () => publisher.open(target, 'a') ?? undefined);
      await nats.restart();
      const stream = await waitFor('the publisher reconnected', async () => publisher.open(target, 'b') ?? undefined, 20_000);
      const reader = await natsConnect(nats.url);
      try {
        const sub = reader.subscribe(target.subject, { max: 1 });
        await reader.flush();
        stream.tokens('again', [1]);
        await stream.settled();
        for await (const msg of sub) assert.deepEqual(msg.json(), { id: 'b', text: 'again', tokens: [1] });
      } finally {
        await reader.close();
      }
    } finally {
      await publisher.close();
    }
  });
});
