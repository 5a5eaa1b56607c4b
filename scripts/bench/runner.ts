/**
 * Runs the comparison: for each round, for each concurrency level, every target in turn
 * (A, B, A, B, ...) gets the same requests from the same number of closed-loop clients.
 */
import { readFileSync } from 'node:fs';
import { median, percentile } from './stats.js';
import type { BenchRequest, BenchTarget, RequestOutcome } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

export interface LevelRun {
  target: string;
  round: number;
  /** A scenario's phase ("cold", "warm", "short", ...); absent in the main table's levels. */
  phase?: string;
  concurrency: number;
  requests: number;
  wallMs: number;
  /** Sum of the server-reported generated tokens. */
  tokensOut: number;
  tokensPerSecond: number;
  ttftMs: number[];
  promptTokens: number[];
  cachedTokens: number[];
  failures: string[];
  /** Requests whose reported token count differs from max_tokens. */
  countMismatches: number;
  /** CPU seconds the other targets' processes burnt meanwhile (they should be idle). */
  othersCpuSeconds: Record<string, number>;
  /**
   * CPU seconds the target's own processes used during the level (null in-process), and the
   * seconds the hypervisor stole from this machine's CPUs meanwhile: a slow level with the usual
   * CPU seconds but a longer wall time points at the machine, not at the server.
   */
  ownCpuSeconds: number | null;
  stealSeconds: number | null;
  /** Our service only: the supervisor's share of ownCpuSeconds (HTTP, SSE, relay, audit, metrics). */
  supervisorCpuSeconds: number | null;
}

/** Steal time of all CPUs so far (/proc/stat, clock ticks at 100 Hz); null where unknown. */
function stealSeconds(): number | null {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
    const steal = Number(fields[8]);
    return Number.isFinite(steal) ? steal / 100 : null;
  } catch {
    return null;
  }
}

export interface LevelSummary {
  concurrency: number;
  flagged: boolean;
  notes: string[];
  perTarget: Record<string, {
    tokensPerSecondMedian: number | null;
    tokensPerSecondRounds: number[];
    ttftP50: number | null;
    ttftP95: number | null;
    promptTokensMedian: number | null;
    cachedTokensMax: number | null;
    /** CPU seconds of the target's processes per 1,000 generated tokens, all rounds pooled (null in-process). */
    ownCpuSecondsPer1kTokens: number | null;
    /** Our service only: the supervisor process's CPU seconds per 1,000 generated tokens. */
    supervisorCpuSecondsPer1kTokens: number | null;
    /**
     * Our service only: the supervisor's CPU µs per generated token in each round (null unless every
     * round measured it). A major collection of the supervisor's heap (about 100 ms of CPU on V8's
     * helper threads, every few hundred requests) lands in whichever level is running; at c=1, with
     * a few thousand tokens over all rounds, one of them moves the pooled figure by tens of µs.
     */
    supervisorUsPerTokenRounds: number[] | null;
  }>;
}

export interface RunPlan {
  concurrency: number[];
  rounds: number;
  requestsPerClient: number;
  /** At least this many requests per level (0: concurrency × requestsPerClient). */
  minRequests?: number;
  workload: WorkloadSpec;
  log: (line: string) => void;
}

/** Sends `requests` through `clients` closed-loop clients (client k takes k, k+clients, ...). */
export async function runLevel(target: BenchTarget, requests: readonly BenchRequest[], clients: number): Promise<{
  wallMs: number;
  outcomes: RequestOutcome[];
}> {
  const outcomes: RequestOutcome[] = new Array(requests.length);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, k) => {
      for (let i = k; i < requests.length; i += clients) outcomes[i] = await target.run(requests[i]!);
    }),
  );
  return { wallMs: performance.now() - started, outcomes };
}

/** The figures of one measured run of requests (CPU fields null: the caller's cpuMeter fills them). */
export function levelRun(target: string, round: number, concurrency: number, maxTokens: number, result: {
  wallMs: number;
  outcomes: RequestOutcome[];
}): LevelRun {
  const { wallMs, outcomes } = result;
  const failures = outcomes.filter((o) => !o.ok).map((o) => o.error ?? 'failed');
  const tokensOut = outcomes.reduce((sum, o) => sum + (o.tokensOut ?? 0), 0);
  return {
    target,
    round,
    concurrency,
    requests: outcomes.length,
    wallMs,
    tokensOut,
    tokensPerSecond: (tokensOut * 1000) / wallMs,
    ttftMs: outcomes.flatMap((o) => (o.ttftMs === null ? [] : [o.ttftMs])),
    promptTokens: outcomes.flatMap((o) => (o.tokensIn === null ? [] : [o.tokensIn])),
    cachedTokens: outcomes.flatMap((o) => (o.cachedTokens === null ? [] : [o.cachedTokens])),
    failures,
    countMismatches: outcomes.filter((o) => o.ok && o.tokensOut !== maxTokens).length,
    othersCpuSeconds: {},
    ownCpuSeconds: null,
    stealSeconds: null,
    supervisorCpuSeconds: null,
  };
}

