/**
 * The soak scenario (scripts/soak.ts), briefly: twice the capacity of a small worker for a few
 * seconds, streaming and not. Every accepted request completes, every refusal is a 429 with
 * Retry-After (streams included), the slots come back to 0, no host restarts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { soak } from '../../scripts/soak.js';
import { modelPath } from '../helpers.js';

test('twice the capacity for 12 s: all accepted complete, the rest are 429s, nothing leaks', async () => {
  const report = await soak({ seconds: 12, model: await modelPath('tiny'), slots: 2, queue: 2, maxTokens: 16 });
  assert.deepEqual(report.other, {}, 'no 5xx, no error event, no broken stream');
  assert.ok(report.completed > 20 && report.rejected > 0, JSON.stringify(report));
  assert.equal(report.sent, report.completed + report.rejected);
  assert.equal(report.rejectedWithoutRetryAfter, 0);
  assert.deepEqual(report.afterLoad, { busy: 0, inFlight: 0 });
  assert.equal(report.hostRestarts, 0);
  assert.ok(report.rss.supervisor.startMiB > 0 && report.rss.host.startMiB > 0, 'RSS was sampled');
  assert.notEqual(report.lagP99Seconds.supervisor, null, 'the lag was read');
});
