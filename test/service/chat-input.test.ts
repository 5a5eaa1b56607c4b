/**
 * Chat input: a list of {role, content} turns is rendered with the model's own chat template
 * (llama.cpp's Jinja engine) or with prompt_template.json, and reaches the model exactly as the
 * same text sent raw would: same prompt tokens, same greedy output.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Model } from '@lmserve/engine';
import { ServiceFixture, tinyBpeModel, tinyModel } from './service-fixture.js';

const messages = [
  { role: 'system', content: 'You answer briefly.' },
  { role: 'user', content: 'What is the capital of France?' },
  { role: 'assistant', content: 'Paris.' },
  { role: 'user', content: 'And of Italy?' },
];

const template = {
  name: 'tags',
  system_prefix: '[SYS]',
  system_suffix: '[/SYS]\n',
  user_prefix: '[USER]',
  user_suffix: '[/USER]\n',
  model_prefix: '[BOT]',
  model_suffix: '[/BOT]\n',
};

describe('chat input', () => {
  const service = new ServiceFixture();
  const models: Record<string, Model> = {};

  before(async () => {
    await service.configure({
      llama: { model: tinyModel },
      chatml: { model: tinyBpeModel },
      tagged: { model: tinyModel },
    });
    mkdirSync(join(service.dataDir, 'models', 'tagged'), { recursive: true });
    writeFileSync(join(service.dataDir, 'models', 'tagged', 'prompt_template.json'), JSON.stringify(template));
    await service.start();
    await Promise.all(['llama', 'chatml', 'tagged'].map((n) => service.waitReady(n)));
    models.llama = await loadModel(tinyModel, { vocabOnly: true });
    models.chatml = await loadModel(tinyBpeModel, { vocabOnly: true });
  });

  after(async () => {
    for (const model of Object.values(models)) model.dispose();
    await service.cleanup();
  });

  const greedy = { max_tokens: 6, temperature: 0, ignore_eos: true };

  async function sameAsRaw(worker: string, rendered: string): Promise<void> {
    const chat = await service.complete(worker, { input: messages, params: greedy });
    assert.equal(chat.status, 200, JSON.stringify(chat.body));
    const raw = await service.complete(worker, { input: rendered, params: { ...greedy, raw: true } });
    assert.equal(raw.status, 200, JSON.stringify(raw.body));
    assert.equal(chat.body.usage.tokens_in, raw.body.usage.tokens_in);
    assert.equal(chat.body.output, raw.body.output);
  }

  for (const worker of ['llama', 'chatml'] as const) {
    test(`${worker}: turns are rendered with the GGUF's chat template`, async () => {
      const model = models[worker] as Model;
      const rendered = model.applyChatTemplate(messages, { addAssistant: true });
      assert.ok(rendered.includes('And of Italy?') && rendered.includes('You answer briefly.'));
      await sameAsRaw(worker, rendered);
    });
  }

  test('prompt_template.json wraps each turn, system turns with the system markers', async () => {
    const rendered =
      '[SYS]You answer briefly.[/SYS]\n' +
      '[USER]What is the capital of France?[/USER]\n' +
      '[BOT]Paris.[/BOT]\n' +
      '[USER]And of Italy?[/USER]\n' +
      '[BOT]';
    await sameAsRaw('tagged', rendered);
  });

  test('a string input is one user turn', async () => {
    const asString = await service.complete('chatml', { input: 'Hello there', params: greedy });
    const asTurn = await service.complete('chatml', { input: [{ role: 'user', content: 'Hello there' }], params: greedy });
    assert.equal(asString.status, 200);
    assert.equal(asString.body.usage.tokens_in, asTurn.body.usage.tokens_in);
    assert.equal(asString.body.output, asTurn.body.output);
  });

  test('bad turns are a 400 naming the field, before any work', async () => {
    const cases: Array<[unknown, string]> = [
      [[], 'input'],
      [[{ role: 'narrator', content: 'x' }], 'input[0].role'],
      [[{ role: 'user', content: 'x' }, { content: 'y' }], 'input[1].role'],
      [[{ role: 'user', content: null }], 'input[0].content'],
    ];
    for (const [input, field] of cases) {
      const res = await service.complete('llama', { input, params: { max_tokens: 2 } });
      assert.equal(res.status, 400, JSON.stringify(input));
      assert.equal(res.body.error.code, 'INVALID_REQUEST');
      assert.equal(res.body.error.field, field);
    }
  });
});
