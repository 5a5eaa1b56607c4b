/**
 * NATS streams whose token messages the model host publishes itself (HostSpec.nats): the
 * supervisor only sees the end. Concurrent streams keep their tokens complete and in order before
 * `done`, the greedy text is the plain request's, the worker counts them as direct, and
 * LMSERVE_NATS_DIRECT=off relays them through the supervisor as before.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import { ServiceFixture, tinyModel, waitFor } from '../service/service-fixture.js';
import { natsConnect, natsRequest, natsStream } from './nats-client.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

const SUBJECT = 'inference.request.alpha';

async function directCount(service: ServiceFixture): Promise<number> {
  const workers = (await service.admin('GET', '/admin/workers')).body as { workers: { name: string; requests: { direct: number } }[] };
  return workers.workers.find((w) => w.name === 'alpha')?.requests.direct ?? -1;
}

/** A stream's messages checked against its end: every token message before `done`, none lost. */
async function checkedStream(nc: NatsConnection, body: Record<string, any>): Promise<{ text: string; output: string; tokensOut: number }> {
  const messages = await natsStream(nc, SUBJECT, body);
  const done = messages.at(-1)!;
  assert.equal(done.event, 'done', JSON.stringify(done.body));
  const tokens = messages.slice(0, -1);
  assert.ok(tokens.every((m) => m.event === 'token'), 'only token messages before done');
  assert.ok(tokens.every((m) => m.headers['Lm-Request-Id'] === done.headers['Lm-Request-Id'] && m.headers['Lm-Cancel'] === done.headers['Lm-Cancel']), 'token messages carry the request id and cancel subject');
  assert.ok(tokens.every((m) => m.body.id === done.body.id), 'token bodies carry the request id');
  const text = tokens.map((m) => m.body.text).join('');
  const count = tokens.reduce((n, m) => n + m.body.tokens.length, 0);
  assert.equal(text, done.body.output, 'the token messages hold the whole output, in order');
  assert.equal(count, done.body.usage.tokens_out);
  return { text, output: done.body.output, tokensOut: done.body.usage.tokens_out };
}

/** A nats-server and a supervisor with worker alpha on it (registers the describe's before/after). */
function natsService(env: Record<string, string> = {}): { service: ServiceFixture; nc: () => NatsConnection } {
  const service = new ServiceFixture();
  let nats: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: nats.url, CTX_SIZE: '4096', WORKER_CONCURRENCY: '4', MAX_QUEUE: '8' } } });
    await service.start(['--all'], { env });
    await service.waitReady('alpha');
    const client = await natsConnect(nats.url);
    nc = client;
    // Subscribed once a request is answered.
    await waitFor('the NATS subscription', async () => ((await natsRequest(client, SUBJECT, '{', 2000)).body ? true : undefined));
  });
  after(async () => {
    await nc?.close();
    await service.cleanup();
    await nats?.dispose();
  });
  return { service, nc: () => nc as NatsConnection };
}

describe('NATS streams published by the model host', () => {
  const { service, nc } = natsService();

  test('eight concurrent streams: complete, in order before done, the plain answer, counted as direct', async () => {
    // The replica connects to NATS on its own, in the background: wait until a stream is published.
    let before = await directCount(service);
    for (let i = 0; i < 50; i++) {
      await checkedStream(nc(), { input: 'warm', params: { max_tokens: 4, ignore_eos: true } });
      const now = await directCount(service);
      if (now > before) break;
      before = now;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    before = await directCount(service);
    const params = { max_tokens: 300, ignore_eos: true, temperature: 0 };
    const prompts = Array.from({ length: 8 }, (_, i) => `Stream number ${i} says`);
    const streams = await Promise.all(prompts.map((input) => checkedStream(nc(), { input, params })));
    for (const s of streams) assert.equal(s.tokensOut, 300);
    assert.equal(await directCount(service), before + 8, 'every stream was published by the host');
    const plain = await natsRequest(nc(), SUBJECT, { input: prompts[3], params });
    assert.equal(streams[3]!.output, plain.body.output, 'the greedy stream is the plain answer');
  });

  test('a cancelled published stream ends with done (finish_reason cancelled) after its tokens', async () => {
    const messages: any[] = [];
    let cancelled = false;
    const result = await natsStream(nc(), SUBJECT, { input: 'cancel me', params: { max_tokens: 3000, ignore_eos: true } }, (m) => {
      messages.push(m);
      if (!cancelled && m.event === 'token' && messages.length >= 3) {
        cancelled = true;
        nc().publish(m.headers['Lm-Cancel'], '');
      }
    });
    const done = result.at(-1)!;
    assert.equal(done.event, 'done');
    assert.equal(done.body.finish_reason, 'cancelled');
    const text = result.slice(0, -1).map((m) => m.body.text).join('');
    assert.equal(text, done.body.output);
    assert.ok(done.body.usage.tokens_out < 3000);
  });

  test('kill -9 of the model host mid-stream: the tokens it published, then an error message (MODEL_CRASHED), then a new host publishes', async () => {
    const pid = (await service.worker('alpha')).pid;
    assert.ok(pid);
    let killed = false;
    const messages = await natsStream(nc(), SUBJECT, { input: 'crash me', params: { max_tokens: 3000, ignore_eos: true } }, (m) => {
      if (!killed && m.event === 'token' && m.body.tokens.length > 0) {
        killed = true;
        process.kill(pid, 'SIGKILL');
      }
    });
    const last = messages.at(-1)!;
    assert.equal(last.event, 'error', JSON.stringify(last.body));
    assert.equal(last.body.error.code, 'MODEL_CRASHED');
    assert.equal(last.headers['Lm-Status'], '503');
    assert.ok(messages.slice(0, -1).every((m) => m.event === 'token'));
    await waitFor('a new host', async () => {
      const w = await service.worker('alpha');
      return w.state === 'ready' && w.pid !== pid ? true : undefined;
    }, 60_000);
    const before = await directCount(service);
    await waitFor('a stream published by the new host', async () => {
      await checkedStream(nc(), { input: 'after the crash', params: { max_tokens: 8, ignore_eos: true } });
      return (await directCount(service)) > before ? true : undefined;
    });
  });
});

describe('LMSERVE_NATS_DIRECT=off', () => {
  const { service, nc } = natsService({ LMSERVE_NATS_DIRECT: 'off' });

  test('streams are relayed through the supervisor, with the same messages', async () => {
    const before = await directCount(service);
    const streams = await Promise.all([0, 1, 2].map((i) => checkedStream(nc(), { input: `Relayed ${i}`, params: { max_tokens: 120, ignore_eos: true } })));
    for (const s of streams) assert.equal(s.tokensOut, 120);
    assert.equal(await directCount(service), before, 'no stream was published by the host');
  });
});
