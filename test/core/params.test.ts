import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PARAMETERS, parseGenerateBody, parseParams, parameterNames, type ParamSpec } from '@lmserve/core';
import { LmError } from '@lmserve/protocol';

function rejects(fn: () => unknown, field: string, code = 'INVALID_REQUEST'): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof LmError, String(err));
    assert.equal(err.code, code, err.message);
    assert.equal(err.field, field, err.message);
    assert.ok(err.message.includes(field), `message names the field: ${err.message}`);
    return true;
  });
}

const numeric = PARAMETERS.filter((p): p is ParamSpec & { min: number; max: number } => (p.type === 'int' || p.type === 'float') && p.min !== undefined);

describe('the parameter table', () => {
  test('every row has an original name, a type and, for numbers, bounds with the default inside', () => {
    const names = new Set<string>();
    for (const spec of PARAMETERS) {
      assert.match(spec.name, /^[a-z_]+$/);
      assert.ok(!names.has(spec.name), `duplicate ${spec.name}`);
      names.add(spec.name);
      if (spec.type === 'int' || spec.type === 'float') {
        assert.ok(spec.min !== undefined && spec.max !== undefined && spec.min < spec.max, spec.name);
        if (typeof spec.default === 'number') assert.ok(spec.default >= spec.min && spec.default <= spec.max, spec.name);
      }
    }
  });

  for (const spec of numeric) {
    test(`${spec.name}: the bounds are accepted, one step outside is refused naming the field (original, OpenAI, Ollama)`, () => {
      const step = spec.type === 'int' ? 1 : 0.001;
      for (const [dialect, name, prefix] of [
        ['original', spec.name, 'params.'],
        ['openai', spec.openai, ''],
        ['ollama', spec.ollama, 'options.'],
      ] as const) {
        if (name === null) continue;
        const ok = (v: number) => parseParams({ [name]: v }, dialect, prefix)[spec.key];
        assert.equal(ok(spec.min), spec.min);
        assert.equal(ok(spec.max), spec.max);
        rejects(() => parseParams({ [name]: spec.min - step }, dialect, prefix), `${prefix}${name}`);
        rejects(() => parseParams({ [name]: spec.max + step }, dialect, prefix), `${prefix}${name}`);
        rejects(() => parseParams({ [name]: 'high' }, dialect, prefix), `${prefix}${name}`);
        rejects(() => parseParams({ [name]: Number.NaN }, dialect, prefix), `${prefix}${name}`);
      }
    });
  }

  test('integers refuse fractions', () => {
    for (const spec of numeric.filter((p) => p.type === 'int')) {
      rejects(() => parseParams({ [spec.name]: spec.min + 0.5 }, 'original', 'params.'), `params.${spec.name}`);
    }
  });

  test('names map to the engine keys in each dialect', () => {
    assert.deepEqual(parseParams({ max_tokens: 5, top_k: 3, repeat_last_n: -1 }, 'original', 'params.'), { maxTokens: 5, topK: 3, repeatLastN: -1 });
    assert.deepEqual(parseParams({ num_predict: 7, temperature: 0 }, 'ollama', 'options.'), { maxTokens: 7, temperature: 0 });
    // ignore_eos is an extension under Ollama's options too (llama.cpp's name; Ollama ignores it).
    assert.deepEqual(parseParams({ num_predict: 7, ignore_eos: true }, 'ollama', 'options.'), { maxTokens: 7, ignoreEos: true });
    assert.deepEqual(parseParams({ max_tokens: 9, logit_bias: { '12': -100 } }, 'openai', ''), { maxTokens: 9, logitBias: [[12, -100]] });
  });

  test('unknown fields: refused in the original API, ignored in OpenAI and Ollama bodies', () => {
    rejects(() => parseParams({ tempreature: 1 }, 'original', 'params.'), 'params.tempreature');
    assert.deepEqual(parseParams({ model: 'x', tempreature: 1, temperature: 0.5 }, 'openai', ''), { temperature: 0.5 });
    assert.deepEqual(parseParams({ mirostat: 2, num_ctx: 4096 }, 'ollama', 'options.'), {});
  });

  test('stop: a string or at most 16 non-empty strings', () => {
    assert.deepEqual(parseParams({ stop: '\n' }, 'original', 'params.'), { stop: '\n' });
    assert.deepEqual(parseParams({ stop: ['a', 'b'] }, 'original', 'params.'), { stop: ['a', 'b'] });
    rejects(() => parseParams({ stop: [''] }, 'original', 'params.'), 'params.stop[0]');
    rejects(() => parseParams({ stop: Array(17).fill('x') }, 'original', 'params.'), 'params.stop');
    rejects(() => parseParams({ stop: 5 }, 'original', 'params.'), 'params.stop');
  });

  test('logit_bias: token ids to biases within ±100', () => {
    rejects(() => parseParams({ logit_bias: { abc: 1 } }, 'original', 'params.'), 'params.logit_bias.abc');
    rejects(() => parseParams({ logit_bias: { '3': 101 } }, 'original', 'params.'), 'params.logit_bias.3');
    rejects(() => parseParams({ logit_bias: [1, 2] }, 'original', 'params.'), 'params.logit_bias');
    rejects(() => parseParams({ logit_bias: { '7': 'x' } }, 'original', 'params.'), 'params.logit_bias.7');
    assert.deepEqual(parseParams({ logit_bias: { '12': -100, '7': 2.5 } }, 'openai', ''), { logitBias: [[7, 2.5], [12, -100]] });
  });

  test('a huge list or map costs about what reading its JSON costs, not many times more', () => {
    // zod parsed every element of an over-long array and every entry of a record: a 4 MB body
    // held the event loop for half a second (1M stop strings) or 2.4 s (300k biases).
    // The least of three runs each, so that a garbage collection in one does not decide.
    const timed = (f: () => unknown) => {
      let least = Infinity;
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        f();
        least = Math.min(least, performance.now() - t);
      }
      return least;
    };
    const stop = JSON.stringify({ stop: Array(1_000_000).fill('a') });
    let value: unknown;
    const read = timed(() => (value = JSON.parse(stop)));
    // parseParams on the last JSON read; the error it threw, kept for the assertion.
    let error: unknown;
    const refuse = () => {
      try {
        parseParams(value, 'original', 'params.');
      } catch (err) {
        error = err;
      }
    };
    const checked = timed(refuse);
    assert.match((error as Error).message, /params\.stop may hold at most 16 strings/);
    assert.ok(checked < read, `checking took ${checked.toFixed(0)} ms, reading the JSON ${read.toFixed(0)} ms`);
    const bias = JSON.stringify({ logit_bias: Object.fromEntries(Array.from({ length: 200_000 }, (_, i) => [String(i), -1])) });
    const readBias = timed(() => (value = JSON.parse(bias)));
    let params: ReturnType<typeof parseParams> = {};
    const checkedBias = timed(() => (params = parseParams(value, 'original', 'params.')));
    assert.equal(params.logitBias?.length, 200_000);
    // Each entry becomes an [id, bias] pair for the engine: 5-13x the parse here, against about
    // 160x with zod's record.
    assert.ok(checkedBias < 40 * readBias, `checking took ${checkedBias.toFixed(0)} ms, reading the JSON ${readBias.toFixed(0)} ms`);
    const schema = JSON.stringify({ json_schema: Object.fromEntries(Array.from({ length: 300_000 }, (_, i) => [`k${i}`, 1])) });
    const readSchema = timed(() => (value = JSON.parse(schema)));
    const checkedSchema = timed(refuse);
    assert.match((error as Error).message, /params\.json_schema must be at most 65536 bytes/);
    assert.ok(checkedSchema < 2 * readSchema, `checking took ${checkedSchema.toFixed(0)} ms, reading the JSON ${readSchema.toFixed(0)} ms`);
  });

  test('params must be an object', () => {
    rejects(() => parseParams(5, 'original', 'params.'), 'params');
    rejects(() => parseParams([1], 'ollama', 'options.'), 'options');
  });

  test('every dialect name is unique within its dialect', () => {
    for (const dialect of ['original', 'openai', 'ollama'] as const) {
      const names = parameterNames(dialect);
      assert.equal(new Set(names).size, names.length, dialect);
    }
  });
});

