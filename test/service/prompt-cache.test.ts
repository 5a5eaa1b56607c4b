/**
 * The worker key CACHE_RAM end to end: a supervisor with two workers on the tiny model, one slot
 * each, one with the host-memory prompt cache and one with CACHE_RAM=0. A prompt comes back after
 * another one took its slot: the first worker restores it (OpenAI's usage
 * `prompt_tokens_details.cached_tokens`, the metric `lmserve_prompt_cached_tokens_total`), the
 * second prefills it again. Both answer the same greedy text. A third worker keeps CACHE_RAM=auto:
 * its budget is its share of the service's one budget.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { WorkerInfo } from '@lmserve/protocol';
import { defaultCacheRamMiB, usableMemoryBytes } from '@lmserve/supervisor';
import { parseExposition, valueOf } from '../metrics/exposition.js';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

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
      shared: { model: tinyModel, env: { WORKER_CONCURRENCY: '1' } },
    });
    await service.start(['--all']);
    await service.waitReady('cached');
    await service.waitReady('uncached');
    await service.waitReady('shared');
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

  async function metric(worker: string, name: string): Promise<number> {
    const value = valueOf(parseExposition(await (await fetch(service.url(worker, '/metrics'))).text()), name, { worker });
    assert.ok(value !== undefined, `${name} for ${worker}`);
    return value;
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
    // Our own API says it too: the prompt is in the slot now (raw, as OpenAI's prompt is sent).
    const native = await fetch(service.url('cached', '/v1/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: PROMPT, params: { raw: true, max_tokens: 8, temperature: 0, ignore_eos: true } }),
    });
    const nativeBody = (await native.json()) as { output: string; usage: { tokens_in: number; cached_tokens: number } };
    assert.equal(nativeBody.output, results.cached!.choices[0]!.text);
    assert.equal(nativeBody.usage.tokens_in, restored.prompt_tokens);
    assert.equal(nativeBody.usage.cached_tokens, restored.prompt_tokens - 1);
    assert.equal(await metric('cached', 'lmserve_prompt_cached_tokens_total'), 2 * (restored.prompt_tokens - 1));
    assert.equal(await metric('uncached', 'lmserve_prompt_cached_tokens_total'), 0);

    // What the caches hold, in /admin/workers and the metrics (the hosts report every half second).
    const info = (name: string) =>
      waitFor(`${name}'s prompt cache in /admin/workers`, async () => {
        const w = (await service.worker(name)) as WorkerInfo;
        return w.prompt_cache && (name === 'uncached' || w.prompt_cache.restores >= 1) ? w.prompt_cache : undefined;
      });
    const cached = await info('cached');
    assert.equal(cached.budget_mib, 64);
    assert.equal(cached.restores, 1);
    assert.equal(cached.tokens_restored, restored.prompt_tokens - 1);
    // Both prompts: the first (saved when the other took the slot; restored in part, so it stays)
    // and the other (saved when the first came back).
    assert.equal(cached.entries, 2);
    assert.ok(cached.bytes > 0);
    assert.deepEqual(await info('uncached'), { budget_mib: 0, bytes: 0, entries: 0, restores: 0, tokens_restored: 0 });
    assert.equal(await metric('cached', 'lmserve_prompt_cache_bytes'), cached.bytes);
    assert.equal(await metric('uncached', 'lmserve_prompt_cache_bytes'), 0);
  });

  test('CACHE_RAM=auto: the service has one budget, an equal share for each of its workers', async () => {
    // A request makes the host report its stats (prompt_cache is null until the first report).
    await complete('shared', OTHER);
    const cache = await waitFor("shared's prompt cache in /admin/workers", async () => ((await service.worker('shared')) as WorkerInfo).prompt_cache ?? undefined, 15_000);
    const share = defaultCacheRamMiB(usableMemoryBytes(), 3);
    assert.ok(share > 0 && share < defaultCacheRamMiB(), `a third of the auto budget: ${share} MiB`);
    assert.equal(cache.budget_mib, share);
  });
});
