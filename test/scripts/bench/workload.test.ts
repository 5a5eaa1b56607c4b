/** The bench's prompts (scripts/bench/workload.ts): fitted lengths and the shared-prefix requests. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fitText, roundRequests, SAMPLING, sharedPrefixRequests } from '../../../scripts/bench/workload.js';

/** One token per word: a stand-in tokenizer whose counts are easy to check. */
const words = (text: string) => text.split(/\s+/).filter(Boolean).length;

test('fitText gives the longest whole-word text within the budget, repeating the base text as needed', () => {
  for (const budget of [1, 7, 64, 2000]) assert.equal(words(fitText(budget, words)), budget);
  assert.equal(words(fitText(100, words, (t) => `tag 1: ${t}`)), 98);
});

test('shared-prefix prompts start with the same text and differ after it; the main workload\'s differ from the first word', () => {
  const spec = { baseText: 'System prompt.', maxTokens: 8, sampling: SAMPLING };
  const prompts = sharedPrefixRequests(spec, 16, 0).map((r) => r.prompt);
  assert.equal(new Set(prompts).size, 16);
  for (const p of prompts) assert.ok(p.startsWith('System prompt.\n\nQuestion '));
  const firstWords = roundRequests(spec, 16, 0).map((r) => r.prompt.split(' ')[0]);
  assert.equal(new Set(firstWords).size, 16);
});
