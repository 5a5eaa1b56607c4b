import assert from 'node:assert/strict';
import { test } from 'node:test';
import { envInteger } from '@lmserve/protocol';

test('envInteger: a whole number in range, else the fallback; round takes fractions', () => {
  const limits = { min: 0, max: 100, fallback: 20 };
  const read = (value: string | undefined, round = false) => envInteger(value === undefined ? {} : { X: value }, 'X', { ...limits, round });
  assert.equal(read(undefined), 20);
  assert.equal(read(''), 20);
  assert.equal(read('  '), 20);
  assert.equal(read('0'), 0);
  assert.equal(read('100'), 100);
  assert.equal(read(' 42 '), 42);
  for (const bad of ['101', '-1', '2.5', 'ten', 'Infinity', 'NaN', '1e9']) assert.equal(read(bad), 20, bad);
  assert.equal(read('2.5', true), 3);
  assert.equal(read('99.6', true), 100);
  assert.equal(read('100.6', true), 20);
  assert.equal(read('ten', true), 20);
});
