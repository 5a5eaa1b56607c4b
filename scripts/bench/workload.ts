/**
 * The workload both sides receive: a fixed text of about N tokens behind a per-request tag whose
 * first word differs from one request to the next, so neither server can reuse more than the BOS
 * token from an earlier prompt (prompt caching stays on at both sides' defaults but wins nothing).
 */
import type { BenchRequest, SamplingParams } from './target.js';

export const SAMPLING: SamplingParams = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.0,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

/** Control and byte tokens of the llama SPM vocab (ids 0..258); see /work/shared/benchmarking.md. */
export const BANNED_SPM_IDS: readonly number[] = Array.from({ length: 259 }, (_, i) => i);

const BASE_TEXT =
  'The harbour town woke slowly that morning. Fishermen checked their nets while the baker ' +
  'pulled the first loaves from a stone oven, and children ran along the wet cobbles toward the ' +
  'school on the hill. An old lighthouse keeper watched the grey sea, counting the boats that ' +
  'had not yet returned, and wrote each name into a worn leather notebook before the bells rang. ' +
  'Later the market filled with voices, baskets of apples, copper pans and bright wool scarves.';

// First words of the per-request tags: 64 words with 64 different first tokens in the llama SPM
// vocab, so two prompts fewer than 64 requests apart share no prefix beyond BOS; further apart
// they share BOS and the word (about 3 tokens), which stays below llama-server's slot-similarity
// threshold (10% of the prompt).
const TAG_WORDS = [
  'Amber', 'Birch', 'Cedar', 'Delta', 'Ember', 'Falcon', 'Garnet', 'Harbor', 'Indigo', 'Juniper',
  'Kestrel', 'Lantern', 'Maple', 'Nimbus', 'Orchid', 'Pepper', 'Quartz', 'Raven', 'Saffron',
  'Thistle', 'Umber', 'Violet', 'Willow', 'Yarrow', 'Zephyr', 'Copper', 'Lotus', 'Meadow',
  'Anchor', 'Beacon', 'Tiger', 'Wagon', 'Eagle', 'Fern', 'Glacier', 'Hazel', 'Iris', 'Jasper',
  'Pilot', 'Lemon', 'Marble', 'Summit', 'Olive', 'Pebble', 'Quill', 'River', 'Silver', 'Tulip',
  'Velvet', 'Walnut', 'Bridge', 'Zinc', 'Blossom', 'Crystal', 'Dragon', 'Forest', 'Granite',
  'Honey', 'Island', 'Jungle', 'Lagoon', 'Mountain', 'Ocean', 'Prairie',
];

export function requestTag(sequence: number): string {
  return `${TAG_WORDS[sequence % TAG_WORDS.length]} ${sequence}:`;
}

/**
 * The longest run of whole words of the base text (repeated as often as needed) whose `wrap`ped
 * form stays within `tokens`, measured with the model's own tokenizer (the same llama.cpp
 * tokenizer both sides use). Bisection: a 2,000-token prompt takes a dozen tokenizer calls.
 */
export function fitText(tokens: number, countTokens: (text: string) => number, wrap: (text: string) => string = (t) => t): string {
  const words = BASE_TEXT.split(' ');
  const take = (n: number) => Array.from({ length: n }, (_, i) => words[i % words.length]!).join(' ');
  let lo = 1; // always kept, even when one word is already too long
  let hi = Math.max(2, tokens * 2); // a word is at least one token (BOS and the wrap add more)
  while (lo + 1 < hi) {
    const mid = (lo + hi) >> 1;
    if (countTokens(wrap(take(mid))) > tokens) hi = mid;
    else lo = mid;
  }
  return take(lo);
}

/** The main workload's text: its tagged prompt (`requestTag(n) text`) stays within `tokens`. */
export function fitBaseText(tokens: number, countTokens: (text: string) => number): string {
  return fitText(tokens, countTokens, (text) => `${requestTag(1000)} ${text}`);
}

/**
 * A short question for the shared-prefix scenario (about 15 tokens with the llama SPM vocab): two
 * tag words and the running number make every question of a run distinct, so the prompts share the
 * system prompt and the "Question" word, and nothing after.
 */
export function question(sequence: number): string {
  const w = (k: number) => TAG_WORDS[k % TAG_WORDS.length]!.toLowerCase();
  return `Question ${sequence}: what did the ${w(sequence)} keeper see near the ${w(sequence * 7 + 3)} tower?\nAnswer:`;
}

export interface WorkloadSpec {
  baseText: string;
  maxTokens: number;
  sampling: SamplingParams;
}

/** The request fields every workload shares: sampling, seed by place in the round, EOS ignored, banned ids. */
function request(spec: WorkloadSpec, index: number, prompt: string): BenchRequest {
  return {
    index,
    prompt,
    maxTokens: spec.maxTokens,
    seed: 1000 + index,
    sampling: spec.sampling,
    ignoreEos: true,
    bannedTokenIds: BANNED_SPM_IDS,
  };
}

/**
 * The requests of one round at one concurrency level. `firstSequence` makes every prompt of the
 * whole run distinct; the seed depends only on the request's place in the round, so the two sides
 * sample with the same seeds.
 */
export function roundRequests(spec: WorkloadSpec, count: number, firstSequence: number): BenchRequest[] {
  return Array.from({ length: count }, (_, index) => request(spec, index, `${requestTag(firstSequence + index)} ${spec.baseText}`));
}

/**
 * The shared-prefix scenario's requests: `spec.baseText` is the common system prompt, the same
 * tokens at the start of every prompt (the opposite of roundRequests' distinct tags), then a
 * blank line and a distinct short question.
 */
export function sharedPrefixRequests(spec: WorkloadSpec, count: number, firstSequence: number): BenchRequest[] {
  return Array.from({ length: count }, (_, index) => request(spec, index, `${spec.baseText}\n\n${question(firstSequence + index)}`));
}
