/**
 * NATS request/reply against a real nats-server and a real supervisor: the reply is the HTTP
 * response's JSON, streaming sends tokens then done, every failure is a reply with its code and
 * status headers, and both ways of cancelling (the cancel subject, an abandoned inbox) end the
 * generation with status cancelled in the audit trail.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import { ServiceFixture, tinyModel, waitFor } from '../service/service-fixture.js';
import { muxSibling } from '@lmserve/nats';
import { natsConnect, natsRequest, natsStream, type StreamMessage } from './nats-client.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

const PROBE_MS = 250;

describe('NATS request/reply', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let nc: NatsConnection;

  const logs = async (worker: string, query: string): Promise<any[]> => {
    const res = await fetch(service.url(worker, `/logs${query}`));
    assert.equal(res.status, 200);
    return (await res.json()) as any[];
  };
  const row = (worker: string, id: string) =>
    waitFor(`the audit row of ${id}`, async () => (await logs(worker, '?transport=nats&limit=50')).find((r) => r.req_id === id));

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await service.configure(
      {
        alpha: { model: tinyModel, env: { NATS_URL: nats.url, CTX_SIZE: '4096' } },
        gamma: { model: tinyModel, env: { NATS_URL: nats.url, WORKER_CONCURRENCY: '1', MAX_QUEUE: '0' } },
        missing: { model: '/nonexistent/model.gguf', env: { NATS_URL: nats.url } },
      },
    );
    // Requesters probed every 250 ms: a plain request of the tiny model outlives a few probes.
    await service.start(['--all'], { env: { LMSERVE_NATS_PROBE_MS: String(PROBE_MS) } });
    await Promise.all([service.waitReady('alpha'), service.waitReady('gamma')]);
    nc = await natsConnect(nats.url);
    // Subscribed once connected: a request answered by the worker proves it.
    await waitFor('the NATS subscription', async () => ((await natsRequest(nc, 'inference.request.alpha', '{', 2000)).body ? true : undefined));
  });

  after(async () => {
    await nc?.close();
    await service.cleanup();
    await nats?.dispose();
  });

  test('the reply is the HTTP answer, with one audit row of transport nats', async () => {
    const body = { input: 'Hello there', params: { max_tokens: 6, ignore_eos: true, temperature: 0, seed: 3 } };
    const reply = await natsRequest(nc, 'inference.request.alpha', body);
    const http = await service.complete('alpha', body);
    assert.equal(http.status, 200);
    assert.deepEqual(Object.keys(reply.body).sort(), Object.keys(http.body).sort());
    assert.match(reply.body.id, /^nats-[0-9a-f-]{36}$/);
    assert.equal(reply.headers['Lm-Request-Id'], reply.body.id);
    assert.equal(reply.body.model, 'alpha');
    assert.equal(reply.body.output, http.body.output, 'greedy decoding gives the same text over both transports');
    assert.equal(reply.body.finish_reason, 'length');
    assert.deepEqual([reply.body.usage.tokens_in, reply.body.usage.tokens_out], [http.body.usage.tokens_in, http.body.usage.tokens_out]);
    // The HTTP request came second: its prompt was still in the slot the NATS one used.
    assert.equal(reply.body.usage.cached_tokens, 0);
    assert.equal(http.body.usage.cached_tokens, http.body.usage.tokens_in - 1);
    assert.equal(typeof reply.body.timings.ttft_ms, 'number');
    const audit = await row('alpha', reply.body.id);
    assert.equal(audit.transport, 'nats');
    assert.equal(audit.status, 'completed');
    assert.equal(audit.tokens_out, 6);
    assert.equal(audit.tokens_in, reply.body.usage.tokens_in);
    assert.equal(audit.output, reply.body.output);
  });

  test('chat messages are accepted as over HTTP', async () => {
    const reply = await natsRequest(nc, 'inference.request.alpha', {
      input: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi!' },
      ],
      params: { max_tokens: 3, ignore_eos: true },
    });
    assert.equal(reply.body.usage.tokens_out, 3);
  });

  test('params.stream sends token messages, then done with the whole answer', async () => {
    const messages = await natsStream(nc, 'inference.request.alpha', { input: 'Stream this', params: { max_tokens: 8, ignore_eos: true } });
    const tokens = messages.filter((m) => m.event === 'token');
    const done = messages.at(-1) as StreamMessage;
    assert.equal(done.event, 'done');
    assert.ok(tokens.length >= 1);
    assert.deepEqual(messages.slice(0, -1), tokens, 'only token messages before done');
    assert.equal(tokens.map((t) => t.body.text).join(''), done.body.output);
    assert.equal(tokens.reduce((n, t) => n + t.body.tokens.length, 0), 8);
    for (const m of messages) {
      assert.equal(m.headers['Lm-Request-Id'], done.body.id);
      assert.match(m.headers['Lm-Cancel'] ?? '', /^lmserve\.cancel\.[A-Za-z0-9]+\.nats-[0-9a-f-]{36}$/);
    }
    for (const t of tokens) assert.equal(t.body.id, done.body.id);
    assert.equal(done.body.usage.tokens_out, 8);
  });

  test('a fast stream: the first token alone, then the rest every 50 ms or so (NATS_STREAM_INTERVAL_MS)', async () => {
    // The tiny model makes a token in a millisecond or two. The engine holds a NATS stream's
    // tokens for up to 50 ms between messages (the request's interval, set by the NATS transport;
    // the relay's own default for other streams is 20 ms, and without either the relay's 4 ms
    // coalescing would send a message every few milliseconds).
    const arrived: number[] = [];
    const messages = await natsStream(nc, 'inference.request.alpha', { input: 'Stream fast', params: { max_tokens: 2000, ignore_eos: true } }, (m) => {
      if (m.event === 'token') arrived.push(performance.now());
    });
    const tokens = messages.filter((m) => m.event === 'token');
    const done = messages.at(-1) as StreamMessage;
    assert.equal(done.event, 'done');
    assert.equal(tokens[0]?.body.tokens.length, 1, 'the first token leaves at once, alone');
    assert.equal(tokens.reduce((n, t) => n + t.body.tokens.length, 0), 2000);
    assert.equal(tokens.map((t) => t.body.text).join(''), done.body.output);
    // Gaps between the messages after the first and before the last (which leaves with the end).
    const gaps = arrived.slice(1, -1).map((t, i) => t - arrived[i]!).slice(1);
    assert.ok(gaps.length >= 2, `${tokens.length} token messages`);
    const median = [...gaps].sort((x, y) => x - y)[gaps.length >> 1]!;
    assert.ok(median >= 35, `median gap ${median.toFixed(1)} ms over ${gaps.length} gaps`);
  });

  test('invalid JSON is a 400 reply naming the body', async () => {
    const reply = await natsRequest(nc, 'inference.request.alpha', '{"input": ');
    assert.equal(reply.body.error.code, 'INVALID_REQUEST');
    assert.equal(reply.body.error.field, 'body');
    assert.equal(reply.headers['Lm-Status'], '400');
    assert.equal(reply.headers['Lm-Error-Code'], 'INVALID_REQUEST');
    const audit = await row('alpha', reply.headers['Lm-Request-Id'] as string);
    assert.equal(audit.status, 'failed');
    assert.equal(audit.error_code, 'INVALID_REQUEST');
  });

  test('a bad parameter is a 400 reply naming the field', async () => {
    const reply = await natsRequest(nc, 'inference.request.alpha', { input: 'x', params: { top_p: 3 } });
    assert.equal(reply.body.error.code, 'INVALID_REQUEST');
    assert.equal(reply.body.error.field, 'params.top_p');
    assert.equal(reply.headers['Lm-Status'], '400');
    const unknown = await natsRequest(nc, 'inference.request.alpha', { input: 'x', prompt: 'y' });
    assert.equal(unknown.body.error.field, 'prompt');
  });

  test('an unknown grammar name is a 400 GRAMMAR_NOT_FOUND reply', async () => {
    // The library opens in the background: 503 STORE_UNAVAILABLE until then.
    const reply = await waitFor('the grammar library', async () => {
      const r = await natsRequest(nc, 'inference.request.alpha', { input: 'x', params: { grammar: 'no-such-grammar' } });
      return r.body.error.code === 'STORE_UNAVAILABLE' ? undefined : r;
    });
    assert.equal(reply.body.error.code, 'GRAMMAR_NOT_FOUND');
    assert.equal(reply.body.error.field, 'params.grammar');
    assert.equal(reply.headers['Lm-Status'], '400');
  });

  test('a model that is not ready answers 503 MODEL_NOT_READY with Retry-After', async () => {
    const reply = await natsRequest(nc, 'inference.request.missing', { input: 'x' });
    assert.equal(reply.body.error.code, 'MODEL_NOT_READY');
    assert.equal(reply.headers['Lm-Status'], '503');
    assert.match(reply.headers['Retry-After'] ?? '', /^[1-9]\d*$/);
  });

  test('a full model answers 429 QUEUE_FULL; the cancel subject ends the running generation', async () => {
    let first!: (m: StreamMessage) => void;
    const started = new Promise<StreamMessage>((r) => (first = r));
    const running = natsStream(nc, 'inference.request.gamma', { input: 'occupy the slot', params: { max_tokens: 480, ignore_eos: true } }, (m) => {
      if (m.event === 'token') first(m);
    });
    const token = await started;
    const full = await natsRequest(nc, 'inference.request.gamma', { input: 'no room', params: { max_tokens: 2 } });
    assert.equal(full.body.error.code, 'QUEUE_FULL');
    assert.equal(full.headers['Lm-Status'], '429');
    assert.equal(full.headers['Lm-Error-Code'], 'QUEUE_FULL');
    assert.match(full.headers['Retry-After'] ?? '', /^[1-9]\d*$/);

    const answer = await nc.request(token.headers['Lm-Cancel'] as string, '', { timeout: 5000 });
    assert.deepEqual(answer.json(), { id: token.body.id, cancelled: true });
    const messages = await running;
    const end = messages.at(-1) as StreamMessage;
    assert.equal(end.event, 'done');
    assert.equal(end.body.finish_reason, 'cancelled');
    assert.ok(end.body.usage.tokens_out < 480);
    const audit = await row('gamma', token.body.id);
    assert.equal(audit.status, 'cancelled');
    const rejected = await row('gamma', full.headers['Lm-Request-Id'] as string);
    assert.equal(rejected.status, 'rejected');
  });

  test('a requester whose inbox is gone cancels its streamed generation', async () => {
    const requester = await natsConnect(nats.url);
    let first!: (m: StreamMessage) => void;
    const started = new Promise<StreamMessage>((r) => (first = r));
    const abandoned = natsStream(requester, 'inference.request.alpha', { input: 'a very long story', params: { max_tokens: 4000, ignore_eos: true } }, (m) => {
      if (m.event === 'token') first(m);
    }).catch(() => undefined);
    const token = await started;
    await requester.close();
    await abandoned;
    const audit = await waitFor('the cancelled row', async () => {
      const r = await row('alpha', token.body.id);
      return r.status === 'completed' || r.status === 'cancelled' ? r : undefined;
    });
    assert.equal(audit.status, 'cancelled', `the generation ran on (${audit.tokens_out} tokens)`);
    assert.ok(audit.tokens_out < 4000);
  });

  test("a plain request's requester that leaves cancels it; one that stays gets its whole answer", async () => {
    // Stays: a request longer than two probe intervals is answered whole (the probes are ignored).
    const kept = await natsRequest(nc, 'inference.request.alpha', { input: 'a story', params: { max_tokens: 1500, ignore_eos: true } });
    assert.equal(kept.body.usage?.tokens_out, 1500, JSON.stringify(kept.body).slice(0, 300));
    assert.ok(kept.body.timings.dur_ms > 2 * PROBE_MS, `long enough to be probed: ${kept.body.timings.dur_ms} ms`);
    // Leaves: its connection closes while the model is still writing.
    const before = (await service.worker('alpha')).requests.cancelled;
    const requester = await natsConnect(nats.url);
    const abandoned = requester.request('inference.request.alpha', JSON.stringify({ input: 'a very long story', params: { max_tokens: 4000, ignore_eos: true } }), { timeout: 60_000 }).catch(() => undefined);
    await waitFor('the generation running', async () => ((await service.worker('alpha')).slots.busy > 0 ? true : undefined));
    await requester.close();
    await abandoned;
    const worker = await waitFor('the cancellation', async () => {
      const w = await service.worker('alpha');
      return w.requests.cancelled > before && w.slots.busy === 0 ? w : undefined;
    }, 3 * PROBE_MS + 5000);
    assert.equal(worker.requests.cancelled, before + 1);
  });

  test('only a muxed inbox is probed beside the request', () => {
    assert.match(muxSibling('_INBOX.abcDEF123.42') ?? '', /^_INBOX\.abcDEF123\.lmserve-probe-[0-9a-f]{12}$/);
    assert.match(muxSibling('_INBOX_app.xyz.7') ?? '', /^_INBOX_app\.xyz\.lmserve-probe-/);
    for (const reply of ['_INBOX.abcDEF123', 'replies.abc.1', 'my.inbox', '_INBOX.a.b.c', '_INBOX.*.1']) assert.equal(muxSibling(reply), null, reply);
  });

  test('a message without a reply subject is dropped; the service keeps answering', async () => {
    nc.publish('inference.request.alpha', JSON.stringify({ input: 'nobody listens' }));
    await nc.flush();
    const reply = await natsRequest(nc, 'inference.request.alpha', { input: 'still there?', params: { max_tokens: 1 } });
    assert.equal(reply.body.usage.tokens_out, 1);
  });
});
