import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_LOAD_CRASHES, STABLE_MS, decideAfterExit, type ExitFacts } from '@lmserve/supervisor';

const base: ExitFacts = { fatal: false, readyForMs: 5_000, crashStreak: 0, backoffMs: 500, backoffMaxMs: 4_000 };

describe('what the supervisor does after a host exits on its own', () => {
  test('a crash of a serving host restarts it, the backoff doubling with the streak up to the cap', () => {
    const delays: number[] = [];
    let streak = 0;
    for (let i = 0; i < 6; i++) {
      const d = decideAfterExit({ ...base, crashStreak: streak });
      assert.equal(d.action, 'restart');
      if (d.action === 'restart') delays.push(d.delayMs);
      streak = d.crashStreak;
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 4000, 4000]);
  });

  test('a host that served longer than STABLE_MS starts a new streak', () => {
    const d = decideAfterExit({ ...base, readyForMs: STABLE_MS + 1, crashStreak: 5 });
    assert.deepEqual(d, { action: 'restart', delayMs: 500, crashStreak: 1 });
  });

  test('a load error the host reported fails the worker at once (it would fail the same way again)', () => {
    assert.deepEqual(decideAfterExit({ ...base, fatal: true, readyForMs: undefined }), { action: 'fail', reason: 'load-error', crashStreak: 0 });
  });

  test('a fatal error after the model served is a crash like any other', () => {
    assert.equal(decideAfterExit({ ...base, fatal: true }).action, 'restart');
  });

  test(`crashing while loading ${MAX_LOAD_CRASHES} times in a row fails the worker`, () => {
    let streak = 0;
    const actions: string[] = [];
    for (let i = 0; i < MAX_LOAD_CRASHES; i++) {
      const d = decideAfterExit({ ...base, readyForMs: undefined, crashStreak: streak });
      actions.push(d.action);
      streak = d.crashStreak;
    }
    assert.deepEqual(actions, [...Array(MAX_LOAD_CRASHES - 1).fill('restart'), 'fail']);
  });
});
