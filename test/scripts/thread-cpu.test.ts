/**
 * The bench's per-thread CPU reading (threadCpuSeconds): nanosecond run times summed over a
 * process's threads, against the kernel's own total for this process.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { processCpuSeconds, threadCpuSeconds } from '../../scripts/lib/service-harness.js';

test("threadCpuSeconds follows this process's CPU to well under a clock tick", { skip: process.platform !== 'linux' }, () => {
  const before = threadCpuSeconds(process.pid);
  const usageBefore = process.cpuUsage();
  const until = performance.now() + 150;
  let x = 0;
  while (performance.now() < until) x += Math.sqrt(x + 1);
  assert.ok(x > 0);
  const after = threadCpuSeconds(process.pid);
  const usage = process.cpuUsage(usageBefore);
  assert.ok(before !== null && after !== null);
  const spent = after - before;
  const expected = (usage.user + usage.system) / 1e6;
  // Both count every thread of the process; the readings themselves cost a little.
  assert.ok(Math.abs(spent - expected) < 0.02 + expected * 0.1, `schedstat ${spent.toFixed(4)} s, getrusage ${expected.toFixed(4)} s`);
  assert.ok(spent >= 0.1, `a 150 ms busy loop read as ${spent.toFixed(4)} s`);
  // Not rounded to the 10 ms ticks of /proc/<pid>/stat.
  assert.notEqual(Math.round(after * 1e6) % 10_000, 0);
  assert.equal(threadCpuSeconds(2 ** 22 + 12345), processCpuSeconds(2 ** 22 + 12345), 'a missing process reads as stat does (null)');
});
