import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, describe, before, after } from 'node:test';
import { Generation, loadModel, LmError, type Model } from '@lmserve/engine';
// @ts-expect-error plain ESM module without type declarations
import { buildHeader, kv } from '../../scripts/lib/gguf.mjs';
import { modelPath, tempDir } from '../helpers.js';

/** After each failure, the process must still load and generate. */
async function stillWorks(model: Model): Promise<void> {
  const result = await model.generate('alive?', { maxTokens: 3, ignoreEos: true }).result;
  assert.equal(result.usage.tokensOut, 3);
}

describe('bad inputs give typed errors and the process lives on', () => {
  let model: Model;
  const dir = tempDir();
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
  });
  after(() => {
    model.dispose();
    dir.cleanup();
  });

  test('missing file: MODEL_FILE_NOT_FOUND', async () => {
    await assert.rejects(loadModel(join(dir.path, 'nope.gguf')), (err: unknown) => {
      assert.ok(err instanceof LmError);
      assert.equal(err.code, 'MODEL_FILE_NOT_FOUND');
      return true;
    });
    await assert.rejects(loadModel(dir.path), { code: 'MODEL_FILE_NOT_FOUND' });
    await stillWorks(model);
  });

  test('not a GGUF file: INVALID_MODEL_FILE', async () => {
    const path = join(dir.path, 'text.gguf');
    writeFileSync(path, 'this is not a model at all, just some text that is long enough');
    await assert.rejects(loadModel(path), { code: 'INVALID_MODEL_FILE' });
    const empty = join(dir.path, 'empty.gguf');
    writeFileSync(empty, '');
    await assert.rejects(loadModel(empty), { code: 'INVALID_MODEL_FILE' });
    await stillWorks(model);
  });

  test('truncated GGUF: INVALID_MODEL_FILE', async () => {
    const bytes = readFileSync(await modelPath('tiny'));
    for (const fraction of [0.001, 0.3, 0.9]) {
      const path = join(dir.path, `truncated-${fraction}.gguf`);
      writeFileSync(path, bytes.subarray(0, Math.floor(bytes.length * fraction)));
      await assert.rejects(loadModel(path), { code: 'INVALID_MODEL_FILE' }, `fraction ${fraction}`);
    }
    await stillWorks(model);
  });

  test('corrupted GGUF header: INVALID_MODEL_FILE', async () => {
    const bytes = Buffer.from(readFileSync(await modelPath('tiny')));
    bytes.writeBigUInt64LE(0xffffffffffn, 8); // absurd tensor count
    const path = join(dir.path, 'corrupt.gguf');
    writeFileSync(path, bytes);
    await assert.rejects(loadModel(path), { code: 'INVALID_MODEL_FILE' });
    await stillWorks(model);
  });

  test('unknown architecture: UNSUPPORTED_ARCHITECTURE', async () => {
    const { header } = buildHeader(
      [
        ['general.architecture', kv.str('made-up-arch')],
        ['general.name', kv.str('nothing')],
      ],
      [],
    ) as { header: Buffer };
    const path = join(dir.path, 'arch.gguf');
    writeFileSync(path, header);
    await assert.rejects(loadModel(path), { code: 'UNSUPPORTED_ARCHITECTURE' });
    await stillWorks(model);
  });

  test('prompt longer than the context: CONTEXT_OVERFLOW', async () => {
    const engine = await model.createEngine({ slots: 1, contextSize: 64 });
    try {
      const long = 'word '.repeat(200);
      assert.throws(() => engine.submit({ prompt: long, params: { maxTokens: 4 } }), { code: 'CONTEXT_OVERFLOW' });
      const fits = await engine.submit({ prompt: 'short', params: { maxTokens: 4, ignoreEos: true } }).result;
      assert.equal(fits.usage.tokensOut, 4);
    } finally {
      engine.dispose();
    }
    const generation = model.generate('word '.repeat(5000), { maxTokens: 4 });
    await assert.rejects(generation.result, { code: 'CONTEXT_OVERFLOW' });
    await stillWorks(model);
  });

  test('invalid grammar: INVALID_GRAMMAR with the parser reason', async () => {
    const generation = model.generate('x', { grammar: 'root ::= "unterminated' });
    await assert.rejects(generation.result, (err: unknown) => {
      assert.ok(err instanceof LmError);
      assert.equal(err.code, 'INVALID_GRAMMAR');
      assert.match(err.message, /parse|expect|unexpected|error/i);
      return true;
    });
    await assert.rejects(model.generate('x', { grammar: 'root ::= missing-rule' }).result, { code: 'INVALID_GRAMMAR' });
    assert.equal(model.checkGrammar('root ::= "a" | "b"'), null);
    assert.equal(typeof model.checkGrammar('root ::= ('), 'string');
    await stillWorks(model);
  });

  test('invalid sampling parameters: INVALID_REQUEST naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ temperature: -1 }, 'params.temperature'],
      [{ topP: 2 }, 'params.topP'],
      [{ maxTokens: 1.5 }, 'params.maxTokens'],
      [{ topK: 'many' }, 'params.topK'],
      [{ seed: -3 }, 'params.seed'],
      [{ stop: [1, 2] }, 'params.stop[0]'],
      [{ logitBias: { 99999999: 1 } }, 'params.logitBias[0]'],
      [{ logitBias: { abc: 1 } }, 'params.logitBias'],
      [{ ignoreEos: 'yes' }, 'params.ignoreEos'],
    ];
    for (const [params, field] of cases) {
      await assert.rejects(model.generate('x', params as never).result, (err: unknown) => {
        assert.ok(err instanceof LmError, `${field}: ${String(err)}`);
        assert.equal(err.code, 'INVALID_REQUEST', field);
        assert.ok(err.message.includes(field), `${err.message} names ${field}`);
        return true;
      });
    }
    await stillWorks(model);
  });

  test('token prompts outside the vocabulary: INVALID_REQUEST', async () => {
    await assert.rejects(model.generate([1, 40000], { maxTokens: 2 }).result, { code: 'INVALID_REQUEST' });
    await stillWorks(model);
  });

  test('an error event with a code this side does not know becomes INTERNAL', async () => {
    const generation = new Generation();
    generation.handle({ type: 'error', id: 1, code: 'SOME_FUTURE_CODE', message: 'from a newer addon' });
    await assert.rejects(generation.result, (err: unknown) => {
      assert.ok(err instanceof LmError);
      assert.equal(err.code, 'INTERNAL');
      assert.equal(err.status, 500);
      assert.match(err.message, /SOME_FUTURE_CODE/);
      return true;
    });
  });

  test('engine options are validated with their names', async () => {
    await assert.rejects(model.createEngine({ slots: 0 }), (err: unknown) => {
      assert.ok(err instanceof LmError && err.code === 'INVALID_REQUEST' && err.message.includes('options.slots'));
      return true;
    });
    await assert.rejects(model.createEngine({ contextSize: -5 }), { code: 'INVALID_REQUEST' });
  });
});
