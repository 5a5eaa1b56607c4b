/**
 * kill -9 of the only supervisor while it holds JetStream jobs: its model hosts exit, and the
 * supervisor started again on the same configuration completes every job — the ones it held
 * (redelivered after JOBS_ACK_WAIT_MS) and the ones still queued — each with exactly one stored
 * result, and the queue drains. Nothing accepted is lost.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, alive, tinyModel, waitFor } from '../service/service-fixture.js';
import { JobsClient, events, waitJobsReady } from './jobs-fixture.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

describe('JetStream jobs across a kill -9 of the supervisor and its restart', () => {
  const first = new ServiceFixture();
  const restarted = new ServiceFixture();
  let nats: NatsServer;
  let client: JobsClient;
  const env = () => ({ NATS_URL: nats.url, JETSTREAM: 'on', CTX_SIZE: '4096', JOBS_ACK_WAIT_MS: '2000' });

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start();
    await first.configure({ alpha: { model: tinyModel, env: env() } });
    await first.start(['--all']);
    await first.waitReady('alpha');
    await waitJobsReady(first, 'alpha');
    client = await JobsClient.connect(nats.url);
  });

  after(async () => {
    await client?.close();
    await Promise.all([first.cleanup(), restarted.cleanup()]);
    await nats?.dispose();
  });

  test('the restarted supervisor completes every job, one result each', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `survivor-${i}`);
    for (const id of ids) await client.publish('alpha', { id, input: `story ${id}`, params: { max_tokens: 400, ignore_eos: true } }, { msgId: id });
    await waitFor('jobs running', async () => ((await first.worker('alpha')).slots.busy > 0 ? true : undefined));
    const hosts = first.hostProcesses();
    assert.ok(hosts.length > 0);
    first.child?.kill('SIGKILL');
    await first.exit;
    // The hosts notice their supervisor is gone and exit.
    await waitFor('the hosts gone', async () => (hosts.every((pid) => !alive(pid)) ? true : undefined), 15_000);
    const storedBefore = await client.resultsStored('alpha');
    assert.ok(storedBefore < ids.length, `some jobs were left: ${storedBefore} stored`);

    await restarted.configure({ alpha: { model: tinyModel, env: env() } });
    await restarted.start(['--all']);
    await restarted.waitReady('alpha');
    const results = await Promise.all(ids.map((id) => client.result('alpha', id, 120_000)));
    for (const [i, result] of results.entries()) {
      assert.equal(result.status, 'completed', JSON.stringify(result));
      assert.equal(result.job_id, ids[i]);
      assert.equal(result.usage.tokens_out, 400);
    }
    assert.equal(await client.resultsStored('alpha'), ids.length, 'one stored result per job, none twice');
    await waitFor('the queue drained', async () => {
      const c = await client.consumer('alpha');
      return c.pending === 0 && c.ackPending === 0 ? true : undefined;
    }, 30_000);
    assert.deepEqual(await events(restarted, 'alpha', 'jobs.dead_letter'), []);
  });
});
