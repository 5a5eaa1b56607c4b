/**
 * The bench's `--stream off` requests (HttpStreamClient with `stream: false`) against a real
 * supervisor on the tiny model: one JSON answer per request in the original API and in OpenAI's,
 * read into the same outcome as a stream (usage, finish reason, text), with no TTFT, and the
 * same greedy text as the streamed request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { HttpStreamClient, type StreamProtocol } from '../../../scripts/bench/http-stream.js';
import { ServiceProcess } from '../../../scripts/bench/service.js';
import { benchWorkerEnv, openAiCompletionProtocol, serviceCompletionProtocol } from '../../../scripts/bench/service-target.js';
import { llamaCompletionProtocol } from '../../../scripts/bench/llama-server-target.js';
import type { BenchRequest } from '../../../scripts/bench/target.js';
import { repoRoot } from '../../../scripts/lib/service-harness.js';
import { modelPath } from '../../helpers.js';

const request: BenchRequest = {
  index: 0,
  prompt: 'The harbour town woke slowly that morning.',
  maxTokens: 12,
  seed: 1,
  sampling: { temperature: 0, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 },
  ignoreEos: true,
  bannedTokenIds: [0, 1, 2],
};

describe('bench requests without streaming', () => {
  let service: ServiceProcess;
  before(async () => {
    const env = benchWorkerEnv({ modelPath: await modelPath('tiny'), slots: 2, ctxPerSlot: 256, batchSize: 64, threads: 1 }, 16);
    service = new ServiceProcess({ root: repoRoot, workers: [{ name: 'bench', env }], shutdownGraceMs: 1000 });
    await service.start();
  });
  after(async () => {
    await service?.stop();
  });

  for (const [name, protocol] of [['original API', serviceCompletionProtocol], ['OpenAI', openAiCompletionProtocol]] as const) {
    test(`${name}: one JSON answer, read as the stream's outcome`, async () => {
      const port = service.port('bench');
      const plain = new HttpStreamClient({ host: '127.0.0.1', port, protocol: protocol as StreamProtocol, stream: false });
      const streamed = new HttpStreamClient({ host: '127.0.0.1', port, protocol: protocol as StreamProtocol });
      try {
        const counted: number[] = [];
        const a = await plain.run(request, undefined, (n) => counted.push(n));
        assert.equal(a.ok, true, a.error);
        assert.equal(a.tokensOut, 12);
        assert.ok((a.tokensIn ?? 0) > 5, `tokensIn ${a.tokensIn}`);
        assert.equal(a.finishReason, 'length');
        assert.equal(a.ttftMs, null);
        assert.equal(a.streamedEvents, 0);
        assert.deepEqual(counted, [12]);
        const b = await streamed.run(request);
        assert.equal(b.ok, true, b.error);
        assert.ok(b.ttftMs !== null && b.streamedEvents > 0);
        assert.ok((a.output ?? '').length > 0);
        assert.equal(a.output, b.output, 'the same greedy text');
      } finally {
        plain.close();
        streamed.close();
      }
    });
  }

  test('keep-alive (--keep-alive): requests one after another share a connection and read the same', async () => {
    const port = service.port('bench');
    const kept = new HttpStreamClient({ host: '127.0.0.1', port, protocol: serviceCompletionProtocol, keepAlive: true });
    const fresh = new HttpStreamClient({ host: '127.0.0.1', port, protocol: serviceCompletionProtocol });
    let connections = 0;
    const { Agent } = await import('node:http');
    const proto = Agent.prototype as unknown as { createConnection: (...args: unknown[]) => unknown };
    const spy = proto.createConnection;
    try {
      const expected = await fresh.run(request);
      assert.equal(expected.ok, true, expected.error);
      proto.createConnection = function (this: unknown, ...args: unknown[]) {
        connections++;
        return spy.apply(this, args);
      };
      for (let i = 0; i < 3; i++) {
        const got = await kept.run(request);
        assert.equal(got.ok, true, got.error);
        assert.equal(got.output, expected.output);
      }
      assert.equal(connections, 1, 'one connection for three requests');
    } finally {
      proto.createConnection = spy;
      kept.close();
      fresh.close();
    }
  });

  test('an error answer is the outcome\'s error', async () => {
    const client = new HttpStreamClient({ host: '127.0.0.1', port: service.port('bench'), protocol: serviceCompletionProtocol, stream: false });
    try {
      const out = await client.run({ ...request, sampling: { ...request.sampling, topP: 2 } });
      assert.equal(out.ok, false);
      assert.match(out.error ?? '', /HTTP 400/);
    } finally {
      client.close();
    }
  });

  test('each protocol has a non-streaming body: stream false, no stream_options', () => {
    const llama = llamaCompletionProtocol.plain!.body(request) as Record<string, unknown>;
    assert.equal(llama.stream, false);
    assert.equal(llama.n_predict, 12);
    const original = serviceCompletionProtocol.plain!.body(request) as { params: Record<string, unknown> };
    assert.equal(original.params.stream, false);
    const openai = openAiCompletionProtocol.plain!.body(request) as Record<string, unknown>;
    assert.equal(openai.stream, false);
    assert.equal('stream_options' in openai, false);
  });
});
