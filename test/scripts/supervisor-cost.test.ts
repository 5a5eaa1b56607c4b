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

test('supervisor-cost --levels: the bench sequence of levels, a line per level, the main thread apart', { skip: process.platform !== 'linux' }, () => {
  const dir = tempDir();
  try {
    const json = join(dir.path, 'levels.json');
    const args = ['--import', 'tsx', 'scripts/supervisor-cost.ts', '--model-preset', 'tiny', '--levels', '1,3', '--rounds', '2', '--pause-ms', '0', '--warm-up', '2', '--max-tokens', '4', '--json', json];
    const run = spawnSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8', timeout: 180_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /\| round \| concurrency \| requests \| tok\/s \| supervisor µs\/token \| main thread ms \| other threads ms \|/);
    assert.match(run.stdout, /over every level and round: \d+\.\d µs of supervisor CPU per token \(136 tokens\)/);
    const report = JSON.parse(readFileSync(json, 'utf8'));
    // max(8, 3c) requests a level: 8 at c=1, 9 at c=3; two rounds.
    assert.deepEqual(report.results.map((r: { round: number; concurrency: number; requests: number }) => [r.round, r.concurrency, r.requests]), [[0, 1, 8], [0, 3, 9], [1, 1, 8], [1, 3, 9]]);
    for (const r of report.results) {
      assert.equal(r.failed, 0);
      assert.equal(r.tokens, r.requests * 4);
      assert.ok(r.mainThreadMs > 0 && r.supervisorMs >= r.mainThreadMs, JSON.stringify(r));
    }
  } finally {
    dir.cleanup();
  }
});

test('supervisor-cost --levels refuses a level that is not a whole number', () => {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/supervisor-cost.ts', '--model-preset', 'tiny', '--levels', '1,x'], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /--levels must be whole numbers >= 1/);
});
