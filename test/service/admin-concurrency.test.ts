/**
 * Admin actions on one worker are serialized: concurrent calls end in a defined state, the
 * same action asked twice joins the one in progress, and a conflicting one gets 409 CONFLICT.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel } from './service-fixture.js';

describe('concurrent admin actions', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({ alpha: { model: tinyModel }, beta: { model: tinyModel } });
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
  });

  after(() => service.cleanup());

  const act = (name: string, action: string) => service.admin('POST', `/admin/workers/${name}/${action}`);

  test('a stop and a restart sent together: one runs, the other is a 409 CONFLICT, and the state is the winner\'s', async () => {
    const [stop, restart] = await Promise.all([act('alpha', 'stop'), act('alpha', 'restart')]);
    const statuses = [stop.status, restart.status].sort();
    assert.deepEqual(statuses, [200, 409], JSON.stringify([stop.body, restart.body]));
    const loser = stop.status === 409 ? stop : restart;
    assert.equal(loser.body.error.code, 'CONFLICT');
    const winner = stop.status === 200 ? 'stop' : 'restart';
    if (winner === 'stop') {
      assert.equal((await service.worker('alpha')).state, 'stopped');
    } else {
      await service.waitReady('alpha');
    }
    // The worker answers admin calls normally afterwards.
    assert.equal((await act('alpha', 'start')).status, 200);
    await service.waitReady('alpha');
  });

  test('the same action sent three times at once runs once and every caller gets its result', async () => {
    const pid = (await service.worker('alpha')).pid;
    const results = await Promise.all([act('alpha', 'restart'), act('alpha', 'restart'), act('alpha', 'restart')]);
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
    const pids = new Set(results.map((r) => r.body.worker.pid));
    assert.equal(pids.size, 1, 'all three saw the same new host');
    assert.ok(!pids.has(pid), 'a new host runs');
    await service.waitReady('alpha');
    const worker = await service.worker('alpha');
    assert.equal(worker.restarts, 0, 'admin restarts are not crashes');
  });

  test('a burst of mixed actions on two workers never gives a 500 and ends in a defined state', async () => {
    const actions = ['start', 'stop', 'restart', 'stop', 'start', 'restart'];
    const calls = [];
    for (const name of ['alpha', 'beta']) for (const action of actions) calls.push(act(name, action));
    const results = await Promise.all(calls);
    for (const r of results) {
      assert.ok(r.status === 200 || r.status === 409, `${r.status} ${JSON.stringify(r.body)}`);
      if (r.status === 409) assert.equal(r.body.error.code, 'CONFLICT');
    }
    for (const name of ['alpha', 'beta']) {
      const state = (await service.worker(name)).state;
      assert.ok(['ready', 'starting', 'stopped'].includes(state), `${name}: ${state}`);
      assert.equal((await act(name, 'start')).status, 200);
      await service.waitReady(name);
      const res = await service.complete(name, { input: 'still serving', params: { max_tokens: 2 } });
      assert.equal(res.status, 200);
    }
  });
});
