/**
 * NATS settings without a server: the NATS_* keys of a worker (validation naming the key, the
 * supervisor's defaults, files that must exist, masked credentials) and what the transport
 * connects with (credentials parsed out of URLs, the explicit keys winning, sharing keys).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import { connectionKey, connectionSettings, parseServers } from '@lmserve/nats';
import type { ServicePaths } from '../../packages/supervisor/src/service-paths.js';
import { parseWorkerConfig, type WorkerDefaults } from '../../packages/supervisor/src/worker-config.js';

const dir = mkdtempSync(join(tmpdir(), 'lmserve-nats-settings-'));
const paths: ServicePaths = { root: dir, envsDir: join(dir, 'envs'), dataDir: join(dir, 'data') };
const file = join(paths.envsDir, 'worker.demo.env');
const parse = (text: string, defaults: WorkerDefaults = { natsUrl: null }) => parseWorkerConfig('demo', file, text, paths, defaults, {});

function failsOn(fn: () => unknown, key: string): LmError {
  let caught: unknown;
  assert.throws(fn, (err: unknown) => {
    caught = err;
    return err instanceof LmError && err.code === 'INVALID_REQUEST' && err.field === key;
  });
  return caught as LmError;
}

describe('worker NATS keys', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('defaults: NATS off, the queue group derived from the subject', () => {
    const config = parse('');
    assert.equal(config.natsUrl, null);
    assert.equal(config.subject, 'inference.request.demo');
    assert.equal(config.natsQueue, 'lmserve.inference.request.demo');
    assert.equal(parse('SUBJECT=models.demo\n').natsQueue, 'lmserve.models.demo');
    assert.equal(parse('NATS_QUEUE=workers\n').natsQueue, 'workers');
  });

  test('NATS_URL may list several servers; each must be a NATS URL', () => {
    assert.equal(parse('NATS_URL=nats://a:4222, nats://b:4222\n').natsUrl, 'nats://a:4222,nats://b:4222');
    failsOn(() => parse('NATS_URL=nats://a:4222,http://b\n'), 'NATS_URL');
  });

  test('a bad URL is reported with its credentials masked', () => {
    const err = failsOn(() => parse('NATS_URL=nats://user:s3cret@a:4222,bogus\n'), 'NATS_URL');
    assert.ok(!err.message.includes('s3cret'), err.message);
  });

  test('the supervisor hands down its NATS keys; the worker file wins', () => {
    const defaults: WorkerDefaults = { natsUrl: 'nats://sup:4222', nats: { NATS_TOKEN: 'from-supervisor', NATS_USER: 'alice' } };
    const config = parse('NATS_USER=bob\n', defaults);
    assert.equal(config.natsUrl, 'nats://sup:4222');
    assert.equal(config.natsToken, 'from-supervisor');
    assert.equal(config.natsUser, 'bob');
  });

  test('credential and TLS files must exist; cert and key go together; a password needs a user', () => {
    failsOn(() => parse('NATS_CREDS=missing.creds\n'), 'NATS_CREDS');
    failsOn(() => parse('NATS_NKEY_SEED=/nonexistent/seed\n'), 'NATS_NKEY_SEED');
    const cert = join(dir, 'client.pem');
    writeFileSync(cert, 'x');
    assert.equal(parse(`NATS_TLS_CA=${cert}\n`).natsTlsCa, cert);
    failsOn(() => parse(`NATS_TLS_CERT=${cert}\n`), 'NATS_TLS_CERT');
    assert.equal(parse(`NATS_TLS_CERT=${cert}\nNATS_TLS_KEY=client.pem\n`).natsTlsKey, cert, 'relative paths resolve against the root');
    failsOn(() => parse('NATS_PASSWORD=x\n'), 'NATS_PASSWORD');
    failsOn(() => parse('NATS_QUEUE=a b\n'), 'NATS_QUEUE');
    failsOn(() => parse('SUBJECT=inference.*\n'), 'SUBJECT');
  });
});

describe('connection settings', () => {
  test('credentials inside URLs are parsed out: user:password, or a token', () => {
    assert.deepEqual(parseServers('nats://alice:pa%40ss@h1:4000,nats://h2'), {
      servers: ['nats://h1:4000', 'nats://h2:4222'],
      token: null,
      user: 'alice',
      password: 'pa@ss',
      tls: false,
    });
    const token = parseServers('tls://t0k3n@secure.example');
    assert.equal(token.token, 't0k3n');
    assert.equal(token.tls, true);
    assert.deepEqual(token.servers, ['tls://secure.example:4222']);
  });

  test('the explicit keys win over a URL; equal settings give equal keys', () => {
    const base = parse('');
    const viaUrl = connectionSettings({ ...base, natsUrl: 'nats://url-token@h:4222' });
    const viaKey = connectionSettings({ ...base, natsUrl: 'nats://h:4222', natsToken: 'url-token' });
    assert.ok(viaUrl && viaKey);
    assert.equal(viaUrl.token, 'url-token');
    assert.equal(connectionKey(viaUrl), connectionKey(viaKey));
    const both = connectionSettings({ ...base, natsUrl: 'nats://url-token@h:4222', natsToken: 'key-token' });
    assert.equal(both?.token, 'key-token');
    assert.notEqual(connectionKey(both as NonNullable<typeof both>), connectionKey(viaKey));
    assert.equal(connectionSettings(base), null, 'no NATS_URL: off');
  });
});
