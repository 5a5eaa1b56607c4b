/** ConfigReader: typed values over layered sources, and errors that name the key, the value and its source. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import { ConfigReader, environmentLayer, fileLayer, valuesLayer, type Environment } from '../../packages/supervisor/src/config-values.js';

const FILE = '/etc/lmserve/envs/worker.demo.env';

/** A reader over (highest first) the environment with `prefix`, one env file, then fixed defaults. */
function reader(file: Record<string, string>, env: Environment = {}, defaults: Record<string, string | null> = {}, prefix = ''): ConfigReader {
  return new ConfigReader([
    environmentLayer(env, prefix),
    fileLayer(FILE, new Map(Object.entries(file))),
    valuesLayer(defaults, "the supervisor's NATS_URL"),
  ]);
}

/** Asserts an INVALID_REQUEST LmError for `key` with exactly this message. */
function failsWith(fn: () => unknown, key: string, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof LmError, String(err));
    assert.equal(err.code, 'INVALID_REQUEST');
    assert.equal(err.field, key);
    assert.equal(err.message, message);
    return true;
  });
}

describe('ConfigReader values', () => {
  test('string: the value, or the fallback when absent or empty', () => {
    const r = reader({ A: 'x', EMPTY: '' });
    assert.equal(r.string('A', 'f'), 'x');
    assert.equal(r.string('EMPTY', 'f'), 'f');
    assert.equal(r.string('MISSING', 'f'), 'f');
  });

  test('int: bounds are inclusive; absent or empty gives the fallback (even outside the bounds)', () => {
    const r = reader({ LOW: '1', HIGH: '8', NEG: '-3', EMPTY: '' });
    assert.equal(r.int('LOW', 4, 1, 8), 1);
    assert.equal(r.int('HIGH', 4, 1, 8), 8);
    assert.equal(r.int('NEG', 0, -5, 5), -3);
    assert.equal(r.int('EMPTY', 4, 1, 8), 4);
    assert.equal(r.int('MISSING', 0, 1, 8), 0);
  });

  test('int: out of range or not a plain integer is an error naming key, value and file', () => {
    for (const value of ['0', '9', '1.5', '0x10', '1e3', 'abc', '+3', '3 ']) {
      failsWith(() => reader({ N: value }).int('N', 4, 1, 8), 'N', `invalid N="${value}" in ${FILE}: must be an integer from 1 to 8`);
    }
  });

  test('choice: case-insensitive, returned lower-cased; anything else lists the choices', () => {
    assert.equal(reader({ J: 'ON' }).choice('J', 'off', ['on', 'off'] as const), 'on');
    assert.equal(reader({}).choice('J', 'off', ['on', 'off'] as const), 'off');
    failsWith(() => reader({ J: 'maybe' }).choice('J', 'off', ['on', 'off'] as const), 'J', `invalid J="maybe" in ${FILE}: must be one of on, off`);
  });

  test('url: null when unset; the scheme must be one of the given ones', () => {
    const schemes = ['nats:', 'tls:'];
    assert.equal(reader({}).url('U', schemes), null);
    assert.equal(reader({ U: 'tls://h:4222' }).url('U', schemes), 'tls://h:4222');
    failsWith(() => reader({ U: 'http://h' }).url('U', schemes), 'U', `invalid U="http://h" in ${FILE}: must be a nats: or tls: URL`);
    failsWith(() => reader({ U: 'not a url' }).url('U', schemes), 'U', `invalid U="not a url" in ${FILE}: must be a nats: or tls: URL`);
  });

  test('matching: the value or the fallback must match the pattern', () => {
    assert.equal(reader({ S: 'a.b' }).matching('S', 'x', /^[a-z.]+$/, 'letters'), 'a.b');
    assert.equal(reader({}).matching('S', 'fallback', /^[a-z]+$/, 'letters'), 'fallback');
    failsWith(() => reader({ S: 'a b' }).matching('S', 'x', /^[a-z]+$/, 'must be letters'), 'S', `invalid S="a b" in ${FILE}: must be letters`);
  });

  test('unknownKeys: keys of the file that are not known; never the environment or the defaults', () => {
    const r = reader({ KNOWN: '1', TYPO: '2', ALSO_TYPO: '' }, { HOME: '/root', PATH: '/bin' }, { DEFAULTED: 'x' });
    assert.deepEqual(r.unknownKeys(['KNOWN']), ['TYPO', 'ALSO_TYPO']);
    assert.deepEqual(reader({}, { ANYTHING: '1' }).unknownKeys([]), []);
  });

  test('unknownKeys merges the keys of every file layer', () => {
    const r = new ConfigReader([fileLayer('a.env', new Map([['A', '1'], ['X', '1']])), fileLayer('b.env', new Map([['B', '1'], ['X', '2']]))]);
    assert.deepEqual(r.unknownKeys(['A']), ['X', 'B']);
  });
});

