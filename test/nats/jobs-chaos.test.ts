/**
 * Hundreds of JetStream jobs while the faults pile up: kill -9 of the model host, then kill -9 of
 * the supervisor (a new one started on the same configuration), then kill -9 of the nats-server
 * and its restart on the same store.
 * Every job ends with exactly one stored result, none dead-lettered, and the queue drains.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, sleep, tinyModel, waitFor } from '../service/service-fixture.js';
import { JobsClient, events, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

const JOBS = 200;

describe('JetStream jobs through a host kill, a supervisor kill and a nats-server kill', () => {
  const first = new ServiceFixture();
  const second = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;
  const env = () => ({ NATS_URL: nats.url, JETSTREAM: 'on', CTX_SIZE: '2048', WORKER_CONCURRENCY: '4', JOBS_ACK_WAIT_MS: '2000' });

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await first.configure({ alpha: { model: tinyModel, env: env() } }, { RESTART_BACKOFF_MS: '200' });
    await first.start(['--all']);
    await first.waitReady('alpha');
    await waitJobsReady(first, 'alpha');
    client = await JobsClient.connect(nats.url);
  });

  after(async () => {
    await client?.close();
    await Promise.all([first.cleanup(), second.cleanup()]);
    await nats?.dispose();
  });

  test(`${JOBS} jobs, three faults: exactly one result each`, async () => {
    const ids = Array.from({ length: JOBS }, (_, i) => `chaos-${i}`);
    for (const [i, id] of ids.entries()) {
      await client.publish('alpha', { id, input: `job ${i}`, params: { max_tokens: 8 + (i % 8) * 8, ignore_eos: true } }, { msgId: id });
    }
    const stored = () => client.resultsStored('alpha');
    const reach = (n: number) => waitFor(`${n} results stored`, async () => ((await stored()) >= n ? true : undefined), 120_000);

    // 1. kill -9 of the model host: the supervisor restarts it, its jobs are redelivered.
    await reach(20);
    const host = (await first.worker('alpha')).pid;
    assert.ok(host);
    process.kill(host, 'SIGKILL');
    await waitFor('the host restarted', async () => {
      const w = await first.worker('alpha');
      return w.state === 'ready' && w.pid !== host ? true : undefined;
    }, 60_000);

    // 2. kill -9 of the supervisor; a new one on the same configuration takes over.
    await reach(60);
    first.child?.kill('SIGKILL');
    await first.exit;
    await second.configure({ alpha: { model: tinyModel, env: env() } });
    await second.start(['--all']);
    await second.waitReady('alpha');

    // 3. kill -9 of the nats-server, then a restart on the same store (written, not synced: the
    //    OS keeps what the killed process wrote).
    await reach(100);
    await nats.stop('SIGKILL');
    await sleep(1500);
    await nats.restart();
    await client.close();
    client = await JobsClient.connect(nats.url);

    for (const id of ids) {
      const result = await client.result('alpha', id, 180_000);
      assert.equal(result.status, 'completed', `${id}: ${JSON.stringify(result)}`);
      assert.equal(result.job_id, id);
    }
    assert.equal(await stored(), JOBS, 'one stored result per job, none twice');
    await waitFor('the queue drained', async () => {
      const c = await client.consumer('alpha');
      return c.pending === 0 && c.ackPending === 0 ? true : undefined;
    }, 60_000);
    assert.deepEqual(await events(second, 'alpha', 'jobs.dead_letter'), []);
  });
});
