/**
 * The mixed-lengths scenario: `longClients` (4) clients send prompts of about 2,000 tokens back to
 * back (16 tokens generated each) while `shortClients` (4) clients each send `requestsPerClient`
 * short requests (the main workload's ~64-token prompt, 32 tokens generated). What it shows is how
 * each side schedules prompt processing against generation: a short request's TTFT is the wait for
 * a place in a batch that long prompt chunks also want.
 *
 * The long clients start first and keep sending until the last short request has ended; their
 * requests in flight then run to the end (not cancelled, so every request has the server's own
 * token counts), and the level ends with the last of them. One slot per client on both sides,
 * `ctxFor(2,000 + 16)` cells each (2,304). Every prompt has its own leading tag, so no prompt reuses
 * another's cache; llama-server runs with --cache-ram 0 as in the main table.
 *
 * Phases (rows): `short` (the short requests: TTFT p50/p95; tok/s over the time until the last one
 * ended), `long` (the long ones, over the whole level), `all` (every generated token over the whole
 * level: the total throughput; the side's CPU per 1,000 tokens).
 */
import { cpuMeter, levelRun, runLevel, type LevelRun } from './runner.js';
import { median } from './stats.js';
import { ctxFor, freshRounds, scenarioRows, singleModelSides, type ScenarioContext, type ScenarioResult, type ScenarioServers } from './scenario.js';
import type { BenchTarget, RequestOutcome } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

export interface MixedLengthsConfig {
  servers: ScenarioServers;
  longClients: number;
  shortClients: number;
  /** The long prompt's text (fitted to `longTokens` with the model's tokenizer, tag included). */
  longText: string;
  longTokens: number;
  longMaxTokens: number;
  shortMaxTokens: number;
  /** Short requests per short client. */
  requestsPerClient: number;
  /** The main workload: the short requests' prompt text and sampling. */
  workload: WorkloadSpec;
}

export const MIXED_PHASES = ['short', 'long', 'all'] as const;

export async function measureMixedLengths(c: MixedLengthsConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const slots = c.longClients + c.shortClients;
  const ctxPerSlot = ctxFor(c.longTokens, c.longMaxTokens);
  const longSpec: WorkloadSpec = { ...c.workload, baseText: c.longText, maxTokens: c.longMaxTokens };
  const shortSpec: WorkloadSpec = { ...c.workload, maxTokens: c.shortMaxTokens };
  const measure = async (side: BenchTarget, round: number): Promise<LevelRun[]> => {
    const warmUp = await runLevel(side, roundRequests({ ...shortSpec, maxTokens: 4 }, slots, 900_000), slots);
    const failed = warmUp.outcomes.find((o) => !o.ok);
    if (failed) throw new Error(`mixed-lengths warm-up request to ${side.label} failed: ${failed.error}`);

    const cpu = cpuMeter(side);
    const started = performance.now();
    let shortsDone = false;
    // Long request k is the same on both sides (tag sequence 100,000 + k); how many there are
    // depends on the side's speed.
    let nextLong = 100_000;
    const longOutcomes: RequestOutcome[] = [];
    const longClients = Array.from({ length: c.longClients }, async () => {
      while (!shortsDone) {
        const [request] = roundRequests(longSpec, 1, nextLong++);
        longOutcomes.push(await side.run(request!));
      }
    });
    const shorts = await runLevel(side, roundRequests(shortSpec, c.shortClients * c.requestsPerClient, 0), c.shortClients);
    shortsDone = true;
    await Promise.all(longClients);
    const wallMs = performance.now() - started;
    const used = cpu();

    const short = { ...levelRun(side.label, round, c.shortClients, c.shortMaxTokens, shorts), phase: 'short' };
    const long = { ...levelRun(side.label, round, c.longClients, c.longMaxTokens, { wallMs, outcomes: longOutcomes }), phase: 'long' };
    const all = {
      ...levelRun(side.label, round, slots, c.shortMaxTokens, { wallMs, outcomes: [...shorts.outcomes, ...longOutcomes] }),
      ...used,
      phase: 'all',
      // Each request against its own max_tokens (levelRun compares them all with one).
      countMismatches: short.countMismatches + long.countMismatches,
    };
    return [short, long, all];
  };
  const { runs, sides } = await freshRounds('mixed lengths', ctx, singleModelSides(c.servers, slots, ctxPerSlot), measure);
  return {
    scenario: 'mixed-lengths',
    note:
      `${c.longClients} clients send ~${c.longTokens}-token prompts (${c.longMaxTokens} tokens generated) back to back while ${c.shortClients} ` +
      `clients send ${c.requestsPerClient} short requests each (~64-token prompt, ${c.shortMaxTokens} tokens generated); EOS ignored; ` +
      `one slot per client, ${ctxPerSlot} cells each. The long clients stop once the last short request ended; their requests in flight ` +
      'run to the end. short = the short requests (tok/s over the time until the last short ended), long = the long ones, all = every ' +
      'request over the whole level (the total throughput). Fresh servers each round, one side at a time, ABBA; llama-server with --cache-ram 0',
    config: { longClients: c.longClients, shortClients: c.shortClients, longTokens: c.longTokens, longMaxTokens: c.longMaxTokens, shortMaxTokens: c.shortMaxTokens, requestsPerClient: c.requestsPerClient, ctxPerSlot },
    rows: scenarioRows(runs, MIXED_PHASES),
    sides,
    runs,
  };
}

/** Prompt tokens processed per second over the whole level (median over rounds), per side: the work the long prompts are. */
export function promptTokensPerSecond(runs: readonly LevelRun[], label: string): number | null {
  const mine = runs.filter((r) => r.phase === 'all' && r.target === label).map((r) => (r.promptTokens.reduce((a, b) => a + b, 0) * 1000) / r.wallMs);
  return median(mine);
}