describe('ConfigReader layers', () => {
  test('the environment wins over the file, the file over the defaults, the defaults over the fallback', () => {
    const r = reader({ B: 'file', C: 'file' }, { A: 'env', B: 'env' }, { A: 'default', B: 'default', C: 'default', D: 'default' });
    assert.equal(r.string('A', 'fallback'), 'env');
    assert.equal(r.string('B', 'fallback'), 'env');
    assert.equal(r.string('C', 'fallback'), 'file');
    assert.equal(r.string('D', 'fallback'), 'default');
    assert.equal(r.string('E', 'fallback'), 'fallback');
  });

  test('an empty value in a layer means "not set there": the next layer decides', () => {
    const r = reader({ A: '', B: 'file' }, { A: '', B: '' }, { A: 'default' });
    assert.equal(r.string('A', 'fallback'), 'default');
    assert.equal(r.string('B', 'fallback'), 'file');
    assert.equal(r.int('B2', 7, 0, 9), 7);
  });

  test('a prefix selects the environment variables: <prefix><KEY> only', () => {
    const r = reader({ CTX_SIZE: '512' }, { CTX_SIZE: '1', LMSERVE_OTHER_CTX_SIZE: '2', LMSERVE_DEMO_CTX_SIZE: '2048' }, {}, 'LMSERVE_DEMO_');
    assert.equal(r.int('CTX_SIZE', 4096, 64, 1 << 24), 2048);
    assert.equal(reader({ CTX_SIZE: '512' }, { CTX_SIZE: '1' }, {}, 'LMSERVE_DEMO_').int('CTX_SIZE', 4096, 64, 1 << 24), 512);
  });

  test('origin names where a value comes from, or every place an unset key could be set', () => {
    const r = reader({ B: 'file' }, { LMSERVE_DEMO_A: 'env' }, { C: 'x' }, 'LMSERVE_DEMO_');
    assert.equal(r.origin('A'), 'environment variable LMSERVE_DEMO_A');
    assert.equal(r.origin('B'), FILE);
    assert.equal(r.origin('C'), "the supervisor's NATS_URL");
    assert.equal(r.origin('D'), `not set in environment variable LMSERVE_DEMO_D or ${FILE} or the supervisor's NATS_URL`);
  });

  test('a bad value from the environment names the variable, not the file', () => {
    const r = reader({ CTX_SIZE: '512' }, { LMSERVE_DEMO_CTX_SIZE: 'big' }, {}, 'LMSERVE_DEMO_');
    failsWith(
      () => r.int('CTX_SIZE', 4096, 64, 1024),
      'CTX_SIZE',
      'invalid CTX_SIZE="big" in environment variable LMSERVE_DEMO_CTX_SIZE: must be an integer from 64 to 1024',
    );
  });

  test('a bad value in the file names the file even when other keys come from the environment', () => {
    const r = reader({ CTX_SIZE: 'big' }, { LMSERVE_DEMO_REPLICAS: '2' }, {}, 'LMSERVE_DEMO_');
    assert.equal(r.int('REPLICAS', 1, 1, 4), 2);
    failsWith(() => r.int('CTX_SIZE', 4096, 64, 1024), 'CTX_SIZE', `invalid CTX_SIZE="big" in ${FILE}: must be an integer from 64 to 1024`);
  });

  test('fail() on an unset key says where it could have been set', () => {
    failsWith(
      () => reader({}).fail('ADMIN_TOKEN', 'must be set'),
      'ADMIN_TOKEN',
      `invalid ADMIN_TOKEN (not set in environment variable ADMIN_TOKEN or ${FILE} or the supervisor's NATS_URL): must be set`,
    );
  });

  test('environmentOverrides lists the environment variables whose values were used, nothing else', () => {
    const r = reader({ B: 'file' }, { LMSERVE_DEMO_A: 'env', LMSERVE_DEMO_B: 'env', LMSERVE_DEMO_UNREAD: 'x', LMSERVE_DEMO_EMPTY: '' }, {}, 'LMSERVE_DEMO_');
    r.string('A', '');
    r.string('B', '');
    r.string('EMPTY', '');
    r.string('C', '');
    assert.deepEqual(r.environmentOverrides(), ['LMSERVE_DEMO_A', 'LMSERVE_DEMO_B']);
  });
});
