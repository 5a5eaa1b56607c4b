/**
 * Two supervisors (separate processes and ports, as on two machines) serving the same models
 * share their JetStream consumers: both set the streams up at once, both pull, and when one is
 * killed with SIGKILL mid-run the other completes every job it held (after JOBS_ACK_WAIT_MS),
 * each with exactly one stored result. A job whose last delivery died with that supervisor is
 * dead-lettered by the survivor from JetStream's max-deliveries advisory.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, sleep, tinyModel, waitFor } from '../service/service-fixture.js';
import { JobsClient, events, jobRequests, waitEvent, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('JetStream jobs shared by two supervisors', () => {
  const first = new ServiceFixture();
  const second = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    const env = { NATS_URL: nats.url, JETSTREAM: 'on', CTX_SIZE: '4096', JOBS_ACK_WAIT_MS: '2000' };
    for (const service of [first, second]) {
      await service.configure({
        alpha: { model: tinyModel, env },
        beta: { model: tinyModel, env: { ...env, JOBS_MAX_DELIVER: '1' } },
      });
    }
    // Both at once: the streams and the consumer are created or updated concurrently.
    await Promise.all([first.start(['--all']), second.start(['--all'])]);
    for (const service of [first, second]) {
      for (const worker of ['alpha', 'beta']) {
        await service.waitReady(worker);
        await waitJobsReady(service, worker);
      }
    }
    client = await JobsClient.connect(nats.url);
  });

  after(async () => {
    await client?.close();
    await Promise.all([first.cleanup(), second.cleanup()]);
    await nats?.dispose();
  });

  test('both supervisors set up the shared streams without an error', async () => {
    for (const service of [first, second]) {
      for (const worker of ['alpha', 'beta']) assert.deepEqual(await events(service, worker, 'jobs.error'), []);
    }
  });

  test('kill -9 of one supervisor mid-run: the other completes every job, one result each', async () => {
    // Only the first supervisor pulls beta's job: its last (only) delivery dies with it.
    assert.equal((await second.admin('POST', '/admin/workers/beta/stop')).status, 200);
    await second.waitState('beta', 'stopped');
    await sleep(2500); // its last pull (2 s) has run out; no new one while its model is stopped
    await client.publish('beta', { id: 'orphan', input: 'a long story', params: { max_tokens: 3000, ignore_eos: true } });
    const ids = Array.from({ length: 16 }, (_, i) => `shared-${i}`);
    for (const [i, id] of ids.entries()) {
      await client.publish('alpha', { id, input: `job ${i}`, params: { max_tokens: 200 + 20 * i, ignore_eos: true } });
    }
    await waitFor('the first supervisor to hold jobs of both workers', async () => {
      const workers = await first.workers();
      return workers.every((w) => w.in_flight > 0) ? true : undefined;
    });
    first.child?.kill('SIGKILL');
    await first.exit;
    assert.equal((await second.admin('POST', '/admin/workers/beta/start')).status, 200);

    for (const id of ids) {
      const result = await client.result('alpha', id, 90_000);
      assert.equal(result.status, 'completed', `${id}: ${JSON.stringify(result)}`);
    }
    assert.equal(await client.resultsStored('alpha'), ids.length, 'one stored result per job');
    const redelivered = await events(second, 'alpha', 'jobs.redelivered');
    assert.ok(redelivered.length > 0, 'the survivor ran jobs the killed supervisor held');
    const ran = new Set((await jobRequests(second, 'alpha')).filter((r) => r.status === 'completed').map((r) => r.clientId));
    for (const e of redelivered) assert.ok(ran.has(e.data.job_id));
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined), 30_000);

    const dead = await waitEvent(second, 'beta', 'jobs.dead_letter', (d) => d.job_id === 'orphan', 30_000);
    assert.equal(dead.data.deliveries, 1);
    const orphan = await client.result('beta', 'orphan');
    assert.equal(orphan.status, 'failed');
    assert.equal(orphan.error.code, 'INTERNAL');
    await waitFor('the dead job to leave the work queue', async () => ((await client.jobsQueued('beta')) === 0 ? true : undefined));
    assert.equal((await jobRequests(second, 'beta')).filter((r) => r.clientId === 'orphan').length, 0, 'never run again');
  });
});
