/**
 * JetStream jobs when the model host dies mid-job (kill -9): the job is nak'd, redelivered once
 * the host is back, and completes with exactly one stored result; on its last delivery
 * (JOBS_MAX_DELIVER) the same crash ends it as a dead letter with an error result. A supervisor
 * stopped gracefully mid-job finishes it and acks it before it exits.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, sleep, tinyModel, waitFor } from '../service/service-fixture.js';
import { JobsClient, jobRequests, waitEvent, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('JetStream jobs across a model host crash', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;
  /**
   * Long enough to be killed in the middle (the tiny model, ignoring EOS): the kill waits for the
   * worker's stats (every 500 ms) and 200 ms more, and the tiny model, with no JS per step since
   * the engine collects a non-streamed text itself, writes 1,500 tokens in about a second.
   */
  const LONG_TOKENS = 3500;
  const long = { max_tokens: LONG_TOKENS, ignore_eos: true, temperature: 0 };
  const short = { max_tokens: 4, ignore_eos: true };

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    const env = { NATS_URL: nats.url, JETSTREAM: 'on', CTX_SIZE: '4096' };
    await service.configure({
      alpha: { model: tinyModel, env },
      beta: { model: tinyModel, env: { ...env, JOBS_MAX_DELIVER: '1' } },
    });
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
    await Promise.all([waitJobsReady(service, 'alpha'), waitJobsReady(service, 'beta')]);
    client = await JobsClient.connect(nats.url);
  });

  after(async () => {
    await client?.close();
    await service.cleanup();
    await nats?.dispose();
  });

  /** Kills the worker's model host once it is generating a job; returns the pid killed. */
  async function killHostMidJob(worker: string): Promise<number> {
    const running = await waitFor(`${worker} to run a job`, async () => {
      const w = await service.worker(worker);
      return w.in_flight > 0 && w.slots.busy > 0 && w.pid !== null ? w : undefined;
    });
    await sleep(200);
    process.kill(running.pid as number, 'SIGKILL');
    return running.pid as number;
  }

  test('kill -9 of the model host mid-job: redelivered, completed, exactly one result', async () => {
    const before = await client.resultsStored('alpha');
    await client.publish('alpha', { id: 'survivor', input: 'a long story', params: long });
    await client.publish('alpha', { id: 'bystander', input: 'short', params: short });
    const killed = await killHostMidJob('alpha');
    const result = await client.result('alpha', 'survivor', 90_000);
    assert.equal(result.status, 'completed');
    assert.equal(result.usage.tokens_out, LONG_TOKENS);
    assert.equal((await client.result('alpha', 'bystander')).status, 'completed');
    const redelivered = await waitEvent(service, 'alpha', 'jobs.redelivered', (d) => d.job_id === 'survivor');
    assert.ok(redelivered.data.deliveries >= 2);
    const runs = (await jobRequests(service, 'alpha')).filter((r) => r.clientId === 'survivor');
    assert.deepEqual(runs.map((r) => r.status).sort(), ['completed', 'failed'], JSON.stringify(runs.map((r) => [r.status, r.errorCode, r.error])));
    assert.equal(runs.find((r) => r.status === 'failed').errorCode, 'MODEL_CRASHED');
    assert.notEqual((await service.worker('alpha')).pid, killed);
    assert.equal((await client.resultsStored('alpha')) - before, 2, 'one result per job, none stored twice');
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined));
  });

  test('a crash on the last delivery (JOBS_MAX_DELIVER=1) is a dead letter with an error result', async () => {
    await client.publish('beta', { id: 'doomed', input: 'a long story', params: long });
    await killHostMidJob('beta');
    const dead = await waitEvent(service, 'beta', 'jobs.dead_letter', (d) => d.job_id === 'doomed');
    assert.equal(dead.level, 'warn');
    assert.equal(dead.data.code, 'MODEL_CRASHED');
    const result = await client.result('beta', 'doomed');
    assert.equal(result.status, 'failed');
    assert.equal(result.job_id, 'doomed');
    assert.equal(result.error.code, 'MODEL_CRASHED');
    // Terminated: not redelivered once the host is back.
    await service.waitReady('beta');
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('beta')) === 0 ? true : undefined));
    await sleep(1500);
    assert.equal((await jobRequests(service, 'beta')).filter((r) => r.clientId === 'doomed').length, 1);
    assert.equal((await client.consumer('beta')).ackPending, 0);
  });
});

describe('JetStream jobs across a graceful stop', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: nats.url, JETSTREAM: 'on', CTX_SIZE: '4096' } } }, { SHUTDOWN_GRACE_MS: '30000' });
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

  test('SIGTERM mid-job: the job finishes, its result is stored and it is acked before the exit', async () => {
    await client.publish('alpha', { id: 'drained', input: 'a long story', params: { max_tokens: 1500, ignore_eos: true } });
    await waitFor('alpha to run the job', async () => ((await service.worker('alpha')).slots.busy > 0 ? true : undefined));
    const leftovers = await service.stop();
    assert.deepEqual(leftovers, []);
    assert.equal(service.exitStatus?.code, 0);
    const result = await client.storedResult('alpha', 'drained');
    assert.equal(result?.status, 'completed');
    assert.equal(result.usage.tokens_out, 1500);
    assert.equal(await client.jobsQueued('alpha'), 0, 'acked before the supervisor exited');
    const consumer = await client.consumer('alpha');
    assert.equal(consumer.ackPending + consumer.pending, 0);
  });
});
