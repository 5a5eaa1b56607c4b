/**
 * OpenAI's API with the official `openai` SDK, unchanged, against a real supervisor: on the
 * gateway (routed by `model`) and on a model port. The tiny models write noise, so the tests
 * check shapes, counts, framing and behaviour, never text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { ServiceFixture, tinyBpeModel, tinyModel } from '../service/service-fixture.js';

describe('OpenAI API', () => {
  const service = new ServiceFixture();
  let gateway: OpenAI;
  let port: OpenAI;

  before(async () => {
    await service.configure({
      alpha: { model: tinyModel },
      beta: { model: tinyBpeModel },
      idle: { model: tinyModel },
    });
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta'), service.waitReady('idle')]);
    assert.equal((await service.admin('POST', '/admin/workers/idle/stop')).status, 200);
    gateway = new OpenAI({ baseURL: `http://127.0.0.1:${service.gatewayPort}/v1`, apiKey: 'unused', maxRetries: 0 });
    port = new OpenAI({ baseURL: service.url('beta', '/v1'), apiKey: 'unused', maxRetries: 0 });
  });

  after(() => service.cleanup());

  test('chat completion through the gateway and a model port', async () => {
    for (const [client, model] of [[gateway, 'alpha'], [gateway, 'beta'], [port, 'beta']] as const) {
      const res = await client.chat.completions.create({
        model,
        messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }],
        max_tokens: 6,
        seed: 1,
        temperature: 0.7,
        top_p: 0.9,
        user: 'ignored',
        // @ts-expect-error an extension OpenAI's types do not know
        ignore_eos: true,
      });
      assert.equal(res.object, 'chat.completion');
      assert.equal(res.model, model);
      assert.match(res.id, /^chatcmpl-http-/);
      assert.equal(res.choices.length, 1);
      assert.equal(res.choices[0]?.message.role, 'assistant');
      assert.equal(typeof res.choices[0]?.message.content, 'string');
      assert.equal(res.choices[0]?.finish_reason, 'length');
      assert.equal(res.usage?.completion_tokens, 6);
      assert.ok((res.usage?.prompt_tokens ?? 0) > 0);
      assert.equal(res.usage?.total_tokens, (res.usage?.prompt_tokens ?? 0) + 6);
    }
  });

  test('max_completion_tokens, stop and a seed make the same output twice', async () => {
    const ask = () =>
      gateway.chat.completions.create({ model: 'alpha', messages: [{ role: 'user', content: 'Count' }], max_completion_tokens: 5, seed: 7, stop: ['\u0000never'] });
    const [a, b] = [await ask(), await ask()];
    assert.ok((a.usage?.completion_tokens ?? 99) <= 5);
    assert.equal(a.choices[0]?.message.content, b.choices[0]?.message.content);
  });

  test('completions: a string prompt and a list of prompts', async () => {
    const one = await gateway.completions.create({ model: 'alpha', prompt: 'Once upon', max_tokens: 4, seed: 3, ignore_eos: true } as never);
    assert.equal(one.object, 'text_completion');
    assert.equal(one.choices.length, 1);
    assert.equal(one.usage?.completion_tokens, 4);
    const many = await port.completions.create({ model: 'beta', prompt: ['One', 'Two', 'Three'], max_tokens: 3, ignore_eos: true } as never);
    assert.deepEqual(many.choices.map((c) => c.index), [0, 1, 2]);
    for (const c of many.choices) {
      assert.equal(typeof c.text, 'string');
      assert.equal(c.finish_reason, 'length');
    }
    assert.equal(many.usage?.completion_tokens, 9);
  });

  test('the model port keeps answering the original {input, params} shape on /v1/completions', async () => {
    const res = await service.complete('beta', { input: 'Hi', params: { max_tokens: 3, ignore_eos: true } });
    assert.equal(res.status, 200);
    assert.equal(res.body.usage.tokens_out, 3);
    assert.equal(typeof res.body.output, 'string');
  });

  test('chat streaming: a role chunk, content chunks, a finish chunk, a usage chunk', async () => {
    for (const client of [gateway, port]) {
      const stream = await client.chat.completions.create({
        model: 'beta',
        messages: [{ role: 'user', content: 'Stream' }],
        max_tokens: 6,
        stream: true,
        stream_options: { include_usage: true },
        ignore_eos: true,
      } as never) as unknown as AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>;
      const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      assert.equal(chunks[0]?.choices[0]?.delta.role, 'assistant');
      const last = chunks.at(-1);
      assert.deepEqual(last?.choices, []);
      assert.equal(last?.usage?.completion_tokens, 6);
      const finish = chunks.at(-2);
      assert.equal(finish?.choices[0]?.finish_reason, 'length');
      for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
      assert.ok(new Set(chunks.map((c) => c.id)).size === 1);
      const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
      assert.equal(typeof text, 'string');
    }
  });

  test('completion streaming with a list of prompts tags each chunk with its index', async () => {
    const stream = await gateway.completions.create({ model: 'alpha', prompt: ['A', 'B'], max_tokens: 3, stream: true, ignore_eos: true } as never) as unknown as AsyncIterable<OpenAI.Completions.Completion>;
    const finished = new Set<number>();
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'text_completion');
      for (const c of chunk.choices) if (c.finish_reason) finished.add(c.index);
    }
    assert.deepEqual([...finished].sort(), [0, 1]);
  });

  test('response_format json_schema gives JSON that matches; json_object gives JSON', async () => {
    const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['ok', 'n'], additionalProperties: false };
    for (let seed = 1; seed <= 3; seed++) {
      const res = await gateway.chat.completions.create({
        model: 'alpha',
        messages: [{ role: 'user', content: 'JSON please' }],
        max_tokens: 60,
        seed,
        response_format: { type: 'json_schema', json_schema: { name: 'thing', schema, strict: true } },
      });
      assert.equal(res.choices[0]?.finish_reason, 'stop');
      const doc = JSON.parse(res.choices[0]?.message.content ?? '');
      assert.equal(typeof doc.ok, 'boolean');
      assert.ok(Number.isInteger(doc.n) && doc.n >= 0 && doc.n <= 9);
      assert.deepEqual(Object.keys(doc).sort(), ['n', 'ok']);
    }
    let parsed = 0;
    for (let seed = 1; seed <= 6; seed++) {
      const res = await port.chat.completions.create({ model: 'beta', messages: [{ role: 'user', content: 'JSON' }], max_tokens: 120, seed, response_format: { type: 'json_object' } });
      if (res.choices[0]?.finish_reason !== 'stop') continue;
      JSON.parse(res.choices[0]?.message.content ?? '');
      parsed++;
    }
    assert.ok(parsed >= 1, 'no json_object output finished within 120 tokens');
  });

  test('logprobs: the chosen token and its top alternatives, from the raw distribution', async () => {
    const res = await gateway.chat.completions.create({ model: 'alpha', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3, ignore_eos: true } as never) as OpenAI.Chat.Completions.ChatCompletion;
    const content = res.choices[0]?.logprobs?.content ?? [];
    assert.equal(content.length, 5);
    for (const entry of content) {
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 3);
      const tops = entry.top_logprobs.map((t) => t.logprob);
      assert.deepEqual(tops, [...tops].sort((a, b) => b - a));
      // Greedy: the chosen token is the most likely one.
      assert.equal(entry.token, entry.top_logprobs[0]?.token);
      assert.ok(Math.abs(entry.logprob - (tops[0] ?? 1)) < 1e-6);
      assert.ok(tops.reduce((sum, l) => sum + Math.exp(l), 0) <= 1 + 1e-6);
      assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
    }
    assert.equal(content.map((c) => c.token).join(''), res.choices[0]?.message.content);
    const plain = await gateway.chat.completions.create({ model: 'alpha', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    assert.equal(plain.choices[0]?.logprobs, null);
    const text = await port.completions.create({ model: 'beta', prompt: 'Hi', max_tokens: 4, logprobs: 2, ignore_eos: true } as never);
    const lp = text.choices[0]?.logprobs;
    assert.equal(lp?.tokens?.length, 4);
    assert.equal(lp?.token_logprobs?.length, 4);
    for (const alt of lp?.top_logprobs ?? []) assert.equal(Object.keys(alt).length <= 2, true);
    const streamed = await gateway.chat.completions.create({ model: 'beta', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, logprobs: true, stream: true, ignore_eos: true } as never) as unknown as AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>;
    let entries = 0;
    for await (const chunk of streamed) entries += chunk.choices[0]?.logprobs?.content?.length ?? 0;
    assert.equal(entries, 4);
    // The original API: params.logprobs puts them on the streamed token events.
    const events = await service.stream('beta', { input: 'Hi', params: { max_tokens: 3, ignore_eos: true, logprobs: 1 } });
    const tokens = events.filter((e) => e.event === 'token' && e.data.tokens.length > 0);
    assert.ok(tokens.length >= 1);
    for (const e of tokens) {
      assert.equal(e.data.logprobs.length, e.data.tokens.length);
      assert.equal(e.data.logprobs[0].id, e.data.tokens[0]);
      assert.equal(e.data.logprobs[0].top.length, 1);
    }
  });

  test('models: the list and one model', async () => {
    const list = await gateway.models.list();
    assert.deepEqual(list.data.map((m) => m.id).sort(), ['alpha', 'beta', 'idle']);
    for (const m of list.data) assert.equal(m.object, 'model');
    const one = await gateway.models.retrieve('beta');
    assert.equal(one.id, 'beta');
    const own = await port.models.list();
    assert.deepEqual(own.data.map((m) => m.id), ['beta']);
    await assert.rejects(gateway.models.retrieve('nope'), OpenAI.NotFoundError);
    await assert.rejects(gateway.models.retrieve('org/nope'), OpenAI.NotFoundError);
  });

  test('errors: the SDK raises the class of each status, with the field as param', async () => {
    const notFound = await gateway.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    assert.ok(notFound instanceof OpenAI.NotFoundError, String(notFound));
    assert.equal((notFound as OpenAI.APIError).status, 404);
    assert.equal((notFound as OpenAI.APIError).param, 'model');
    const notReady = await gateway.chat.completions.create({ model: 'idle', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    assert.ok(notReady instanceof OpenAI.APIError && notReady.status === 503, String(notReady));
    assert.equal((notReady as OpenAI.APIError).code, 'MODEL_NOT_READY');
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ temperature: 'hot' }, 'temperature'],
      [{ n: 2 }, 'n'],
      [{ max_completion_tokens: -5 }, 'max_completion_tokens'],
      [{ top_logprobs: 3 }, 'top_logprobs'],
      [{ response_format: { type: 'xml' } }, 'response_format.type'],
      [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].role'],
      [{ messages: [] }, 'messages'],
    ];
    for (const [extra, param] of cases) {
      for (const client of [gateway, port]) {
        const err = await client.chat.completions
          .create({ model: 'beta', messages: [{ role: 'user', content: 'x' }], ...extra } as never)
          .catch((e: unknown) => e);
        assert.ok(err instanceof OpenAI.BadRequestError, `${JSON.stringify(extra)}: ${String(err)}`);
        assert.equal(err.param, param);
        assert.equal(err.type, 'invalid_request_error');
      }
    }
    const noPrompt = await gateway.completions.create({ model: 'alpha', prompt: [1, 2, 3] } as never).catch((e: unknown) => e);
    assert.ok(noPrompt instanceof OpenAI.BadRequestError);
    assert.equal(noPrompt.param, 'prompt');
  });

  test('raw HTTP: SSE framing ends with data: [DONE]; unknown fields are ignored; malformed JSON is a 400 in OpenAI shape', async () => {
    const res = await fetch(`http://127.0.0.1:${service.gatewayPort}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'alpha', messages: [{ role: 'user', content: 'x' }], max_tokens: 3, stream: true, ignore_eos: true, some_future_field: { a: 1 } }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.match(res.headers.get('x-request-id') ?? '', /^http-/);
    const text = await res.text();
    assert.ok(text.endsWith('data: [DONE]\n\n'), text.slice(-80));
    const blocks = text.split('\n\n').filter((b) => b !== '');
    for (const block of blocks) assert.match(block, /^data: /);
    for (const block of blocks.slice(0, -1)) JSON.parse(block.slice('data: '.length));
    assert.equal(blocks.filter((b) => b === 'data: [DONE]').length, 1);

    for (const url of [`http://127.0.0.1:${service.gatewayPort}/v1/chat/completions`, service.url('beta', '/v1/chat/completions')]) {
      const bad = await fetch(url, { method: 'POST', body: '{"model": "beta", "messages": [' });
      assert.equal(bad.status, 400);
      const body = (await bad.json()) as { error: Record<string, unknown> };
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
      assert.equal(body.error.code, 'INVALID_REQUEST');
      assert.equal(body.error.param, 'body');
    }
  });

  test('every OpenAI request is in the audit trail of its model', async () => {
    const res = await fetch(`http://127.0.0.1:${service.gatewayPort}/v1/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'beta', prompt: 'audit me', max_tokens: 2 }),
    });
    const id = res.headers.get('x-request-id');
    assert.equal(res.status, 200);
    const recent = await service.admin('GET', '/admin/requests?worker=beta');
    const found = (recent.body.requests as Array<{ request: { reqId: string; status: string; input: unknown } }>).find((r) => r.request.reqId === id);
    assert.ok(found, 'the request is not among the recent ones');
    assert.equal(found.request.status, 'completed');
    assert.equal(found.request.input, 'audit me');
  });
});
