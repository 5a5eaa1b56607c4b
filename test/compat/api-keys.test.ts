/**
 * API keys on the OpenAI and Ollama routes: a worker's API_KEY on its port (and for its model on
 * the gateway), supervisor.env's API_KEY for every model on the gateway; 401 in each API's
 * shape, raised by the official clients as their authentication errors; health, readiness and
 * metrics stay open.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { Ollama } from 'ollama';
import { ServiceFixture, tinyModel } from '../service/service-fixture.js';

const WORKER_KEY = 'worker-key-123';
const GATEWAY_KEY = 'gateway-key-456';

describe('API keys', () => {
  const service = new ServiceFixture();
  const gatewayUrl = () => `http://127.0.0.1:${service.gatewayPort}`;
  const openai = (base: string, apiKey: string) => new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });
  const ollama = (host: string, key: string | null) => new Ollama({ host, headers: key === null ? {} : { Authorization: `Bearer ${key}` } });
  const chat = (client: OpenAI, model: string) => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });

  before(async () => {
    await service.configure({ locked: { model: tinyModel, env: { API_KEY: WORKER_KEY } }, open: { model: tinyModel } }, { API_KEY: GATEWAY_KEY });
    await service.start(['--all']);
    await Promise.all([service.waitReady('locked'), service.waitReady('open')]);
  });

  after(() => service.cleanup());

  test("a model port takes its worker's key on both APIs", async () => {
    const base = `http://127.0.0.1:${service.ports.get('locked')}`;
    for (const key of ['wrong', GATEWAY_KEY]) {
      await assert.rejects(chat(openai(base, key), 'locked'), OpenAI.AuthenticationError);
      await assert.rejects(openai(base, key).completions.create({ model: 'locked', prompt: 'x', max_tokens: 1 }), OpenAI.AuthenticationError);
      await assert.rejects(openai(base, key).models.list(), OpenAI.AuthenticationError);
      await assert.rejects(ollama(base, key).generate({ model: 'locked', prompt: 'x' }), (e: { status_code?: number }) => e.status_code === 401);
      await assert.rejects(ollama(base, key).list(), (e: { status_code?: number }) => e.status_code === 401);
    }
    assert.equal((await chat(openai(base, WORKER_KEY), 'locked')).choices.length, 1);
    assert.equal((await ollama(base, WORKER_KEY).generate({ model: 'locked', prompt: 'x', options: { num_predict: 1 } })).done, true);
    // The original shape keeps its error body (with OpenAI's fields added: the body is not read yet).
    const original = await fetch(`${base}/v1/completions`, { method: 'POST', body: JSON.stringify({ input: 'x' }) });
    assert.equal(original.status, 401);
    const body = (await original.json()) as { error: Record<string, unknown> };
    assert.equal(body.error.code, 'UNAUTHORIZED');
    assert.equal(body.error.type, 'authentication_error');
    const ollamaBody = await fetch(`${base}/api/chat`, { method: 'POST', body: JSON.stringify({ model: 'locked', messages: [{ role: 'user', content: 'x' }] }) });
    assert.equal(ollamaBody.status, 401);
    assert.deepEqual(Object.keys(await ollamaBody.json()), ['error']);
    for (const path of ['/healthz', '/readyz', '/metrics']) assert.equal((await fetch(`${base}${path}`)).status, 200, path);
  });

  test("the gateway takes its own key for every model, and a worker's key for that model only", async () => {
    for (const model of ['locked', 'open']) {
      assert.equal((await chat(openai(gatewayUrl(), GATEWAY_KEY), model)).choices.length, 1);
      await assert.rejects(chat(openai(gatewayUrl(), 'wrong'), model), OpenAI.AuthenticationError);
    }
    assert.equal((await chat(openai(gatewayUrl(), WORKER_KEY), 'locked')).choices.length, 1);
    await assert.rejects(chat(openai(gatewayUrl(), WORKER_KEY), 'open'), OpenAI.AuthenticationError);
    // Without a key an unknown model is a 401 too: the gateway does not say which names exist.
    await assert.rejects(chat(openai(gatewayUrl(), 'wrong'), 'nope'), OpenAI.AuthenticationError);
    await assert.rejects(chat(openai(gatewayUrl(), GATEWAY_KEY), 'nope'), OpenAI.NotFoundError);
    await assert.rejects(openai(gatewayUrl(), WORKER_KEY).models.list(), OpenAI.AuthenticationError);
    assert.equal((await openai(gatewayUrl(), GATEWAY_KEY).models.list()).data.length, 2);
    await assert.rejects(ollama(gatewayUrl(), null).chat({ model: 'open', messages: [{ role: 'user', content: 'x' }] }), (e: { status_code?: number }) => e.status_code === 401);
    assert.equal((await ollama(gatewayUrl(), GATEWAY_KEY).chat({ model: 'open', messages: [{ role: 'user', content: 'x' }], options: { num_predict: 1 } })).done, true);
    await assert.rejects(ollama(gatewayUrl(), null).ps(), (e: { status_code?: number }) => e.status_code === 401);
    // Admin keeps its own token.
    assert.equal((await service.admin('GET', '/admin/status', GATEWAY_KEY)).status, 401);
    assert.equal((await fetch(`${gatewayUrl()}/metrics`)).status, 200);
  });

  test('refused requests are recorded as their model\'s, with the 401', async () => {
    const res = await fetch(`${gatewayUrl()}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'locked', messages: [{ role: 'user', content: 'x' }] }) });
    assert.equal(res.status, 401);
    const id = res.headers.get('x-request-id');
    const recent = await service.admin('GET', '/admin/requests?worker=locked');
    const found = (recent.body.requests as Array<{ request: { reqId: string; errorCode: string; httpStatus: number } }>).find((r) => r.request.reqId === id);
    assert.equal(found?.request.errorCode, 'UNAUTHORIZED');
    assert.equal(found?.request.httpStatus, 401);
  });
});
