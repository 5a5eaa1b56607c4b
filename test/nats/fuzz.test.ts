/**
 * Hostile payloads over NATS request/reply and JetStream jobs, seeded and bounded (the same
 * inputs as the HTTP fuzz): every request gets a reply (never silence) whose status is not a
 * 5xx; every job, malformed or not, ends with exactly one result on its reply subject, none of
 * them a 5xx, none dead-lettered, and the queue drains; the host that served the first serves
 * the last.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createInbox, headers, type NatsConnection } from '@nats-io/transport-node';
import fc from 'fast-check';
import { ErrorStatus } from '@lmserve/protocol';
import { SEED, bodies, bodyBytes } from '../fuzz-inputs.js';
import { ServiceFixture, tinyModel, waitFor } from '../service/service-fixture.js';
import { headerMap, natsConnect } from './nats-client.js';
import { JobsClient, events, jobNames, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('hostile input over NATS', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let nc: NatsConnection;
  let client: JobsClient;
  let pid: number | null = null;
  const statuses = new Map<string, number>();
  const count = (key: string) => statuses.set(key, (statuses.get(key) ?? 0) + 1);

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: nats.url, JETSTREAM: 'on', MAX_TOKENS: '8', MAX_QUEUE: '64' } } });
    await service.start(['--all']);
    await service.waitReady('alpha');
    await waitJobsReady(service, 'alpha');
    nc = await natsConnect(nats.url);
    client = await JobsClient.connect(nats.url);
    pid = (await service.worker('alpha')).pid;
  });

  after(async () => {
    await client?.close();
    await nc?.close();
    await service.cleanup();
    await nats?.dispose();
  });

  const shapes = Object.keys(bodies).filter((p) => p !== '/grammars');

  test('request/reply: 90 seeded hostile payloads, each answered, none a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...shapes).chain((p) => bodyBytes(p)), async (payload) => {
        const msg = await nc.request('inference.request.alpha', payload, { timeout: 30_000 });
        const h = headerMap(msg.headers);
        const status = Number(h['Lm-Status'] ?? 200);
        count(`reply ${status} ${h['Lm-Error-Code'] ?? ''}`);
        assert.ok(status < 500, `${status} ${h['Lm-Error-Code']} for ${payload.subarray(0, 200).toString('utf8')}`);
        if (h['Lm-Error-Code']) assert.ok(h['Lm-Error-Code'] in ErrorStatus);
        if (msg.data.length > 0) JSON.parse(msg.string());
      }),
      { seed: SEED, numRuns: 90 },
    );
  });

  test('JetStream: 60 seeded hostile jobs, each with one result on its reply subject, none a 5xx, none dead', async () => {
    const inbox = createInbox();
    const replies = new Map<string, any[]>();
    const sub = nc.subscribe(`${inbox}.>`, {
      callback: (_err, msg) => {
        const key = msg.subject.slice(inbox.length + 1);
        replies.set(key, [...(replies.get(key) ?? []), msg.json()]);
      },
    });
    const sent: string[] = [];
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...shapes).chain((p) => bodyBytes(p)), fc.boolean(), async (payload, withMsgId) => {
        const key = `j${n++}`;
        const h = headers();
        h.set('Lm-Reply-To', `${inbox}.${key}`);
        // Without Nats-Msg-Id and without a usable body id, the job cannot be named: it still gets a result.
        await client.js.publish(jobNames('alpha').subject, payload, { headers: h, ...(withMsgId ? { msgID: `fuzz-${key}` } : {}) });
        sent.push(key);
      }),
      { seed: SEED, numRuns: 60 },
    );
    await waitFor('a result for every job', async () => (sent.every((k) => replies.has(k)) ? true : undefined), 120_000);
    sub.unsubscribe();
    for (const key of sent) {
      const results = replies.get(key) ?? [];
      assert.equal(results.length, 1, `${key}: ${JSON.stringify(results)}`);
      const [result] = results;
      count(`job ${result.status} ${result.error?.code ?? ''}`);
      if (result.status === 'failed') assert.ok(ErrorStatus[result.error.code as keyof typeof ErrorStatus] < 500, JSON.stringify(result));
      else assert.equal(result.status, 'completed');
    }
    await waitFor('the queue drained', async () => {
      const c = await client.consumer('alpha');
      return c.pending === 0 && c.ackPending === 0 ? true : undefined;
    });
    assert.deepEqual(await events(service, 'alpha', 'jobs.dead_letter'), []);
  });

  test('afterwards: the same host, no restart, and both transports answer', async () => {
    const worker = await service.worker('alpha');
    assert.equal(worker.pid, pid, JSON.stringify([...statuses]));
    assert.equal(worker.restarts, 0);
    const msg = await nc.request('inference.request.alpha', JSON.stringify({ input: 'Hello', params: { max_tokens: 2, ignore_eos: true } }), { timeout: 30_000 });
    assert.equal((msg.json() as { usage: { tokens_out: number } }).usage.tokens_out, 2);
    assert.ok([...statuses.keys()].some((k) => k.startsWith('reply 200')) && [...statuses.keys()].some((k) => k.startsWith('reply 400')), JSON.stringify([...statuses]));
    assert.ok([...statuses.keys()].some((k) => k.startsWith('job completed')) && [...statuses.keys()].some((k) => k.startsWith('job failed')), JSON.stringify([...statuses]));
  });
});
