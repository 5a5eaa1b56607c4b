/** The bench waits for a freshly started service to go quiet before its first round (scripts/bench/runner.ts settle). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { settle } from '../../../scripts/bench/runner.js';

test('settle waits until a target uses under 10 ms of CPU a second, two seconds in a row, or gives up at its limit', async () => {
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  // Busy (50 ms of CPU a second) for its first 2.5 s, then quiet; another never quiet; one without CPU figures.
  const calming = { label: 'calming', cpuSeconds: () => Math.min(elapsed(), 2.5) * 0.05 };
  const lines: string[] = [];
  const waited = await settle([calming, { label: 'none' }], { log: (l) => lines.push(l) });
  assert.ok(waited.calming! >= 3.9 && waited.calming! < 8, `waited ${waited.calming} s`);
  assert.equal(waited.none, undefined, 'a target without CPU figures is not waited for');
  assert.deepEqual(lines, []);
  const t0 = performance.now();
  const busy = { label: 'busy', cpuSeconds: () => ((performance.now() - t0) / 1000) * 0.5 };
  const gaveUp = await settle([busy], { log: (l) => lines.push(l) }, 10, 2500);
  assert.ok(gaveUp.busy! >= 2.5 && gaveUp.busy! < 5, `gave up after ${gaveUp.busy} s`);
  assert.match(lines[0] ?? '', /busy did not settle/);
});
