/**
 * The benchmark's two routes to our service (scripts/bench: --route original|openai) against a
 * real supervisor: the same request through the original body and through OpenAI's completions
 * generates the same tokens, and both protocols read the counts, the finish reason and the text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { HttpStreamClient } from '../../scripts/bench/http-stream.js';
import { openAiCompletionProtocol, serviceCompletionProtocol } from '../../scripts/bench/service-target.js';
import { SAMPLING } from '../../scripts/bench/workload.js';
import type { BenchRequest } from '../../scripts/bench/target.js';
import { ServiceFixture, tinyModel } from '../service/service-fixture.js';

describe('bench routes', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({ bench: { model: tinyModel } });
    await service.start(['--all']);
    await service.waitReady('bench');
  });

  after(() => service.cleanup());

  test('original and OpenAI routes: same tokens, same counts', async () => {
    const port = service.ports.get('bench') as number;
    const clients = [serviceCompletionProtocol, openAiCompletionProtocol].map((protocol) => new HttpStreamClient({ host: '127.0.0.1', port, protocol }));
    for (const [i, ignoreEos] of [[0, true], [1, false]] as const) {
      const request: BenchRequest = { index: i, prompt: `Bench prompt ${i}`, maxTokens: 12, seed: 42 + i, sampling: SAMPLING, ignoreEos, bannedTokenIds: [] };
      const [original, openai] = await Promise.all(clients.map((c) => c.run(request)));
      for (const outcome of [original, openai]) {
        assert.equal(outcome?.ok, true, outcome?.error);
        assert.ok((outcome?.tokensIn ?? 0) > 0);
        assert.ok((outcome?.streamedEvents ?? 0) >= 1);
      }
      assert.equal(openai?.tokensOut, original?.tokensOut);
      assert.equal(openai?.finishReason, original?.finishReason);
      assert.equal(openai?.output, original?.output);
      if (ignoreEos) assert.equal(openai?.tokensOut, 12);
    }
    for (const c of clients) c.close();
  });
});
