/**
 * A model backend that fails in every phase, served over the real HTTP transport on loopback:
 * every request gets an answer, the observer sees each request end exactly once, and nothing
 * becomes an unhandled rejection or an uncaught exception.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RequestPath, ServiceObserver, type ModelBackend, type RequestEnd, type TokenSink } from '@lmserve/core';
import { HttpTransport } from '@lmserve/http';
import { LmError, createLogger, type GenerateRequest, type GenerationResult } from '@lmserve/protocol';

const okResult = (text: string): GenerationResult => ({
  text,
  finishReason: 'stop',
  usage: { tokensIn: 2, tokensOut: 1, cachedTokens: 0 },
  timings: { queueMs: 0, ttftMs: 1, prefillMs: 1, decodeMs: 0, totalMs: 1, prefillTps: 0, decodeTps: 0 },
});

const tick = () => new Promise((r) => setImmediate(r));

/** What the backend does for each input text. */
const behaviours: Record<string, (onTokens: TokenSink) => Promise<GenerationResult>> = {
  ok: async (onTokens) => {
    onTokens('fine', [1]);
    return okResult('fine');
  },
  'throw-sync': () => {
    throw new Error('thrown before any promise');
  },
  'reject-lm': () => Promise.reject(new LmError('KV_CACHE_FULL', 'full')),
  'reject-string': () => Promise.reject('a bare string'),
  'reject-null': () => Promise.reject(null),
  'reject-unknown-code': () => Promise.reject(Object.assign(new Error('from the future'), { code: 'NOT_A_CODE_WE_KNOW' })),
  'reject-hostile-error': () => {
    const err = new Error('x');
    Object.defineProperty(err, 'message', { get: () => { throw new Error('message getter'); } });
    Object.defineProperty(err, 'code', { get: () => { throw new Error('code getter'); } });
    return Promise.reject(err);
  },
  'reject-hostile-object': () =>
    Promise.reject({ toString: () => { throw new Error('toString'); } }),
  'mid-stream': async (onTokens) => {
    onTokens('one ', [1]);
    await tick();
    onTokens('two ', [2]);
    await tick();
    throw new LmError('MODEL_CRASHED', 'the host died mid-stream');
  },
  'bad-result': async () => ({ text: 5 }) as unknown as GenerationResult,
  'null-result': async () => null as unknown as GenerationResult,
  'hostile-result': async () =>
    Object.defineProperty({}, 'text', { get: () => { throw new Error('text getter'); } }) as GenerationResult,
  'late-tokens': async (onTokens) => {
    setTimeout(() => onTokens('after the end', [9]), 5);
    return okResult('done');
  },
  'tokens-after-reject': async (onTokens) => {
    setTimeout(() => onTokens('after the error', [9]), 5);
    throw new LmError('INTERNAL', 'failed');
  },
};

class FaultyBackend implements ModelBackend {
  readonly name = 'faulty';
  readonly model = 'faulty-model';
  readonly apiKey = null;
  readonly hostPid = null;
  readiness() {
    return { ready: true, state: 'ready' as const, reason: null, retryAfterS: 0 };
  }
  complete(request: GenerateRequest, onTokens: TokenSink | null): Promise<GenerationResult> {
    const behaviour = behaviours[String(request.input)];
    if (!behaviour) throw new Error(`no behaviour ${String(request.input)}`);
    return behaviour(onTokens ?? (() => undefined));
  }
}

describe('a backend that fails in every phase cannot take the process down', () => {
  const observer = new ServiceObserver();
  const ends: RequestEnd[] = [];
  const problems: unknown[] = [];
  const onRejection = (reason: unknown) => problems.push(reason);
  const onException = (err: unknown) => problems.push(err);
  const log = createLogger({ test: 'fault-injection' }, { level: 'error', write: () => undefined });
  const transport = new HttpTransport({ log });
  let base = '';

  before(async () => {
    process.on('unhandledRejection', onRejection);
    process.on('uncaughtException', onException);
    observer.onRequest((end) => ends.push(end));
    // A subscriber that throws must not disturb the request path either.
    observer.onRequest(() => {
      throw new Error('a broken sink');
    });
    const backend = new FaultyBackend();
    const requests = new RequestPath({ backend, observer, log });
    const endpoint = await transport.bind({
      name: 'faulty',
      backend,
      requests,
      settings: { file: 'test', httpAddr: { host: '127.0.0.1', port: 0 }, apiKey: null, subject: 's', natsUrl: null, jetstream: false },
      records: null,
      metrics: null,
      grammars: null,
    });
    base = `http://${endpoint.address}`;
  });

  after(async () => {
    transport.terminate();
    await transport.close();
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  });

  async function post(input: string, stream: boolean): Promise<{ status: number; text: string }> {
    const res = await fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input, params: { stream } }),
    });
    return { status: res.status, text: await res.text() };
  }

  for (const stream of [false, true]) {
    test(`every failure gets an answer and one published end (${stream ? 'streaming' : 'JSON'})`, async () => {
      const expected: Record<string, number> = {
        ok: 200,
        'throw-sync': 500,
        'reject-lm': 503,
        'reject-string': 500,
        'reject-null': 500,
        'reject-unknown-code': 500,
        'reject-hostile-error': 500,
        'reject-hostile-object': 500,
        'mid-stream': 503,
        'bad-result': 500,
        'null-result': 500,
        'hostile-result': 500,
        'late-tokens': 200,
        'tokens-after-reject': 500,
      };
      for (const [input, status] of Object.entries(expected)) {
        const before = ends.length;
        const res = await post(input, stream);
        // A stream that already started answers 200 and reports the error as its last event.
        const streamedError = stream && res.status === 200 && res.text.includes('event: error');
        if (streamedError) assert.notEqual(status, 200, `${input}: ${res.text}`);
        else assert.equal(res.status, status, `${input}: ${res.text}`);
        if (status !== 200) assert.match(res.text, /"code":"[A-Z_]+"/, input);
        await new Promise((r) => setTimeout(r, 15));
        assert.equal(ends.length, before + 1, `${input}: exactly one end published`);
        const end = ends.at(-1) as RequestEnd;
        assert.equal(end.transport, 'http');
        assert.match(end.reqId, /^http-/);
        assert.equal(end.status, status === 200 ? 'completed' : 'failed', input);
        if (input === 'reject-unknown-code') assert.equal(end.errorCode, 'INTERNAL');
      }
      assert.deepEqual(problems, []);
      const ok = await post('ok', stream);
      assert.equal(ok.status, 200);
    });
  }
});