describe('the original request body', () => {
  test('a string input with stream and raw flags', () => {
    const parsed = parseGenerateBody({ input: 'hi', params: { max_tokens: 3, stream: true, raw: true } });
    assert.deepEqual(parsed, { input: 'hi', params: { maxTokens: 3 }, stream: true, raw: true });
  });

  test('chat messages with the three roles', () => {
    const input = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'hello' },
      { role: 'user', content: 'again' },
    ];
    assert.deepEqual(parseGenerateBody({ input }).input, input);
  });

  test('bad inputs name their field', () => {
    rejects(() => parseGenerateBody({}), 'input');
    rejects(() => parseGenerateBody({ input: '' }), 'input');
    rejects(() => parseGenerateBody({ input: [] }), 'input');
    rejects(() => parseGenerateBody({ input: {} }), 'input');
    rejects(() => parseGenerateBody({ input: ['hi'] }), 'input[0]');
    rejects(() => parseGenerateBody({ input: [{ role: 'tool', content: 'x' }] }), 'input[0].role');
    rejects(() => parseGenerateBody({ input: [{ role: 'user', content: 3 }] }), 'input[0].content');
    rejects(() => parseGenerateBody({ input: [{ role: 'user', content: 'x' }], params: { raw: true } }), 'params.raw');
    rejects(() => parseGenerateBody({ input: 'x', params: { stream: 'yes' } }), 'params.stream');
    rejects(() => parseGenerateBody({ input: 'x', params: 'fast' }), 'params');
    rejects(() => parseGenerateBody({ input: 'x', prompt: 'y' }), 'prompt');
    rejects(() => parseGenerateBody(null), 'body');
    rejects(() => parseGenerateBody('input'), 'body');
  });

  test('a grammar that could harm the parser is an INVALID_GRAMMAR naming params.grammar', () => {
    rejects(() => parseGenerateBody({ input: 'x', params: { grammar: 'root ::= "\u0000"' } }), 'params.grammar', 'INVALID_GRAMMAR');
  });
});
