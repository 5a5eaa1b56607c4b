/**
 * The edge's parameter table and error codes against the native engine's own tables: a bound,
 * a default or a status that drifts on either side fails here.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PARAMETERS } from '@lmserve/core';
import { nativeErrorCodes, nativeParamSpecs } from '@lmserve/engine';
import { ErrorStatus } from '@lmserve/protocol';

/** llama.cpp's LLAMA_DEFAULT_SEED: "pick a random seed", which the table writes as no default. */
const RANDOM_SEED = 0xffffffff;

describe('the parameter table equals what the native engine accepts', () => {
  const native = new Map(nativeParamSpecs().map((s) => [s.name, s]));

  const engineParams = PARAMETERS.filter((p) => p.native !== false);

  test('the same parameters on both sides (those the engine takes)', () => {
    assert.deepEqual(engineParams.map((p) => p.key).sort(), [...native.keys()].sort());
  });

  for (const spec of engineParams) {
    test(`${spec.name} (${spec.key}): type, bounds and default`, () => {
      const n = native.get(spec.key);
      assert.ok(n, `the addon has ${spec.key}`);
      assert.equal(spec.type, n.type);
      if (n.type === 'int' || n.type === 'float') {
        assert.equal(spec.min, n.min, 'min');
        assert.equal(spec.max, n.max, 'max');
        if (spec.key === 'seed') assert.equal(n.default, RANDOM_SEED);
        else assert.equal(spec.default, Math.fround(n.default) === n.default ? n.default : Number(n.default.toPrecision(6)));
      } else if (n.type === 'stringList') {
        assert.equal(spec.maxItems, n.max, 'most strings');
        assert.deepEqual(n.default, []);
      } else if (n.type === 'bool' || (n.type === 'string' && n.default !== '')) {
        assert.equal(spec.default, n.default);
      } else {
        assert.equal(spec.default, undefined, 'no default on either side');
      }
    });
  }
});

describe('error codes', () => {
  test('every code the addon can raise is known to the TypeScript side, with the same HTTP status', () => {
    const codes = nativeErrorCodes();
    assert.ok(codes.length >= 10);
    for (const { code, status } of codes) {
      assert.ok(Object.prototype.hasOwnProperty.call(ErrorStatus, code), `${code} is known`);
      assert.equal(ErrorStatus[code as keyof typeof ErrorStatus], status, code);
    }
  });
});
