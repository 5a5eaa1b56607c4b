/**
 * The CLI's streamed NATS request against a responder of our own on a real nats-server: the
 * text comes as the token messages bring it, and what they did not bring (a lost message, or in
 * a cluster one trailing `done`) is shown from `done`, which holds the whole output.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { requestStream } from '../../packages/cli/src/nats-requester.js';
import { natsConnect } from './nats-client.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('requestStream', () => {
  let nats: NatsServer;
  let service: NatsConnection;
  let client: NatsConnection;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    service = await natsConnect(nats.url);
    client = await natsConnect(nats.url);
    // Streams "Hel", "lo" as tokens, then `done` with the output "Hello world" (the rest never came as tokens).
    service.subscribe('lmserve.test.stream', {
      callback: (_err, msg) => {
        const h = (event: string) => {
          const out = headers();
          out.set('Lm-Event', event);
          out.set('Lm-Request-Id', 'nats-1');
          return out;
        };
        const output = JSON.parse(msg.string()).input === 'whole' ? 'Hello' : 'Hello world';
        service.publish(msg.reply!, JSON.stringify({ id: 'nats-1', text: 'Hel', tokens: [1] }), { headers: h('token') });
        service.publish(msg.reply!, JSON.stringify({ id: 'nats-1', text: 'lo', tokens: [2] }), { headers: h('token') });
        const done = { id: 'nats-1', model: 'm', output, finish_reason: 'length', usage: { tokens_in: 1, tokens_out: 3, cached_tokens: 0 }, timings: { ttft_ms: 1, dur_ms: 2 } };
        service.publish(msg.reply!, JSON.stringify(done), { headers: h('done') });
      },
    });
    await service.flush();
  });

  after(async () => {
    await client?.close();
    await service?.close();
    await nats?.dispose();
  });

  test('the part of the output no token message brought is shown from done', async () => {
    const texts: string[] = [];
    const answer = await requestStream(client, 'lmserve.test.stream', { input: 'x' }, 5000, { onText: (t) => texts.push(t) });
    assert.ok(answer.ok);
    assert.equal(answer.body.output, 'Hello world');
    assert.deepEqual(texts, ['Hel', 'lo', ' world']);
  });

  test('nothing is added when the tokens brought the whole output', async () => {
    const texts: string[] = [];
    const answer = await requestStream(client, 'lmserve.test.stream', { input: 'whole' }, 5000, { onText: (t) => texts.push(t) });
    assert.ok(answer.ok);
    assert.deepEqual(texts, ['Hel', 'lo']);
  });
});
