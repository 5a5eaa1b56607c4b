/**
 * JetStream jobs while the nats-server restarts mid-run: jobs running when it goes keep running,
 * their results are stored once it is back (publishes retried), the streams and the consumer
 * survive on disk, and every job ends with exactly one stored result.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, sleep, tinyModel, waitFor } from '../service/service-fixture.js';
import { JobsClient, jobRequests, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('JetStream jobs across a nats-server restart', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: nats.url, JETSTREAM: 'on', CTX_SIZE: '2048' } } });
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

  test('no job is lost and none gets a second result', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `restart-${i}`);
    for (const [i, id] of ids.entries()) {
      await client.publish('alpha', { id, input: `job ${i}`, params: { max_tokens: i % 3 === 0 ? 600 : 60, ignore_eos: true } }, { msgId: id });
    }
    await waitFor('jobs to run', async () => ((await service.worker('alpha')).in_flight > 0 ? true : undefined));
    await sleep(300);
    const storedBefore = await client.resultsStored('alpha');
    assert.ok(storedBefore < ids.length, 'jobs were still unfinished when the server went');
    await nats.stop();
    await sleep(2000);
    await nats.restart();
    // The producer's connection reconnects by itself; a new one sees the restarted server.
    await client.close();
    client = await JobsClient.connect(nats.url);
    for (const id of ids) {
      const result = await client.result('alpha', id, 90_000);
      assert.equal(result.status, 'completed', `${id}: ${JSON.stringify(result)}`);
    }
    assert.equal(await client.resultsStored('alpha'), ids.length, 'one stored result per job');
    await waitFor('the work queue to empty', async () => ((await client.jobsQueued('alpha')) === 0 ? true : undefined), 30_000);
    const consumer = await client.consumer('alpha');
    assert.equal(consumer.pending + consumer.ackPending, 0);
    const completed = (await jobRequests(service, 'alpha')).filter((r) => r.status === 'completed');
    for (const id of ids) assert.ok(completed.some((r) => r.clientId === id), `${id} completed`);
    // The status is refreshed every few seconds from the consumer's info.
    await waitFor('the runner to report no pending job', async () => {
      const status = (await service.worker('alpha')).transports.jobs;
      return status?.connected && status.pending === 0 && status.in_flight === 0 ? status : undefined;
    });
  });
});
