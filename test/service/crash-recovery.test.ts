/**
 * Isolation: kill -9 of one model's host ends its in-flight requests with MODEL_CRASHED, its
 * port answers 503 with Retry-After while it restarts, it comes back, and the other model
 * serves throughout. Crashes in a row back off exponentially up to the cap. Each test crashes only
 * its own worker, so its restart counts and delays do not depend on the other tests or their order.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, alive, tinyBpeModel, tinyModel, waitFor, type SseEvent } from './service-fixture.js';

/** Long enough to see the `restarting` state between a crash and the new host. */
const BACKOFF_MS = 1500;
/** Below the third delay (4 × BACKOFF_MS), so the cap shows. */
const BACKOFF_MAX_MS = 4000;

describe('a model host that dies', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure(
      // alpha: the isolation test's; beta: serves throughout; gamma: the backoff test's.
      { alpha: { model: tinyModel }, beta: { model: tinyBpeModel }, gamma: { model: tinyModel } },
      { RESTART_BACKOFF_MS: String(BACKOFF_MS), RESTART_BACKOFF_MAX_MS: String(BACKOFF_MAX_MS) },
    );
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta'), service.waitReady('gamma')]);
  });

  after(() => service.cleanup());

  test('kill -9: MODEL_CRASHED in flight, 503 while restarting, recovery, the other model unaffected', async () => {
    const first = await service.worker('alpha');
    const oldPid = first.pid as number;

    // beta serves in a loop for the whole test
    let betaOk = 0;
    const betaFailures: unknown[] = [];
    let keepGoing = true;
    const betaLoop = (async () => {
      while (keepGoing) {
        const res = await service.complete('beta', { input: 'ping', params: { max_tokens: 3, ignore_eos: true } });
        if (res.status === 200) betaOk++;
        else betaFailures.push(res.body);
      }
    })();

    let firstToken!: () => void;
    const streaming = new Promise<void>((r) => (firstToken = r));
    const inFlightStream = service.stream('alpha', { input: 'long', params: { max_tokens: 480, ignore_eos: true } }, (e) => {
      if (e.event === 'token') firstToken();
    });
    await streaming;
    const inFlightJson = service.complete('alpha', { input: 'long too', params: { max_tokens: 480, ignore_eos: true } });
    await waitFor('both requests in flight', async () => ((await service.worker('alpha')).in_flight === 2 ? true : undefined));

    process.kill(oldPid, 'SIGKILL');

    const events = await inFlightStream;
    const last = events.at(-1) as SseEvent;
    assert.equal(last.event, 'error');
    assert.equal(last.data.error.code, 'MODEL_CRASHED');
    const json = await inFlightJson;
    assert.equal(json.status, 503);
    assert.equal(json.body.error.code, 'MODEL_CRASHED');

    const ready = await fetch(service.url('alpha', '/readyz'));
    assert.equal(ready.status, 503);
    assert.ok(Number(ready.headers.get('retry-after')) >= 1);
    assert.equal(((await ready.json()) as { state: string }).state, 'restarting');
    const refused = await service.complete('alpha', { input: 'now?', params: { max_tokens: 2 } });
    assert.equal(refused.status, 503);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.match(refused.body.error.code, /^(MODEL_CRASHED|MODEL_NOT_READY)$/);

    await service.waitReady('alpha');
    const recovered = await service.worker('alpha');
    assert.equal(recovered.state, 'ready');
    assert.equal(recovered.restarts, 1);
    assert.notEqual(recovered.pid, oldPid);
    assert.equal(alive(oldPid), false);
    const again = await service.complete('alpha', { input: 'back?', params: { max_tokens: 3, ignore_eos: true } });
    assert.equal(again.status, 200);

    const betaBefore = betaOk;
    await waitFor('beta to keep answering', async () => (betaOk > betaBefore ? true : undefined));
    keepGoing = false;
    await betaLoop;
    assert.deepEqual(betaFailures, []);
    assert.ok(betaOk > 1);
    const beta = await service.worker('beta');
    assert.equal(beta.restarts, 0);
    assert.equal(beta.state, 'ready');
  });

  test('crashes in a row back off exponentially, up to RESTART_BACKOFF_MAX_MS', async () => {
    // Three crashes show both: the second delay doubles the first, the third is capped.
    assert.ok(BACKOFF_MS * 2 < BACKOFF_MAX_MS && BACKOFF_MS * 4 > BACKOFF_MAX_MS);
    assert.equal((await service.worker('gamma')).restarts, 0);
    // The n-th crash in a row (each within a minute of the last start) waits BACKOFF_MS × 2^(n-1), capped.
    for (let crash = 1; crash <= 3; crash++) {
      const ready = await service.worker('gamma');
      assert.equal(ready.state, 'ready');
      process.kill(ready.pid as number, 'SIGKILL');
      const restarting = await service.waitState('gamma', 'restarting');
      const expected = Math.min(BACKOFF_MS * 2 ** (crash - 1), BACKOFF_MAX_MS);
      assert.match(restarting.reason ?? '', new RegExp(`restarting in ${expected} ms`), `crash ${crash}`);
      assert.equal(restarting.restarts, crash);
      await service.waitReady('gamma');
      assert.notEqual((await service.worker('gamma')).pid, ready.pid);
    }
  });
});
