/**
 * Ollama's API with the official `ollama` npm client, unchanged, against a real supervisor: on
 * the gateway (routed by `model`, `name:tag` forms too) and on a model port. Shapes, counts,
 * NDJSON framing and behaviour; never the tiny models' text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ollama, type ChatResponse, type GenerateResponse } from 'ollama';
import { ServiceFixture, tinyBpeModel, tinyModel } from '../service/service-fixture.js';

function assertStats(res: GenerateResponse | ChatResponse, evalCount: number): void {
  assert.equal(res.done, true);
  assert.equal(res.eval_count, evalCount);
  assert.ok(res.prompt_eval_count > 0);
  for (const key of ['total_duration', 'load_duration', 'prompt_eval_duration', 'eval_duration'] as const) {
    assert.ok(Number.isInteger(res[key]) && res[key] >= 0, `${key}: ${res[key]}`);
  }
  // Nanoseconds: a generation of several tokens takes more than a microsecond.
  assert.ok(res.total_duration > 1000 && res.total_duration >= res.eval_duration);
}

describe('Ollama API', () => {
  const service = new ServiceFixture();
  let gateway: Ollama;
  let port: Ollama;

  before(async () => {
    await service.configure({ alpha: { model: tinyModel }, beta: { model: tinyBpeModel }, idle: { model: tinyModel } });
    await service.start(['--all']);
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta'), service.waitReady('idle')]);
    assert.equal((await service.admin('POST', '/admin/workers/idle/stop')).status, 200);
    gateway = new Ollama({ host: `http://127.0.0.1:${service.gatewayPort}` });
    port = new Ollama({ host: `http://127.0.0.1:${service.ports.get('beta')}` });
  });

  after(() => service.cleanup());

  test('generate, not streamed, through the gateway (name and name:latest) and a model port', async () => {
    for (const [client, model] of [[gateway, 'alpha'], [gateway, 'beta:latest'], [port, 'beta']] as const) {
      const res = await client.generate({ model, prompt: 'Why is the sky blue?', options: { num_predict: 5, seed: 1, temperature: 0.5, top_k: 20, top_p: 0.9, min_p: 0.05, repeat_penalty: 1.1, repeat_last_n: 32, presence_penalty: 0.1, frequency_penalty: 0.1, num_ctx: 4096, mirostat: 1 } as never, keep_alive: '5m' });
      assert.equal(res.model, `${model.replace(/:latest$/, '')}:latest`);
      assert.equal(typeof res.response, 'string');
      assert.equal(res.done_reason, 'length');
      assertStats(res, 5);
      assert.ok(!Number.isNaN(Date.parse(String(res.created_at))));
    }
  });

  test('generate streams NDJSON parts and a last part with the stats', async () => {
    for (const client of [gateway, port]) {
      const parts: GenerateResponse[] = [];
      for await (const part of await client.generate({ model: 'beta', prompt: 'Stream', stream: true, options: { num_predict: 6 }, system: 'You are terse.' })) parts.push(part);
      const last = parts.at(-1) as GenerateResponse;
      assert.ok(parts.length >= 2);
      for (const p of parts.slice(0, -1)) assert.equal(p.done, false);
      assertStats(last, 6);
    }
  });

  test('raw generate sends the prompt as is; a seed makes the same output twice', async () => {
    const ask = () => gateway.generate({ model: 'alpha', prompt: 'abc', raw: true, options: { num_predict: 4, seed: 9 } });
    const [a, b] = [await ask(), await ask()];
    assert.equal(a.response, b.response);
    assert.equal(a.eval_count, 4);
  });

  test('chat: not streamed and streamed', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
    const res = await gateway.chat({ model: 'alpha', messages, options: { num_predict: 4, stop: ['\u0000never'] } });
    assert.equal(res.message.role, 'assistant');
    assert.equal(typeof res.message.content, 'string');
    assertStats(res, 4);
    const parts: ChatResponse[] = [];
    for await (const part of await port.chat({ model: 'beta', messages, stream: true, options: { num_predict: 5 } })) parts.push(part);
    assertStats(parts.at(-1) as ChatResponse, 5);
    for (const p of parts) assert.equal(p.message.role, 'assistant');
  });

  test('format: a JSON schema gives matching JSON; "json" gives JSON', async () => {
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false };
    for (let seed = 1; seed <= 3; seed++) {
      const res = await gateway.chat({ model: 'alpha', messages: [{ role: 'user', content: 'JSON' }], format: schema, options: { num_predict: 40, seed } });
      assert.equal(res.done_reason, 'stop');
      assert.equal(typeof JSON.parse(res.message.content).ok, 'boolean');
    }
    let parsed = 0;
    for (let seed = 1; seed <= 6; seed++) {
      const res = await port.generate({ model: 'beta', prompt: 'JSON', format: 'json', options: { num_predict: 120, seed } });
      if (res.done_reason !== 'stop') continue;
      JSON.parse(res.response);
      parsed++;
    }
    assert.ok(parsed >= 1, 'no format=json output finished within 120 tokens');
  });

  test('an empty prompt loads the model (done_reason "load")', async () => {
    const res = await gateway.generate({ model: 'alpha', prompt: '' });
    assert.equal(res.done, true);
    assert.equal(res.done_reason, 'load');
  });

  test('list, ps, show, version', async () => {
    const list = await gateway.list();
    assert.deepEqual(list.models.map((m) => m.name).sort(), ['alpha:latest', 'beta:latest', 'idle:latest']);
    for (const m of list.models) assert.equal(m.details.format, 'gguf');
    const ps = await gateway.ps();
    assert.deepEqual(ps.models.map((m) => m.name).sort(), ['alpha:latest', 'beta:latest']);
    const own = await port.list();
    assert.deepEqual(own.models.map((m) => m.name), ['beta:latest']);
    const show = await gateway.show({ model: 'beta:latest' });
    assert.equal(show.details.format, 'gguf');
    assert.ok(show.capabilities.includes('completion'));
    const version = await gateway.version();
    assert.match(version.version, /^\d+\.\d+\.\d+$/);
    const root = await fetch(`http://127.0.0.1:${service.gatewayPort}/`);
    assert.equal(await root.text(), 'Ollama is running');
  });

  test('errors: 404 for an unknown model, 503 for one not ready, 400 naming the field', async () => {
    const status = (p: Promise<unknown>) => p.then(() => 0, (e: { status_code?: number; error?: string }) => e.status_code ?? -1);
    assert.equal(await status(gateway.generate({ model: 'nope', prompt: 'x' })), 404);
    assert.equal(await status(gateway.show({ model: 'nope' })), 404);
    assert.equal(await status(gateway.chat({ model: 'idle', messages: [{ role: 'user', content: 'x' }] })), 503);
    assert.equal(await status(gateway.generate({ model: 'alpha', prompt: 'x', options: { temperature: 'hot' } as never })), 400);
    assert.equal(await status(gateway.generate({ model: 'alpha', prompt: 'x', format: 'yaml' })), 400);
    const err = await gateway.chat({ model: 'alpha', messages: [{ role: 'tool', content: 'x' }] }).catch((e: { error: string }) => e);
    assert.match((err as { error: string }).error, /messages\[0\]\.role/);
  });

  test('raw HTTP: NDJSON framing, one object a line, the last one done; errors as {"error"}', async () => {
    const res = await fetch(`http://127.0.0.1:${service.gatewayPort}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'beta', messages: [{ role: 'user', content: 'x' }], options: { num_predict: 4 } }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/x-ndjson/);
    const text = await res.text();
    assert.ok(text.endsWith('}\n'));
    const lines = text.split('\n').slice(0, -1).map((l) => JSON.parse(l) as ChatResponse);
    assert.ok(lines.length >= 2, 'streamed by default');
    assert.deepEqual(lines.map((l) => l.done), [...lines.slice(1).map(() => false), true]);
    const bad = await fetch(service.url('beta', '/api/generate'), { method: 'POST', body: '{"model":' });
    assert.equal(bad.status, 400);
    const body = await bad.json();
    assert.deepEqual(Object.keys(body), ['error']);
    assert.equal(bad.headers.get('x-error-code'), 'INVALID_REQUEST');
  });
});
