/**
 * The scenarios of one bench run (--shared-prefix-row, --repeat-row, --mixed-row, --multi-model-row or their
 * --X-only forms): which run, in what order, what each prints, and the JSON they leave. A failed
 * scenario is printed and recorded as `{ error }` without losing the others or the main table.
 */
import type { BenchOptions } from './options.js';
import { measureMixedLengths, promptTokensPerSecond } from './mixed-lengths.js';
import { measureMultiModel } from './multi-model.js';
import { formatScenario, OURS, SERVER, type ScenarioContext, type ScenarioResult, type ScenarioServers } from './scenario.js';
import { measureRepeatedPrompts } from './repeated-prompts.js';
import { measureSharedPrefix } from './shared-prefix.js';
import { median } from './stats.js';
import type { WorkloadSpec } from './workload.js';

/** The texts the scenarios need, fitted with the model's tokenizer by the caller. */
export interface ScenarioTexts {
  prefix: string;
  prefixTokens: number;
  longText: string;
  longTokens: number;
}

export type ScenarioOutcome = ScenarioResult | { error: string };

/** Shared-prefix and mixed: 8 clients and 32 generated tokens, as the issue gives them. */
const CLIENTS = 8;
const SHORT_MAX_TOKENS = 32;
const LONG_MAX_TOKENS = 16;

const fmt = (v: number | null | undefined, digits = 0) => (v === null || v === undefined ? '-' : v.toFixed(digits));

/** The median of the prompt tokens one side reported taking from its cache per request, in one phase. */
const cachedMedian = (r: ScenarioResult, phase: string, side: string) =>
  median(r.runs.filter((x) => x.phase === phase && x.target === side).flatMap((x) => x.cachedTokens));

export async function runScenarios(
  options: BenchOptions,
  servers: ScenarioServers,
  texts: ScenarioTexts,
  workload: WorkloadSpec,
  ctx: Omit<ScenarioContext, 'rounds'>,
): Promise<Record<string, ScenarioOutcome>> {
  const c: ScenarioContext = { ...ctx, rounds: options.rounds };
  const out: Record<string, ScenarioOutcome> = {};
  const attempt = async (key: string, title: string, run: () => Promise<ScenarioResult>, extra: (r: ScenarioResult) => string[] = () => []) => {
    if (ctx.stopping()) return;
    try {
      const result = await run();
      out[key] = result;
      process.stdout.write(`\n${formatScenario(title, result, extra(result))}\n`);
    } catch (err) {
      if (ctx.stopping()) throw err;
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      out[key] = { error: message };
      ctx.log(`${key} failed: ${message}`);
      process.stdout.write(`\n${title}: FAILED (${message.split('\n')[0]})\n`);
    }
  };

  if (options.sharedPrefixRow) {
    await attempt(
      'sharedPrefix',
      `shared prefix: ${CLIENTS} clients, ~${texts.prefixTokens}-token common system prompt + short distinct questions, ${SHORT_MAX_TOKENS} tokens out; ` +
        `cold = fresh servers, warm = every slot has seen the prefix (ratio = ours / llama-server tok/s)`,
      () => measureSharedPrefix({
        servers,
        clients: CLIENTS,
        prefix: texts.prefix,
        prefixTokens: texts.prefixTokens,
        maxTokens: SHORT_MAX_TOKENS,
        requestsPerClient: options.requestsPerClient,
        workload,
      }, c),
      // llama-server says how many prompt tokens each request took from its cache; ours does not.
      (r) => [`  llama-server prompt tokens reused from its cache per request (median): cold ${fmt(cachedMedian(r, 'cold', SERVER))}, warm ${fmt(cachedMedian(r, 'warm', SERVER))}`],
    );
  }
  if (options.repeatRow) {
    const slots = 16;
    await attempt(
      'repeatedPrompts',
      `repeated prompts: 32 distinct ~${options.promptTokens}-token prompts through ${slots} slots, ${workload.maxTokens} tokens out; ` +
        `sent once (not measured), then c1 = 8 of them again from 1 client, c${slots} = all again from ${slots} clients (ratio = ours / llama-server tok/s)`,
      () => measureRepeatedPrompts({ servers, slots, prompts: 32, singleRequests: 8, workload, promptTokens: options.promptTokens }, c),
      (r) => [`  prompt tokens reused per request (median): llama-server c1 ${fmt(cachedMedian(r, 'c1', SERVER))}, c${slots} ${fmt(cachedMedian(r, `c${slots}`, SERVER))}`],
    );
  }
  if (options.mixedRow) {
    await attempt(
      'mixedLengths',
      `mixed lengths: 4 clients with ~${texts.longTokens}-token prompts (${LONG_MAX_TOKENS} tokens out) back to back + 4 clients with ` +
        `~${options.promptTokens}-token prompts (${SHORT_MAX_TOKENS} tokens out); short = their TTFT, all = total throughput`,
      () => measureMixedLengths({
        servers,
        longClients: 4,
        shortClients: 4,
        longText: texts.longText,
        longTokens: texts.longTokens,
        longMaxTokens: LONG_MAX_TOKENS,
        shortMaxTokens: SHORT_MAX_TOKENS,
        requestsPerClient: options.requestsPerClient,
        workload,
      }, c),
      (r) => [`  prompt tokens processed per second over the level (median): ours ${fmt(promptTokensPerSecond(r.runs, OURS))}, ` +
        `llama-server ${fmt(promptTokensPerSecond(r.runs, SERVER))}`],
    );
  }
  if (options.multiModelRow) {
    const threadsPerModel = Math.max(1, Math.floor(options.threads / 2));
    await attempt(
      'multiModel',
      `multi-model: two models at once (the bench model twice), ${CLIENTS} clients each, ${workload.maxTokens} tokens out, ` +
        `${threadsPerModel} thread(s) per model; ours = one supervisor, two workers; llama-server = two processes; both = aggregate`,
      () => measureMultiModel({
        servers,
        clients: CLIENTS,
        ctxPerSlot: options.ctxPerSlot,
        threadsPerModel,
        requestsPerClient: options.requestsPerClient,
        workload,
      }, c),
    );
  }
  return out;
}