/**
 * Warm-up requests per target. A few would load the weights and size the buffers; the rest are for
 * our supervisor's JIT and heap: with 12 warm-up requests it still spent 24 ms of CPU per request
 * (V8's platform threads compiling and collecting) in the 20 s after, 14.5 ms after 200, 9 ms in
 * its steady state, and the first round of the table carried the difference.
 */
export const WARM_UP_REQUESTS = 256;

/** Short requests on every target first: loads weights into the page cache, sizes compute buffers, warms the JIT. */
export async function warmUp(targets: readonly BenchTarget[], plan: RunPlan, count = WARM_UP_REQUESTS): Promise<void> {
  const top = Math.max(...plan.concurrency);
  const spec = { ...plan.workload, maxTokens: Math.min(8, plan.workload.maxTokens) };
  for (const target of targets) {
    const requests = roundRequests(spec, Math.max(top, count), 900_000);
    const { outcomes } = await runLevel(target, requests, top);
    const failed = outcomes.find((o) => !o.ok);
    if (failed) throw new Error(`warm-up request to ${target.label} failed: ${failed.error}`);
  }
}

/**
 * Waits until every target is quiet: under `quietMsPerS` of CPU a second, two seconds in a row (at
 * most `limitMs`). A service just started is not in its steady state: V8's memory reducer runs full
 * collections some seconds after start, and those would land in the first round's figures (our
 * supervisor used 0.23 s of CPU during the first round's llama-server level, then 0.02-0.07).
 * Returns the seconds waited per target.
 */
export async function settle(targets: readonly Pick<BenchTarget, 'label' | 'cpuSeconds'>[], plan: Pick<RunPlan, 'log'>, quietMsPerS = 10, limitMs = 30_000): Promise<Record<string, number>> {
  const waited: Record<string, number> = {};
  for (const target of targets) {
    const read = () => target.cpuSeconds?.() ?? null;
    const started = performance.now();
    let quiet = 0;
    let last = read();
    if (last === null) continue;
    while (quiet < 2 && performance.now() - started < limitMs) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const now = read();
      if (now === null) break;
      quiet = (now - last) * 1000 < quietMsPerS ? quiet + 1 : 0;
      last = now;
    }
    waited[target.label] = (performance.now() - started) / 1000;
    if (quiet < 2) plan.log(`${target.label} did not settle under ${quietMsPerS} ms of CPU a second within ${limitMs / 1000} s; measuring anyway`);
  }
  return waited;
}

/** Anything whose CPU time the bench can read: a target, or a scenario's side (one or more processes). */
export interface CpuSource {
  cpuSeconds?(): number | null;
  supervisorCpuSeconds?(): number | null;
}

export interface CpuDelta {
  ownCpuSeconds: number | null;
  supervisorCpuSeconds: number | null;
  stealSeconds: number | null;
}

/** Reads the CPU counters now; the function it returns gives what was used since (null where unknown). */
export function cpuMeter(source: CpuSource): () => CpuDelta {
  const ownBefore = source.cpuSeconds?.() ?? null;
  const supervisorBefore = source.supervisorCpuSeconds?.() ?? null;
  const stealBefore = stealSeconds();
  return () => {
    const ownAfter = source.cpuSeconds?.() ?? null;
    const supervisorAfter = source.supervisorCpuSeconds?.() ?? null;
    const stealAfter = stealSeconds();
    return {
      ownCpuSeconds: ownBefore !== null && ownAfter !== null ? ownAfter - ownBefore : null,
      supervisorCpuSeconds: supervisorBefore !== null && supervisorAfter !== null ? supervisorAfter - supervisorBefore : null,
      stealSeconds: stealBefore !== null && stealAfter !== null ? stealAfter - stealBefore : null,
    };
  };
}

/**
 * One level on one target: `requests` through `clients` closed-loop clients, with the target's own
 * CPU (supervisor and hosts apart, for ours), the steal time, and what `others` burnt meanwhile.
 */
export async function measureLevel(
  target: BenchTarget,
  requests: readonly BenchRequest[],
  clients: number,
  round: number,
  maxTokens: number,
  others: readonly BenchTarget[] = [],
): Promise<LevelRun> {
  const othersBefore = others.map((t) => t.cpuSeconds?.() ?? null);
  const cpu = cpuMeter(target);
  const result = await runLevel(target, requests, clients);
  const run = { ...levelRun(target.label, round, clients, maxTokens, result), ...cpu() };
  others.forEach((t, i) => {
    const after = t.cpuSeconds?.() ?? null;
    const before = othersBefore[i];
    if (after !== null && before !== null && before !== undefined) run.othersCpuSeconds[t.label] = after - before;
  });
  return run;
}

