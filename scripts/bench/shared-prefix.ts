/**
 * The shared-prefix scenario: `clients` clients (8) whose prompts all start with the same system
 * prompt of about 530 tokens, followed by a distinct short question (about 15 tokens); 32 tokens
 * generated, EOS ignored. One slot per client on both sides, so after the first wave every slot
 * has seen the prefix.
 *
 * - cold: fresh servers (warmed up with unrelated short prompts only, so compute buffers and the
 *   page cache are ready but no cache holds the prefix), one request per client, all at once: every
 *   side must prefill the prefix 8 times unless it shares it across slots.
 * - warm: then `requestsPerClient` more requests per client, back to back: each slot already holds
 *   the prefix, so only the question is new.
 *
 * Both sides keep their default prompt caching: ours reuses a slot's KV prefix (and its host-memory
 * prompt cache, CACHE_RAM=8192, as llama-server's); llama-server gets
 * `cache_prompt: true` (its /completion default) and its default host-memory cache (--cache-ram
 * 8192, idle slots saved on a new task), unlike the main table's --cache-ram 0: here prompts repeat,
 * and what a user gets from each side's caching is the point. Raw prompts on both sides ("raw": true
 * on ours, /completion on llama-server), so both see the same tokens.
 */
import { measureLevel, runLevel, type LevelRun } from './runner.js';
import { ctxFor, freshRounds, scenarioRows, singleModelSides, type ScenarioContext, type ScenarioResult, type ScenarioServers } from './scenario.js';
import type { BenchTarget } from './target.js';
import { roundRequests, sharedPrefixRequests, type WorkloadSpec } from './workload.js';

export interface SharedPrefixConfig {
  servers: ScenarioServers;
  clients: number;
  /** The common system prompt (fitted to `prefixTokens` with the model's tokenizer) and its length. */
  prefix: string;
  prefixTokens: number;
  maxTokens: number;
  /** Warm-pass requests per client. */
  requestsPerClient: number;
  /** The main workload: its short prompts warm the servers up without touching the prefix. */
  workload: WorkloadSpec;
}

export const SHARED_PREFIX_PHASES = ['cold', 'warm'] as const;

/** About how long a question is in tokens (workload.ts question()), for the context size. */
const QUESTION_TOKENS = 24;

export async function measureSharedPrefix(c: SharedPrefixConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const ctxPerSlot = ctxFor(c.prefixTokens + QUESTION_TOKENS, c.maxTokens);
  const spec: WorkloadSpec = { ...c.workload, baseText: c.prefix, maxTokens: c.maxTokens };
  const measure = async (side: BenchTarget, round: number): Promise<LevelRun[]> => {
    // Unrelated prompts (distinct tags, the main text): nothing of the prefix gets cached.
    const warmUp = await runLevel(side, roundRequests({ ...c.workload, maxTokens: 4 }, c.clients, 900_000), c.clients);
    const failed = warmUp.outcomes.find((o) => !o.ok);
    if (failed) throw new Error(`shared-prefix warm-up request to ${side.label} failed: ${failed.error}`);
    // The same question numbers on both sides and in every round (fresh servers each round).
    const cold = await measureLevel(side, sharedPrefixRequests(spec, c.clients, 0), c.clients, round, c.maxTokens);
    const warm = await measureLevel(side, sharedPrefixRequests(spec, c.clients * c.requestsPerClient, c.clients), c.clients, round, c.maxTokens);
    return [{ ...cold, phase: 'cold' }, { ...warm, phase: 'warm' }];
  };
  const { runs, sides } = await freshRounds('shared prefix', ctx, singleModelSides(c.servers, c.clients, ctxPerSlot, { hostPromptCache: true }), measure);
  return {
    scenario: 'shared-prefix',
    note:
      `${c.clients} clients, one slot each on both sides; every prompt = the same system prompt of ~${c.prefixTokens} tokens + a blank line + ` +
      `a distinct question of ~15 tokens; ${c.maxTokens} tokens generated, EOS ignored. Each round: fresh servers (one side at a time, ABBA), ` +
      `warm-up with ${c.clients} unrelated short prompts, then cold = one request per client at once, then warm = ${c.requestsPerClient} ` +
      'more per client back to back (every slot has seen the prefix). llama-server at its prompt-cache defaults (cache_prompt true, ' +
      '--cache-ram 8192); tok/s = server-reported generated tokens / wall time of the phase (median over rounds); TTFT client-side, pooled',
    config: { clients: c.clients, prefixTokens: c.prefixTokens, maxTokens: c.maxTokens, requestsPerClient: c.requestsPerClient, ctxPerSlot, promptExample: sharedPrefixRequests(spec, 1, 0)[0]!.prompt },
    rows: scenarioRows(runs, SHARED_PREFIX_PHASES),
    sides,
    runs,
  };
}
