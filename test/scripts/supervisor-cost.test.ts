/**
 * `npm run supervisor-cost` end to end on the tiny model: every request completes, the report
 * counts the tokens, the streams handed to the host and the supervisor's main thread with its
 * CPU and sleeps per request.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../scripts/lib/service-harness.js';
import { tempDir } from '../helpers.js';

test('supervisor-cost: per-thread CPU and sleeps per request of a running supervisor', { skip: process.platform !== 'linux' }, () => {
  const dir = tempDir();
  try {
    const json = join(dir.path, 'cost.json');
    const args = ['--import', 'tsx', 'scripts/supervisor-cost.ts', '--model-preset', 'tiny', '--requests', '6', '--concurrency', '2', '--warm-up', '2', '--max-tokens', '8', '--json', json];
    const run = spawnSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8', timeout: 180_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /\| thread \| name \| CPU ms \/ request \| sleeps \/ request \|/);
    assert.match(run.stdout, /total: \d+\.\d+ ms of supervisor CPU per request/);
    const report = JSON.parse(readFileSync(json, 'utf8'));
    assert.equal(report.requests, 6);
    assert.equal(report.failed, 0);
    assert.equal(report.tokens, 48);
    assert.ok(report.handedOver >= 1 && report.handedOver <= 6, `${report.handedOver} handed over`);
    const main = report.threads.find((t: { name: string }) => t.name.endsWith('(main)'));
    assert.ok(main, 'the main thread is listed');
    assert.ok(main.msPerRequest > 0 && main.switchesPerRequest > 0, JSON.stringify(main));
    assert.ok(report.supervisorMsPerRequest >= main.msPerRequest);
  } finally {
    dir.cleanup();
  }
});
