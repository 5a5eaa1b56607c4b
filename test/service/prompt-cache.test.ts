/**
 * The worker key CACHE_RAM end to end: a supervisor with two workers on the tiny model, one slot
 * each, one with the host-memory prompt cache and one with CACHE_RAM=0. A prompt comes back after
 * another one took its slot: the first worker restores it (OpenAI's usage
 * `prompt_tokens_details.cached_tokens`, the metric `lmserve_prompt_cached_tokens_total`), the
 * second prefills it again. Both answer the same greedy text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel } from './service-fixture.js';

const PROMPT =
  'The museum has four galleries: ships, lighthouses, maps and the fishing fleet. '.repeat(4) + 'Which gallery shows the oldest map?';
const OTHER = 'A completely different request about the weather on the coast tomorrow morning.';

interface Completion {
  choices: Array<{ text: string }>;
  usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
}

describe('CACHE_RAM: the host-memory prompt cache of a worker', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({
      cached: { model: tinyModel, env: { WORKER_CONCURRENCY: '1', CACHE_RAM: '64' } },
      uncached: { model: tinyModel, env: { WORKER_CONCURRENCY: '1', CACHE_RAM: '0' } },
    });
    await service.start(['--all']);
    await service.waitReady('cached');
    await service.waitReady('uncached');
  });

  after(() => service.cleanup());

  async function complete(worker: string, prompt: string): Promise<Completion> {
    const res = await fetch(service.url(worker, '/v1/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: worker, prompt, max_tokens: 8, temperature: 0, ignore_eos: true }),
    });
    assert.equal(res.status, 200);
    return (await res.json()) as Completion;
  }

  async function cachedMetric(worker: string): Promise<number> {
    const text = await (await fetch(service.url(worker, '/metrics'))).text();
    const line = text.split('\n').find((l) => l.startsWith('lmserve_prompt_cached_tokens_total{') && l.includes(`worker="${worker}"`));
    assert.ok(line, `lmserve_prompt_cached_tokens_total for ${worker}`);
    return Number(line.split(' ').pop());
  }

  test('a prompt whose only slot served another request since is restored, not prefilled', async () => {
    const results: Record<string, Completion> = {};
    for (const worker of ['cached', 'uncached']) {
      const first = await complete(worker, PROMPT);
      assert.equal(first.usage.prompt_tokens_details.cached_tokens, 0);
      await complete(worker, OTHER);
      results[worker] = await complete(worker, PROMPT);
      assert.equal(results[worker]!.choices[0]!.text, first.choices[0]!.text, `${worker}: the same greedy answer`);
    }
    const restored = results.cached!.usage;
    // Everything but the last prompt token, whose logits give the first output token.
    assert.equal(restored.prompt_tokens_details.cached_tokens, restored.prompt_tokens - 1);
    assert.equal(results.uncached!.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(await cachedMetric('cached'), restored.prompt_tokens - 1);
    assert.equal(await cachedMetric('uncached'), 0);
  });
});
