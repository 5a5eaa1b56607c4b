/** The bench's comparison rows (scripts/bench/report.ts, scenario.ts): CPU per token and one row per scenario phase. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { comparisonRows, formatTable, supervisorUsPerTokenOverall } from '../../../scripts/bench/report.js';
import { levelRun, summarize, type LevelRun } from '../../../scripts/bench/runner.js';
import { scenarioRows } from '../../../scripts/bench/scenario.js';
import type { RequestOutcome } from '../../../scripts/bench/target.js';

const outcome = (tokensOut: number, ttftMs: number): RequestOutcome => ({
  ok: true, ttftMs, totalMs: ttftMs * 2, tokensOut, tokensIn: 64, cachedTokens: null, streamedEvents: tokensOut, finishReason: 'length',
});

/** 1,000 tokens in 10 s; CPU as given (null: not measured). */
function run(target: string, phase: string | undefined, own: number | null, supervisor: number | null): LevelRun {
  const r = levelRun(target, 0, 4, 250, { wallMs: 10_000, outcomes: [outcome(250, 100), outcome(250, 200), outcome(250, 300), outcome(250, 400)] });
  return { ...r, ...(phase ? { phase } : {}), ownCpuSeconds: own, supervisorCpuSeconds: supervisor };
}

test('CPU per 1,000 tokens: supervisor, host = ours minus supervisor, llama-server; supervisor µs per token', () => {
  const runs = [run('ours', undefined, 12, 0.05), run('llama-server', undefined, 11, null)];
  const [row] = comparisonRows(summarize(runs, ['ours', 'llama-server'], [4]), 'ours', 'llama-server');
  assert.ok(row);
  assert.equal(row.oursSupervisorCpuPer1k, 0.05);
  assert.ok(Math.abs(row.oursHostCpuPer1k! - 11.95) < 1e-9);
  assert.equal(row.serverCpuPer1k, 11);
  assert.ok(Math.abs(row.supervisorUsPerToken! - 50) < 1e-9);
  assert.equal(row.ratio, 1);
});

test('supervisor µs per token: pooled, per round and their median, and over every run', () => {
  // Three rounds of 1,000 tokens: 20, 30 and 130 ms of supervisor CPU (a collection in the last).
  const runs = [0.02, 0.03, 0.13].flatMap((cpu, round) => [{ ...run('ours', undefined, 12, cpu), round }, { ...run('llama-server', undefined, 11, null), round }]);
  const [row] = comparisonRows(summarize(runs, ['ours', 'llama-server'], [4]), 'ours', 'llama-server');
  assert.ok(row);
  assert.ok(Math.abs(row.supervisorUsPerToken! - 60) < 1e-9);
  assert.deepEqual(row.supervisorUsPerTokenRounds?.map((x) => Math.round(x)), [20, 30, 130]);
  assert.ok(Math.abs(row.supervisorUsPerTokenMedian! - 30) < 1e-9);
  assert.match(formatTable([row]), /\| 60 \(30\) +\|/);
  const other = { ...run('ours', undefined, 12, 0.02), concurrency: 16, tokensOut: 5000 };
  assert.ok(Math.abs(supervisorUsPerTokenOverall([...runs, other], 'ours')! - (0.2 * 1e6) / 8000) < 1e-9);
  // A round without the figure leaves the per-round list empty rather than guessing.
  const missing = [{ ...runs[0]!, supervisorCpuSeconds: null }, ...runs.slice(1)];
  const [none] = comparisonRows(summarize(missing, ['ours', 'llama-server'], [4]), 'ours', 'llama-server');
  assert.equal(none?.supervisorUsPerTokenRounds, null);
  assert.equal(none?.supervisorUsPerTokenMedian, null);
});

test('a side without CPU figures leaves those cells empty, not zero', () => {
  const runs = [run('ours', undefined, null, null), run('llama-server', undefined, null, null)];
  const [row] = comparisonRows(summarize(runs, ['ours', 'llama-server'], [4]), 'ours', 'llama-server');
  assert.deepEqual([row?.oursSupervisorCpuPer1k, row?.oursHostCpuPer1k, row?.serverCpuPer1k, row?.supervisorUsPerToken], [null, null, null, null]);
});

test('a scenario gets one row per phase, labelled with it, in the order given', () => {
  const runs = [run('ours', 'warm', 5, 0.1), run('llama-server', 'warm', 5, null), run('ours', 'cold', 9, 0.1), run('llama-server', 'cold', 9, null)];
  const rows = scenarioRows(runs, ['cold', 'warm']);
  assert.deepEqual(rows.map((r) => r.label), ['cold', 'warm']);
  assert.equal(rows[0]?.serverCpuPer1k, 9);
  assert.match(formatTable(rows, 'phase').split('\n')[2] ?? '', /^\| cold /);
});

test('the paired ratio is the median of the rounds\' own ratios, beside the ratio of the medians', () => {
  // The machine slows down in round 3: the medians' ratio mixes rounds, each round's ratio does not.
  const wall = (target: string, round: number, ms: number): LevelRun => ({
    ...levelRun(target, round, 4, 250, { wallMs: ms, outcomes: [outcome(250, 100), outcome(250, 100), outcome(250, 100), outcome(250, 100)] }),
    ownCpuSeconds: null,
    supervisorCpuSeconds: null,
  });
  const runs = [
    wall('ours', 0, 10_000), wall('llama-server', 0, 10_500),
    wall('ours', 1, 10_100), wall('llama-server', 1, 10_400),
    wall('ours', 2, 14_000), wall('llama-server', 2, 14_300),
  ];
  const [row] = comparisonRows(summarize(runs, ['ours', 'llama-server'], [4]), 'ours', 'llama-server');
  assert.ok(row);
  assert.deepEqual(row.ratioRounds.map((x) => x.toFixed(3)), ['1.050', '1.030', '1.021']);
  assert.equal(row.pairedRatio?.toFixed(3), '1.030');
  assert.equal(row.ratio?.toFixed(3), (10_500 / 10_100).toFixed(3), 'the medians come from different rounds');
  assert.match(formatTable([row]).split('\n')[2] ?? '', /1\.05 \/ 1\.03 \/ 1\.02 \(1\.03x\)/);
});
