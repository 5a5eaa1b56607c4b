import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, describe, before, after } from 'node:test';
import {
  ErrorStatus,
  LmError,
  isErrorCode,
  loadModel,
  nativeErrorCodes,
  nativeParamSpecs,
  type Engine,
  type Model,
} from '@lmserve/engine';
import { modelPath } from '../helpers.js';

const addonDir = fileURLToPath(new URL('../../addon/', import.meta.url));

describe('the addon error code table', () => {
  test('every code has the status ErrorStatus gives it', () => {
    const table = nativeErrorCodes();
    assert.ok(table.length > 0);
    for (const { code, status } of table) {
      assert.ok(isErrorCode(code), `${code} is not an ErrorCode of @lmserve/protocol`);
      assert.equal(status, ErrorStatus[code], `status of ${code}`);
    }
    assert.equal(new Set(table.map((e) => e.code)).size, table.length, 'no code is listed twice');
  });

  test('every codes::k* constant used in addon/ is in the table', () => {
    const errorsH = readFileSync(join(addonDir, 'errors.h'), 'utf8');
    const defined = new Map<string, string>();
    for (const m of errorsH.matchAll(/constexpr const char\* (k\w+) = "([A-Z_]+)";/g)) defined.set(m[1]!, m[2]!);
    assert.ok(defined.size > 0, 'errors.h defines the codes');
    const used = new Set<string>();
    for (const file of readdirSync(addonDir).filter((f) => /\.(cpp|h)$/.test(f))) {
      const text = readFileSync(join(addonDir, file), 'utf8');
      for (const m of text.matchAll(/codes::(k\w+)/g)) used.add(m[1]!);
    }
    assert.ok(used.size > 0, 'the addon raises coded errors');
    const table = new Set(nativeErrorCodes().map((e) => e.code));
    for (const constant of used) {
      const code = defined.get(constant);
      assert.ok(code !== undefined, `codes::${constant} is not defined in errors.h`);
      assert.ok(table.has(code), `codes::${constant} (${code}) is raised but missing from kErrorCodes`);
    }
  });
});

describe('the addon registers every JS-facing function through its coded-error wrapper', () => {
  test('no bare InstanceMethod/InstanceAccessor, every exported function wrapped in Coded<>', () => {
    for (const file of readdirSync(addonDir).filter((f) => /\.(cpp|h)$/.test(f) && f !== 'errors.h')) {
      const text = readFileSync(join(addonDir, file), 'utf8');
      assert.ok(!/\bInstance(Method|Accessor)\(/.test(text), `${file}: register methods with CodedMethod/CodedGetter`);
      for (const m of text.matchAll(/Napi::Function::New\(env, ([^)]*)\)/g)) {
        assert.match(m[1]!, /^Coded</, `${file}: ${m[0]} must go through Coded<>`);
      }
      for (const m of text.matchAll(/class \w+ : public (\S+)/g)) {
        assert.ok(!m[1]!.startsWith('Napi::ObjectWrap'), `${file}: ${m[0]} must derive from CodedObjectWrap`);
      }
    }
  });
});

describe('the addon parameter table', () => {
  let model: Model;
  let engine: Engine;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
    engine = await model.createEngine({ slots: 2, contextSize: 64, maxQueue: 8 });
  });
  after(() => {
    engine.dispose();
    model.dispose();
  });

  /** Submits and, when accepted, cancels at once; returns the synchronous error, if any. */
  async function trySubmit(params: Record<string, unknown>): Promise<unknown> {
    try {
      const generation = engine.submit({ prompt: 'bounds', params: { maxTokens: 1, ...params } as never });
      generation.cancel();
      await generation.result;
      return undefined;
    } catch (err) {
      return err;
    }
  }

  test('lists every generation parameter once, with its type', () => {
    const specs = nativeParamSpecs();
    const names = specs.map((s) => s.name);
    assert.deepEqual(names.sort(), [
      'frequencyPenalty', 'grammar', 'grammarRoot', 'ignoreEos', 'logitBias', 'logprobs', 'maxTokens', 'minP',
      'presencePenalty', 'repeatLastN', 'repeatPenalty', 'seed', 'stop', 'temperature', 'topK', 'topP',
    ]);
    const byName = Object.fromEntries(specs.map((s) => [s.name, s]));
    assert.deepEqual(byName.presencePenalty, { name: 'presencePenalty', type: 'float', min: -2, max: 2, default: 0 });
    assert.deepEqual(byName.frequencyPenalty, { name: 'frequencyPenalty', type: 'float', min: -2, max: 2, default: 0 });
    assert.deepEqual(byName.maxTokens, { name: 'maxTokens', type: 'int', min: -1, max: 2 ** 30, default: -1 });
    assert.deepEqual(byName.seed, { name: 'seed', type: 'int', min: 0, max: 4294967295, default: 4294967295 });
    assert.deepEqual(byName.stop, { name: 'stop', type: 'stringList', max: 16, default: [] });
    assert.equal(byName.temperature?.default, 0.8);
    assert.deepEqual(byName.logprobs, { name: 'logprobs', type: 'int', min: -1, max: 20, default: -1 });
  });

  test('every default, submitted explicitly, is accepted', async () => {
    for (const spec of nativeParamSpecs()) {
      assert.equal(await trySubmit({ [spec.name]: spec.default }), undefined, `${spec.name} = ${JSON.stringify(spec.default)}`);
    }
  });

  test('each numeric parameter takes its min and max and rejects just outside them', async () => {
    const numeric = nativeParamSpecs().filter((s) => s.type === 'int' || s.type === 'float');
    assert.ok(numeric.length >= 10);
    for (const spec of numeric) {
      if (spec.type !== 'int' && spec.type !== 'float') continue;
      const step = spec.type === 'int' ? 1 : 0.01;
      for (const value of [spec.min, spec.max]) {
        assert.equal(await trySubmit({ [spec.name]: value }), undefined, `${spec.name} = ${value} is accepted`);
      }
      for (const value of [spec.min - step, spec.max + step]) {
        const err = await trySubmit({ [spec.name]: value });
        assert.ok(err instanceof LmError, `${spec.name} = ${value} is rejected (got ${String(err)})`);
        assert.equal(err.code, 'INVALID_REQUEST', `${spec.name} = ${value}`);
        assert.ok(err.message.includes(`params.${spec.name}`), `"${err.message}" names params.${spec.name}`);
        assert.equal(err.field, `params.${spec.name}`);
      }
    }
  });

  test('stop takes at most its max strings', async () => {
    const spec = nativeParamSpecs().find((s) => s.name === 'stop');
    assert.ok(spec?.type === 'stringList');
    assert.equal(await trySubmit({ stop: Array.from({ length: spec.max }, (_, i) => `s${i}`) }), undefined);
    const err = await trySubmit({ stop: Array.from({ length: spec.max + 1 }, (_, i) => `s${i}`) });
    assert.ok(err instanceof LmError && err.code === 'INVALID_REQUEST' && err.field === 'params.stop', String(err));
  });
});
