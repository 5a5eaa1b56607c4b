/**
 * The repeated-prompts scenario: what a load tool that cycles through a fixed set of prompts sees.
 * `prompts` distinct prompts (the main workload's, ~64 tokens) go through `slots` slots, so by the
 * time a prompt comes back its slot has held others: only a host-memory prompt cache (llama-server's
 * --cache-ram, our CACHE_RAM) still has it.
 *
 * Each round, on fresh servers: a warm-up pass sends every prompt once at `slots` clients (not
 * measured); then `c1` sends the first `minRequests` prompts again from one client, and `cN` the
 * whole set again from `slots` clients. Both sides keep their default caches: llama-server
 * --cache-ram 8192 (its default) and `cache_prompt`, ours CACHE_RAM=8192.
 */
import { measureLevel, runLevel, type LevelRun } from './runner.js';
import { ctxFor, freshRounds, scenarioRows, singleModelSides, type ScenarioContext, type ScenarioResult, type ScenarioServers } from './scenario.js';
import type { BenchTarget } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

export interface RepeatedPromptsConfig {
  servers: ScenarioServers;
  /** Slots on each side, and the clients of the warm-up and the cN phase. */
  slots: number;
  /** Distinct prompts in the set (more than `slots`, so every slot is reused before a prompt returns). */
  prompts: number;
  /** Requests of the one-client phase. */
  singleRequests: number;
  /** The main workload: its tagged prompts, sampling and max tokens. */
  workload: WorkloadSpec;
  promptTokens: number;
}

export function repeatedPromptsPhases(slots: number): string[] {
  return ['c1', `c${slots}`];
}

export async function measureRepeatedPrompts(c: RepeatedPromptsConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const ctxPerSlot = ctxFor(c.promptTokens, c.workload.maxTokens);
  // The same prompts (and seeds) in every pass, on both sides.
  const set = roundRequests(c.workload, c.prompts, 0);
  const phases = repeatedPromptsPhases(c.slots);
  const measure = async (side: BenchTarget, round: number): Promise<LevelRun[]> => {
    const warmUp = await runLevel(side, set, c.slots);
    const failed = warmUp.outcomes.find((o) => !o.ok);
    if (failed) throw new Error(`repeated-prompts warm-up request to ${side.label} failed: ${failed.error}`);
    const single = await measureLevel(side, set.slice(0, c.singleRequests), 1, round, c.workload.maxTokens);
    const all = await measureLevel(side, set, c.slots, round, c.workload.maxTokens);
    return [{ ...single, phase: phases[0]! }, { ...all, phase: phases[1]! }];
  };
  const { runs, sides } = await freshRounds('repeated prompts', ctx, singleModelSides(c.servers, c.slots, ctxPerSlot, { hostPromptCache: true }), measure);
  return {
    scenario: 'repeated-prompts',
    note:
      `${c.prompts} distinct prompts of ~${c.promptTokens} tokens, ${c.workload.maxTokens} tokens out, EOS ignored, ${c.slots} slots on both sides. ` +
      `Each round: fresh servers (one side at a time, ABBA), every prompt once at ${c.slots} clients (not measured), then c1 = the first ` +
      `${c.singleRequests} again from one client, c${c.slots} = all ${c.prompts} again from ${c.slots} clients. Each prompt's slot has served ` +
      'others since: only a host-memory prompt cache still holds it (llama-server --cache-ram 8192, its default; ours CACHE_RAM=8192). ' +
      'tok/s = server-reported generated tokens / wall time of the phase (median over rounds); TTFT client-side, pooled',
    config: { prompts: c.prompts, slots: c.slots, singleRequests: c.singleRequests, maxTokens: c.workload.maxTokens, ctxPerSlot },
    rows: scenarioRows(runs, phases),
    sides,
    runs,
  };
}
