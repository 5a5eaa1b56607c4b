/**
 * JetStream jobs through a real supervisor and a real nats-server: a job's result is the HTTP
 * answer plus its id and status, stored once in the results stream; duplicates (on the way in,
 * or a job id that already has a result) never run twice; malformed jobs and jobs the model
 * refuses end with an error result and are never redelivered; the producer command.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createInbox } from '@nats-io/transport-node';
import { ServiceFixture, tinyModel, waitFor } from '../service/service-fixture.js';
import { JobsClient, auditRows, events, jobNames, jobRequests, waitEvent, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('JetStream jobs', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;
  const params = { max_tokens: 4, ignore_eos: true, temperature: 0, seed: 1 };

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: nats.url, JETSTREAM: 'on' } } });
    await service.start(['--all']);
    await service.waitReady('alpha');
    await waitJobsReady(service, 'alpha');
    client = await JobsClient.connect(nats.url);
  });

  after(async () => {
    await client?.close();
    await service.cleanup();
    await nats?.dispose();
  });

  test('a job completes: one stored result (the HTTP answer, job_id, status), one request of transport jobs', async () => {
    const before = await client.resultsStored('alpha');
    const body = { input: 'Hello there', params };
    const ack = await client.publish('alpha', { id: 'first-job', ...body });
    assert.equal(ack.duplicate, false);
    const result = await client.result('alpha', 'first-job');
    const http = await service.complete('alpha', body);
    assert.equal(result.job_id, 'first-job');
    assert.equal(result.status, 'completed');
    assert.match(result.id, /^jobs-[0-9a-f-]{36}$/);
    assert.equal(result.model, 'alpha');
    assert.equal(result.output, http.body.output, 'greedy decoding gives the same text as over HTTP');
    // The same counts; cached_tokens differs (the second request found the prompt in a slot).
    assert.deepEqual([result.usage.tokens_in, result.usage.tokens_out], [http.body.usage.tokens_in, http.body.usage.tokens_out]);
    assert.equal(typeof result.usage.cached_tokens, 'number');
    assert.deepEqual(Object.keys(result).sort(), [...Object.keys(http.body), 'job_id', 'status'].sort());
    assert.equal((await client.resultsStored('alpha')) - before, 1);
    const end = await waitFor('the request end', async () => (await jobRequests(service, 'alpha')).find((r) => r.reqId === result.id));
    assert.equal(end.clientId, 'first-job');
    assert.equal(end.status, 'completed');
    const row = await waitFor('the audit row', async () => (await auditRows(service, 'alpha')).find((r) => r.req_id === result.id));
    assert.equal(row.transport, 'jobs');
    assert.equal(row.status, 'completed');
    assert.equal(row.output, result.output);
    assert.equal(row.client_id, 'first-job', 'the job id is in the SQLite row');
    const byJob = (await (await fetch(service.url('alpha', '/logs?client_id=first-job'))).json()) as Array<{ req_id: string }>;
    assert.deepEqual(byJob.map((r) => r.req_id), [result.id], '/logs?client_id finds the job');
    assert.equal((await jobRequests(service, 'alpha')).filter((r) => r.clientId === 'first-job').length, 1);
    await waitFor('the job to leave the work queue', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined));
  });

  test('chat messages run as jobs; the id may come from Nats-Msg-Id alone', async () => {
    await client.publish(
      'alpha',
      { input: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }], params: { ...params, max_tokens: 3 } },
      { msgId: 'chat-job' },
    );
    const result = await client.result('alpha', 'chat-job');
    assert.equal(result.status, 'completed');
    assert.equal(result.usage.tokens_out, 3);
  });

  test('the same Nats-Msg-Id published twice is one job and one result', async () => {
    const before = await client.resultsStored('alpha');
    const first = await client.publish('alpha', { input: 'once', params }, { msgId: 'dedup-in' });
    const second = await client.publish('alpha', { input: 'once', params }, { msgId: 'dedup-in' });
    assert.equal(first.duplicate, false);
    assert.equal(second.duplicate, true);
    assert.equal((await client.result('alpha', 'dedup-in')).status, 'completed');
    // A job published after it proves the runner went past the duplicate, had there been one.
    await client.publish('alpha', { input: 'after', params }, { msgId: 'dedup-in-next' });
    await client.result('alpha', 'dedup-in-next');
    assert.equal((await client.resultsStored('alpha')) - before, 2);
    assert.equal((await jobRequests(service, 'alpha')).filter((r) => r.clientId === 'dedup-in').length, 1);
  });

  test('a job whose id already has a result is acked without running again (jobs.duplicate)', async () => {
    await client.publish('alpha', { id: 'ran-once', input: 'one run', params }, { msgId: 'ran-once' });
    const first = await client.result('alpha', 'ran-once');
    const stored = await client.resultsStored('alpha');
    // Another message (another Nats-Msg-Id, so JetStream keeps it) for the same job id.
    await client.publish('alpha', { id: 'ran-once', input: 'one run', params }, { msgId: 'ran-once-again' });
    await waitEvent(service, 'alpha', 'jobs.duplicate', (d) => d.job_id === 'ran-once');
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined));
    assert.equal((await jobRequests(service, 'alpha')).filter((r) => r.clientId === 'ran-once').length, 1);
    assert.equal(await client.resultsStored('alpha'), stored);
    assert.deepEqual(await client.storedResult('alpha', 'ran-once'), first);
  });

  test('Lm-Reply-To receives the result too', async () => {
    const inbox = createInbox();
    const sub = client.nc.subscribe(inbox, { max: 1, timeout: 60_000 });
    await client.publish('alpha', { id: 'with-reply', input: 'reply to me', params }, { replyTo: inbox });
    let replied: any;
    for await (const msg of sub) {
      replied = msg.json();
      assert.equal(msg.headers?.get('Lm-Job-Status'), 'completed');
      assert.equal(msg.headers?.get('Lm-Job-Id'), 'with-reply');
    }
    assert.deepEqual(replied, await client.storedResult('alpha', 'with-reply'));
  });

  test('a malformed job is terminated with an error result and never redelivered', async () => {
    const before = (await events(service, 'alpha', 'jobs.malformed')).length;
    await client.publish('alpha', '{"input": "unfinished', { msgId: 'bad-json' });
    await client.publish('alpha', { id: 'bad-param', input: 'x', params: { top_p: 3 } });
    await client.publish('alpha', { id: 'bad id!', input: 'x' });
    await client.publish('alpha', { input: 'no id at all' });
    const badJson = await client.result('alpha', 'bad-json');
    assert.deepEqual(badJson.status, 'failed');
    assert.equal(badJson.job_id, 'bad-json');
    assert.equal(badJson.error.code, 'INVALID_REQUEST');
    assert.equal(badJson.error.field, 'body');
    const badParam = await client.result('alpha', 'bad-param');
    assert.equal(badParam.error.code, 'INVALID_REQUEST');
    assert.equal(badParam.error.field, 'params.top_p');
    const malformed = await waitFor('four jobs.malformed events', async () => {
      const list = (await events(service, 'alpha', 'jobs.malformed')).slice(before);
      return list.length >= 4 ? list : undefined;
    });
    assert.deepEqual(malformed.map((e) => e.data.job_id).sort((a, b) => String(a).localeCompare(String(b))), ['bad-json', 'bad-param', null, null]);
    assert.deepEqual(new Set(malformed.map((e) => e.data.field)), new Set(['body', 'params.top_p', 'id']));
    // Terminated: nothing left to deliver, nothing waiting for an ack, nothing redelivered.
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined));
    const consumer = await client.consumer('alpha');
    assert.equal(consumer.pending, 0);
    assert.equal(consumer.ackPending, 0);
    assert.equal(consumer.redelivered, 0);
    const failed = (await jobRequests(service, 'alpha')).filter((r) => r.status === 'failed' && r.errorCode === 'INVALID_REQUEST');
    assert.ok(failed.some((r) => r.clientId === 'bad-json'));
    assert.ok(failed.some((r) => r.clientId === 'bad-param'));
  });

  test('a job the model refuses (context overflow) ends with its error, not retried', async () => {
    await client.publish('alpha', { id: 'too-long', input: 'word '.repeat(2000), params });
    const result = await client.result('alpha', 'too-long');
    assert.equal(result.status, 'failed');
    assert.equal(result.error.code, 'CONTEXT_OVERFLOW');
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined));
    assert.equal((await jobRequests(service, 'alpha')).filter((r) => r.clientId === 'too-long').length, 1);
  });

  test('the runner reports its stream, consumer and pending jobs', async () => {
    const ready = (await events(service, 'alpha', 'jobs.ready'))[0];
    assert.equal(ready?.data.stream, jobNames('alpha').stream);
    assert.equal(ready?.data.consumer, jobNames('alpha').consumer);
    const jobs = await waitFor('the jobs status', async () => (await service.worker('alpha')).transports.jobs);
    assert.equal(jobs.connected, true);
    assert.equal(jobs.stream, jobNames('alpha').stream);
    assert.equal(jobs.consumer, jobNames('alpha').consumer);
    assert.equal(typeof jobs.pending, 'number');
    const metrics = await (await fetch(service.url('alpha', '/metrics'))).text();
    assert.match(metrics, /^lmserve_jetstream_pending\{[^}]*model="alpha"[^}]*\} \d+$/m);
  });

  test('supervisor jobs submit --count 3 --wait prints every result and exits 0', async () => {
    const { stdout, stderr } = await service.cli(['jobs', 'submit', 'alpha', '--input', 'from the CLI', '--params', JSON.stringify(params), '--count', '3', '--id', 'cli', '--wait', '--timeout', '60']);
    const results = stdout.trim().split('\n').map((line) => JSON.parse(line));
    assert.deepEqual(results.map((r) => r.job_id).sort(), ['cli-1', 'cli-2', 'cli-3']);
    for (const r of results) assert.equal(r.status, 'completed');
    assert.match(stderr, /cli-1: queued/);
    // The same ids again: already stored, answered from the results stream.
    const again = await service.cli(['jobs', 'submit', 'alpha', '--input', 'from the CLI', '--count', '3', '--id', 'cli', '--wait', '--timeout', '30']);
    assert.equal(again.stdout.trim().split('\n').length, 3);
    assert.equal((await jobRequests(service, 'alpha')).filter((r) => r.clientId === 'cli-1').length, 1);
  });

  test('supervisor jobs submit --wait exits 1 when a result is an error', async () => {
    const run = service.cli(['jobs', 'submit', 'alpha', '--input', 'x', '--params', '{"top_k": -5}', '--id', 'cli-bad', '--wait', '--timeout', '30']);
    await assert.rejects(run, (err: any) => {
      assert.equal(err.code, 1);
      assert.equal(JSON.parse(err.stdout.trim()).error.field, 'params.top_k');
      return true;
    });
  });
});
