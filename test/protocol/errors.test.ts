import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorStatus, LmError, errorCodeOf, toLmError } from '@lmserve/protocol';

test('a code the TypeScript side does not know is INTERNAL (500), wherever it comes from', () => {
  const fromHost = new LmError('SOMETHING_NEW' as never, 'from a newer host');
  assert.equal(fromHost.code, 'INTERNAL');
  assert.equal(fromHost.status, 500);
  assert.equal(toLmError(Object.assign(new Error('native'), { code: 'NOT_OURS' })).code, 'INTERNAL');
  assert.equal(errorCodeOf('NOT_OURS'), 'INTERNAL');
  assert.equal(errorCodeOf('QUEUE_FULL'), 'QUEUE_FULL');
});

test('every code has an HTTP status; the service-level ones are where clients expect them', () => {
  for (const [code, status] of Object.entries(ErrorStatus)) assert.ok(status >= 400 && status < 600, code);
  assert.equal(ErrorStatus.CONFLICT, 409);
  assert.equal(ErrorStatus.QUEUE_FULL, 429);
  assert.equal(ErrorStatus.CANCELLED, 499);
});

test('toLmError never throws, whatever it is given', () => {
  const hostile = new Error('x');
  Object.defineProperty(hostile, 'message', { get: () => { throw new Error('getter'); } });
  const values: unknown[] = [null, undefined, 42, 'text', {}, [], hostile, { toString: () => { throw new Error('no'); } }, Symbol('s')];
  for (const value of values) {
    const error = toLmError(value);
    assert.ok(error instanceof LmError);
    assert.equal(error.code, 'INTERNAL');
  }
  assert.equal(toLmError('busy', 'QUEUE_FULL').status, 429);
});
