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
 * The longest prefix of the base text (whole words) whose tagged prompt stays within `tokens`,
 * measured with the model's own tokenizer (the same llama.cpp tokenizer both sides use).
 */
export function fitBaseText(tokens: number, countTokens: (text: string) => number): string {
  const words = BASE_TEXT.split(' ');
  let best = words[0]!;
  for (let n = 1; n <= words.length; n++) {
    const text = words.slice(0, n).join(' ');
    if (countTokens(`${requestTag(1000)} ${text}`) > tokens) break;
    best = text;
  }
  return best;
}

export interface WorkloadSpec {
  baseText: string;
  maxTokens: number;
  sampling: SamplingParams;
}

/**
 * The requests of one round at one concurrency level. `firstSequence` makes every prompt of the
 * whole run distinct; the seed depends only on the request's place in the round, so the two sides
 * sample with the same seeds.
 */
export function roundRequests(spec: WorkloadSpec, count: number, firstSequence: number): BenchRequest[] {
  return Array.from({ length: count }, (_, index) => ({
    index,
    prompt: `${requestTag(firstSequence + index)} ${spec.baseText}`,
    maxTokens: spec.maxTokens,
    seed: 1000 + index,
    sampling: spec.sampling,
    ignoreEos: true,
    bannedTokenIds: BANNED_SPM_IDS,
  }));
}
