/**
 * The worker's request limits over real HTTP: REQUEST_TIMEOUT_MS ends a request with TIMEOUT
 * (504) and frees its slot, streaming or not, on the original and the OpenAI routes; MAX_TOKENS
 * refuses more and is the default; MAX_BODY_BYTES answers 413.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

describe('request limits', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({
      timed: { model: tinyModel, env: { REQUEST_TIMEOUT_MS: '400', CTX_SIZE: '8192', WORKER_CONCURRENCY: '1' } },
      capped: { model: tinyModel, env: { MAX_TOKENS: '5', MAX_BODY_BYTES: '2048', MAX_STOP_STRINGS: '2', MAX_STOP_LENGTH: '8', MAX_MESSAGES: '3', MAX_GRAMMAR_BYTES: '64' } },
    });
    await service.start(['--all']);
    await Promise.all([service.waitReady('timed'), service.waitReady('capped')]);
  });
  after(() => service.cleanup());

  const long = { input: 'Tell a very long story', params: { max_tokens: 8000, ignore_eos: true } };
  const idle = async () => waitFor('the slot back', async () => ((await service.worker('timed')).slots?.busy === 0 ? true : undefined), 10_000);

  test('a request running past REQUEST_TIMEOUT_MS ends with TIMEOUT 504 and its slot is freed', async () => {
    const started = Date.now();
    const res = await service.complete('timed', long);
    assert.equal(res.status, 504, JSON.stringify(res.body));
    assert.equal(res.body.error.code, 'TIMEOUT');
    assert.match(res.body.error.message, /REQUEST_TIMEOUT_MS/);
    assert.ok(Date.now() - started < 8000);
    await idle();
    // The slot serves the next request at once.
    const next = await service.complete('timed', { input: 'Hi', params: { max_tokens: 3, ignore_eos: true } });
    assert.equal(next.status, 200);
    assert.equal(next.body.usage.tokens_out, 3);
  });

  test('a stream past REQUEST_TIMEOUT_MS: its tokens, then an error event with TIMEOUT', async () => {
    const events = await service.stream('timed', long);
    assert.ok(events.some((e) => e.event === 'token'), 'tokens came first');
    const last = events.at(-1);
    assert.equal(last?.event, 'error');
    assert.equal((last?.data as { error?: { code?: string } }).error?.code, 'TIMEOUT');
    await idle();
  });

  test('the OpenAI route: 504 with the code', async () => {
    const res = await fetch(service.url('timed', '/v1/chat/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Tell a very long story' }], max_tokens: 8000, ignore_eos: true }),
    });
    assert.equal(res.status, 504);
    const body = (await res.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'TIMEOUT');
    await idle();
  });

  test('MAX_TOKENS: more is refused naming params.max_tokens; none asked is MAX_TOKENS', async () => {
    const over = await service.complete('capped', { input: 'Hi', params: { max_tokens: 6 } });
    assert.equal(over.status, 400);
    assert.deepEqual([over.body.error.code, over.body.error.field], ['INVALID_REQUEST', 'params.max_tokens']);
    assert.match(over.body.error.message, /at most 5 \(MAX_TOKENS\)/);
    const unasked = await service.complete('capped', { input: 'Hi', params: { ignore_eos: true } });
    assert.equal(unasked.status, 200);
    assert.equal(unasked.body.usage.tokens_out, 5);
    const fewer = await service.complete('capped', { input: 'Hi', params: { max_tokens: 2, ignore_eos: true } });
    assert.equal(fewer.body.usage.tokens_out, 2);
  });

  test('MAX_STOP_STRINGS, MAX_STOP_LENGTH, MAX_MESSAGES, MAX_GRAMMAR_BYTES: 400s naming the field and the key; within them, answered', async () => {
    const cases: Array<[unknown, string, string, RegExp]> = [
      [{ input: 'Hi', params: { max_tokens: 1, stop: ['a', 'b', 'c'] } }, 'INVALID_REQUEST', 'params.stop', /at most 2 \(MAX_STOP_STRINGS\)/],
      [{ input: 'Hi', params: { max_tokens: 1, stop: 'ninechars' } }, 'INVALID_REQUEST', 'params.stop', /longer than 8 characters \(MAX_STOP_LENGTH\)/],
      [{ input: ['a', 'b', 'c', 'd'].map((content) => ({ role: 'user', content })), params: { max_tokens: 1 } }, 'INVALID_REQUEST', 'input', /at most 3 \(MAX_MESSAGES\)/],
      [{ input: 'Hi', params: { max_tokens: 1, grammar: `root ::= "${'y'.repeat(80)}"` } }, 'INVALID_GRAMMAR', 'params.grammar', /larger than 64 bytes \(MAX_GRAMMAR_BYTES\)/],
    ];
    for (const [body, code, field, message] of cases) {
      const res = await service.complete('capped', body);
      assert.equal(res.status, 400, JSON.stringify(body).slice(0, 80));
      assert.deepEqual([res.body.error.code, res.body.error.field], [code, field]);
      assert.match(res.body.error.message, message);
    }
    const within = await service.complete('capped', {
      input: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }],
      params: { max_tokens: 2, stop: ['zz', 'eightchr'], grammar: 'root ::= "yes" | "no"' },
    });
    assert.equal(within.status, 200, JSON.stringify(within.body));
  });

  test('MAX_BODY_BYTES: a larger body is 413 PAYLOAD_TOO_LARGE, on every route', async () => {
    const big = { input: 'x'.repeat(4000), params: { max_tokens: 1 } };
    const res = await service.complete('capped', big);
    assert.equal(res.status, 413);
    assert.equal(res.body.error.code, 'PAYLOAD_TOO_LARGE');
    assert.match(res.body.error.message, /2048 bytes/);
    for (const path of ['/v1/chat/completions', '/api/generate']) {
      const r = await fetch(service.url('capped', path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x'.repeat(4000), messages: [] }) });
      assert.equal(r.status, 413, path);
    }
    const small = await service.complete('capped', { input: 'Hi', params: { max_tokens: 1 } });
    assert.equal(small.status, 200);
  });
});
