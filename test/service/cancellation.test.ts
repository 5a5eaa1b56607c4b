/**
 * A client that goes away cancels its generation on every HTTP route — the original API, OpenAI
 * (chat and completions on the gateway) and Ollama (generate and chat) — streaming or not: the
 * worker counts it cancelled, its slot is free again, and the next request is served at once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

describe('cancellation on client disconnect, every route', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({ alpha: { model: tinyModel, env: { CTX_SIZE: '8192', WORKER_CONCURRENCY: '1' } } });
    await service.start(['--all']);
    await service.waitReady('alpha');
  });
  after(() => service.cleanup());

  const long = 8000;
  const routes: Array<[string, (stream: boolean) => { url: () => string; body: unknown }]> = [
    ['original /v1/completions', (stream) => ({ url: () => service.url('alpha', '/v1/completions'), body: { input: 'Go on', params: { max_tokens: long, ignore_eos: true, stream } } })],
    ['OpenAI /v1/chat/completions', (stream) => ({ url: () => service.url('alpha', '/v1/chat/completions'), body: { model: 'alpha', messages: [{ role: 'user', content: 'Go on' }], max_tokens: long, ignore_eos: true, stream } })],
    ['OpenAI /v1/completions (gateway)', (stream) => ({ url: () => service.adminUrl('/v1/completions'), body: { model: 'alpha', prompt: 'Go on', max_tokens: long, ignore_eos: true, stream } })],
    ['Ollama /api/generate', (stream) => ({ url: () => service.url('alpha', '/api/generate'), body: { model: 'alpha', prompt: 'Go on', stream, options: { num_predict: long, ignore_eos: true } } })],
    ['Ollama /api/chat', (stream) => ({ url: () => service.url('alpha', '/api/chat'), body: { model: 'alpha', messages: [{ role: 'user', content: 'Go on' }], stream, options: { num_predict: long, ignore_eos: true } } })],
  ];

  for (const [route, make] of routes) {
    for (const stream of [true, false]) {
      test(`${route}, ${stream ? 'streaming' : 'not streaming'}: the generation ends when the client leaves`, async () => {
        const before = (await service.worker('alpha')).requests.cancelled;
        const { url, body } = make(stream);
        const abort = new AbortController();
        let status = 0;
        const pending = (async () => {
          try {
            const res = await fetch(url(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: abort.signal });
            status = res.status;
            if (status !== 200) return `answered ${status}: ${await res.text()}`;
            await res.text();
            return 'the body ended';
          } catch (err) {
            // Aborted while waiting for the answer (AbortError) or while reading a streamed body.
            return (err as Error).name === 'AbortError' || status === 200 ? null : String(err);
          }
        })();
        // The request must still be running when the client leaves: if it ends first, say how.
        const endedFirst = pending.then((outcome) => {
          throw new Error(`the request ended before the client left: ${outcome ?? 'aborted'}`);
        });
        await Promise.race([waitFor('the slot busy', async () => ((await service.worker('alpha')).slots?.busy === 1 ? true : undefined), 20_000), endedFirst]);
        endedFirst.catch(() => undefined);
        abort.abort();
        assert.equal(await pending, null);
        const worker = await waitFor(
          'the cancellation',
          async () => {
            const w = await service.worker('alpha');
            return w.requests.cancelled > before && w.in_flight === 0 && w.slots?.busy === 0 ? w : undefined;
          },
          20_000,
        );
        assert.equal(worker.requests.cancelled, before + 1);
        const next = await service.complete('alpha', { input: 'Hi', params: { max_tokens: 2, ignore_eos: true } });
        assert.equal(next.status, 200);
      });
    }
  }
});
