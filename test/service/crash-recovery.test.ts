/**
 * Isolation: kill -9 of one model's host ends its in-flight requests with MODEL_CRASHED, its
 * port answers 503 with Retry-After while it restarts, it comes back, and the other model
 * serves throughout.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, alive, tinyBpeModel, tinyModel, waitFor, type SseEvent } from './service-fixture.js';

describe('a model host that dies', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure(
      { alpha: { model: tinyModel }, beta: { model: tinyBpeModel } },
      { RESTART_BACKOFF_MS: '1500' },
    );
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
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

  test('crashes in a row back off exponentially', async () => {
    const before = await service.worker('alpha');
    process.kill(before.pid as number, 'SIGKILL');
    const restarting = await service.waitState('alpha', 'restarting');
    // second crash in a row (ready for less than a minute): the delay doubles
    assert.match(restarting.reason ?? '', /restarting in 3000 ms/);
    await service.waitReady('alpha');
    assert.equal((await service.worker('alpha')).restarts, before.restarts + 1);
  });
});
