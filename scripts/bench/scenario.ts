/**
 * What the side-by-side scenarios (shared-prefix.ts, mixed-lengths.ts, multi-model.ts) share.
 *
 * Each round starts one side fresh, measures it with the machine to itself, stops it, then does the
 * same with the other side: ours first in even rounds, llama-server first in odd ones (ABBA). Fresh
 * processes because a scenario's figures depend on what the servers have seen (a prompt cache that
 * already holds the shared prefix, the slots a long prompt left filled), and alone on the machine
 * because an idle server still holds memory and, on 2 cores, any wakeup is the other side's loss.
 *
 * A scenario's measurement gives LevelRuns tagged with a `phase` ("cold", "warm", "short", ...);
 * the rows are the main table's (summarize + comparisonRows), one per phase.
 */
import { LlamaServerTarget } from './llama-server-target.js';
import { comparisonRows, formatTable, type ComparisonRow } from './report.js';
import { runLine, summarize, type LevelRun } from './runner.js';
import { ServiceTarget } from './service-target.js';

export const OURS = 'ours';
export const SERVER = 'llama-server';

export interface ScenarioSide {
  /** OURS or SERVER: the runs' `target`. */
  readonly label: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  describe(): Record<string, unknown>;
}

/** What bench.ts needs to run a scenario: stopping on signals, and its log. */
export interface ScenarioContext {
  rounds: number;
  log: (line: string) => void;
  /** Every started side goes here, so a signal stops it. */
  register: (side: { stop(): Promise<void> }) => void;
  /** True once a signal arrived: no new round starts. */
  stopping: () => boolean;
}

export interface ScenarioResult {
  scenario: string;
  /** How it was run and what each figure is (goes into the JSON). */
  note: string;
  config: Record<string, unknown>;
  rows: ComparisonRow[];
  /** Each side's describe() (the last round's instance: command lines, env files, versions). */
  sides: Record<string, Record<string, unknown>>;
  runs: LevelRun[];
}

/** `rounds` rounds of fresh sides in ABBA order; `measure` gets each started side and its round. */
export async function freshRounds<S extends ScenarioSide>(
  name: string,
  ctx: ScenarioContext,
  make: { ours: () => S; server: () => S },
  measure: (side: S, round: number) => Promise<LevelRun[]>,
): Promise<{ runs: LevelRun[]; sides: Record<string, Record<string, unknown>> }> {
  const runs: LevelRun[] = [];
  const sides: Record<string, Record<string, unknown>> = {};
  for (let round = 0; round < ctx.rounds && !ctx.stopping(); round++) {
    const order = round % 2 === 0 ? [make.ours, make.server] : [make.server, make.ours];
    for (const create of order) {
      if (ctx.stopping()) break;
      const side = create();
      ctx.register(side);
      try {
        ctx.log(`${name}: round ${round + 1}/${ctx.rounds}, starting ${side.label}`);
        await side.start();
        const mine = await measure(side, round);
        for (const run of mine) ctx.log(`${name}: round ${round + 1}/${ctx.rounds} ${run.phase ?? ''} ${runLine(run)}`);
        runs.push(...mine);
        sides[side.label] = side.describe();
      } finally {
        await side.stop();
      }
    }
  }
  return { runs, sides };
}

/** What both sides of every scenario are built from (the main table's model, build, threads and batch). */
export interface ScenarioServers {
  root: string;
  serverBin: string;
  modelPath: string;
  threads: number;
  batchSize: number;
  /** --server-arg values, appended to every llama-server command line. */
  serverArgs: readonly string[];
  log: (line: string) => void;
}

/**
 * Makers for one model on each side with `slots` slots of `ctxPerSlot` cells: our supervisor with
 * one worker (ServiceTarget, AUDIT and METRICS at their defaults) and llama-server (-np slots,
 * -c slots * ctxPerSlot, --no-kv-unified), as in the main table.
 */
export function singleModelSides(s: ScenarioServers, slots: number, ctxPerSlot: number, options: { hostPromptCache?: boolean } = {}) {
  const shared = { modelPath: s.modelPath, slots, ctxPerSlot, batchSize: s.batchSize, threads: s.threads };
  return {
    ours: () => new ServiceTarget({ ...shared, root: s.root, log: s.log, label: OURS, hostPromptCache: options.hostPromptCache ?? false }),
    server: () => new LlamaServerTarget({ ...shared, binary: s.serverBin, kvUnified: false, extraArgs: s.serverArgs, hostPromptCache: options.hostPromptCache ?? false }),
  };
}

/** One comparison row per phase (ours vs llama-server, medians over rounds, TTFT pooled). */
export function scenarioRows(runs: readonly LevelRun[], phases: readonly string[]): ComparisonRow[] {
  return phases.map((phase) => {
    const mine = runs.filter((r) => r.phase === phase);
    const concurrency = mine[0]?.concurrency ?? 0;
    const [row] = comparisonRows(summarize(mine, [OURS, SERVER], [concurrency]), OURS, SERVER);
    return { ...row!, label: phase };
  });
}

/** The scenario's title line, its table (a row per phase), then any lines of its own. */
export function formatScenario(title: string, result: ScenarioResult, extra: readonly string[] = []): string {
  return [title, formatTable(result.rows, 'phase'), ...extra].join('\n');
}

/** KV cells per slot for prompts of `tokens` plus `maxTokens` generated, with room to spare, in steps of 256. */
export function ctxFor(tokens: number, maxTokens: number): number {
  return Math.ceil((tokens + maxTokens + 64) / 256) * 256;
}