/** A run's progress line: label, tok/s, tokens and wall time, TTFT p50, CPU, steal, failures. */
export function runLine(run: LevelRun): string {
  const ttft = percentile(run.ttftMs, 50);
  return `${run.target}: ${run.tokensPerSecond.toFixed(1)} tok/s, ` +
    `${run.tokensOut} tokens in ${(run.wallMs / 1000).toFixed(2)} s, TTFT p50 ${ttft?.toFixed(0) ?? '-'} ms` +
    (run.ownCpuSeconds !== null ? `, ${run.ownCpuSeconds.toFixed(1)} CPU s` : '') +
    (run.supervisorCpuSeconds !== null ? ` (supervisor ${run.supervisorCpuSeconds.toFixed(2)})` : '') +
    (run.stealSeconds ? `, ${run.stealSeconds.toFixed(1)} s stolen` : '') +
    (run.failures.length ? `, ${run.failures.length} FAILED (${run.failures[0]})` : '') +
    (run.countMismatches ? `, ${run.countMismatches} token-count mismatches` : '');
}

export async function runRounds(targets: readonly BenchTarget[], plan: RunPlan): Promise<LevelRun[]> {
  const runs: LevelRun[] = [];
  let sequence = 0;
  for (let round = 0; round < plan.rounds; round++) {
    for (const concurrency of plan.concurrency) {
      const requests = roundRequests(plan.workload, Math.max(plan.minRequests ?? 0, concurrency * plan.requestsPerClient), sequence);
      sequence += requests.length;
      // ABBA: odd rounds run the targets in reverse, so neither side always goes first after a
      // level change (the machine's drift and the previous run's leftovers fall on both).
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const target of order) {
        const others = targets.filter((t) => t !== target);
        const run = await measureLevel(target, requests, concurrency, round, plan.workload.maxTokens, others);
        runs.push(run);
        plan.log(`round ${round + 1}/${plan.rounds} c=${concurrency} ${runLine(run)}`);
      }
    }
  }
  return runs;
}

export function summarize(runs: readonly LevelRun[], labels: readonly string[], concurrency: readonly number[]): LevelSummary[] {
  return concurrency.map((c) => {
    const summary: LevelSummary = { concurrency: c, flagged: false, notes: [], perTarget: {} };
    for (const label of labels) {
      const mine = runs.filter((r) => r.concurrency === c && r.target === label);
      const ttfts = mine.flatMap((r) => r.ttftMs);
      const failures = mine.reduce((n, r) => n + r.failures.length, 0);
      const mismatches = mine.reduce((n, r) => n + r.countMismatches, 0);
      if (failures) summary.notes.push(`${label}: ${failures} failed requests (${mine.flatMap((r) => r.failures)[0]})`);
      if (mismatches) summary.notes.push(`${label}: ${mismatches} requests generated a token count other than max_tokens`);
      if (failures || mismatches) summary.flagged = true;
      const cached = mine.flatMap((r) => r.cachedTokens);
      const tokens = mine.reduce((n, r) => n + r.tokensOut, 0);
      // Pooled over the rounds; null unless every round measured it.
      const per1k = (cpu: (r: LevelRun) => number | null): number | null => {
        const values = mine.map(cpu);
        if (tokens === 0 || values.length === 0 || values.some((v) => v === null)) return null;
        return ((values as number[]).reduce((a, b) => a + b, 0) * 1000) / tokens;
      };
      summary.perTarget[label] = {
        tokensPerSecondMedian: median(mine.map((r) => r.tokensPerSecond)),
        tokensPerSecondRounds: mine.map((r) => r.tokensPerSecond),
        ttftP50: percentile(ttfts, 50),
        ttftP95: percentile(ttfts, 95),
        promptTokensMedian: median(mine.flatMap((r) => r.promptTokens)),
        cachedTokensMax: cached.length ? Math.max(...cached) : null,
        ownCpuSecondsPer1kTokens: per1k((r) => r.ownCpuSeconds),
        supervisorCpuSecondsPer1kTokens: per1k((r) => r.supervisorCpuSeconds),
        supervisorUsPerTokenRounds: mine.length > 0 && mine.every((r) => r.supervisorCpuSeconds !== null && r.tokensOut > 0)
          ? mine.map((r) => ((r.supervisorCpuSeconds as number) * 1e6) / r.tokensOut)
          : null,
      };
    }
    return summary;
  });
}
