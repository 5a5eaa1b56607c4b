/** Model names as OpenAI and Ollama clients send them, against the workers' MODEL_NAME. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findModel, modelNameMatches, type RequestPath } from '@lmserve/core';

function path(model: string, ready: boolean): RequestPath {
  return { backend: { model, readiness: () => ({ ready }) } } as unknown as RequestPath;
}

test('name, name:latest and the full name:tag', () => {
  assert.ok(modelNameMatches('tiny', 'tiny'));
  assert.ok(modelNameMatches('tiny', 'tiny:latest'));
  assert.ok(modelNameMatches('tiny:latest', 'tiny'));
  assert.ok(modelNameMatches('qwen3:4b', 'qwen3:4b'));
  assert.ok(!modelNameMatches('qwen3:4b', 'qwen3'));
  assert.ok(!modelNameMatches('qwen3', 'qwen3:4b'));
  assert.ok(!modelNameMatches('tiny', 'Tiny'));
  assert.ok(!modelNameMatches('tiny', 'tiny:'));
});

test('a ready model wins among those of the same name; none matches: null', () => {
  const a = path('m', false);
  const b = path('m', true);
  const c = path('other', true);
  assert.equal(findModel([a, b, c], 'm:latest'), b);
  assert.equal(findModel([a, c], 'm'), a);
  assert.equal(findModel([a, b, c], 'nope'), null);
});
