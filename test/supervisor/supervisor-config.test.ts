/** loadSupervisorConfig: process environment > envs/supervisor.env > built-in default, errors naming the source. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, beforeEach, describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import type { ServicePaths } from '../../packages/supervisor/src/service-paths.js';
import { loadSupervisorConfig } from '../../packages/supervisor/src/supervisor-config.js';

const dir = mkdtempSync(join(tmpdir(), 'lmserve-supervisor-config-'));
const paths: ServicePaths = { root: dir, envsDir: join(dir, 'envs'), dataDir: join(dir, 'data') };
const file = join(paths.envsDir, 'supervisor.env');

function writeFile(text: string): void {
  writeFileSync(file, text);
}

function failsWith(env: Record<string, string>, key: string, message: string | RegExp): void {
  assert.throws(
    () => loadSupervisorConfig(paths, env),
    (err: unknown) => {
      assert.ok(err instanceof LmError, String(err));
      assert.equal(err.code, 'INVALID_REQUEST');
      assert.equal(err.field, key);
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

describe('supervisor configuration', () => {
  beforeEach(() => {
    rmSync(paths.envsDir, { recursive: true, force: true });
    mkdirSync(paths.envsDir, { recursive: true });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('no file, no environment: the defaults, and a generated admin token', () => {
    const config = loadSupervisorConfig(paths, {});
    assert.equal(config.file, file);
    assert.deepEqual(config.gatewayAddr, { host: '127.0.0.1', port: 5760 });
    assert.equal(config.adminTokenGenerated, true);
    assert.ok(config.adminToken.length >= 24);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.natsUrl, null);
    assert.equal(config.shutdownGraceMs, 10_000);
    assert.equal(config.restartBackoffMs, 500);
    assert.equal(config.restartBackoffMaxMs, 30_000);
    assert.deepEqual(config.unknownKeys, []);
    assert.deepEqual(config.environmentOverrides, []);
  });

  test('the file sets every key', () => {
    writeFile(
      'GATEWAY_ADDR=0.0.0.0:6000\nADMIN_TOKEN=file-token\nLOG_LEVEL=debug\nNATS_URL=nats://file:4222\n' +
        'SHUTDOWN_GRACE_MS=100\nRESTART_BACKOFF_MS=20\nRESTART_BACKOFF_MAX_MS=40\n',
    );
    const config = loadSupervisorConfig(paths, {});
    assert.deepEqual(config.gatewayAddr, { host: '0.0.0.0', port: 6000 });
    assert.equal(config.adminToken, 'file-token');
    assert.equal(config.adminTokenGenerated, false);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.natsUrl, 'nats://file:4222');
    assert.equal(config.shutdownGraceMs, 100);
    assert.equal(config.restartBackoffMs, 20);
    assert.equal(config.restartBackoffMaxMs, 40);
  });

  test('an environment variable of the same name wins over the file', () => {
    writeFile('LOG_LEVEL=debug\nSHUTDOWN_GRACE_MS=100\nNATS_URL=nats://file:4222\nRESTART_BACKOFF_MS=20\n');
    const env = {
      LOG_LEVEL: 'warn',
      SHUTDOWN_GRACE_MS: '250',
      NATS_URL: 'nats://env:4222',
      GATEWAY_ADDR: '10.0.0.1:7000',
      ADMIN_TOKEN: 'env-token',
      // Not a supervisor key: ignored, and not an unknown key either.
      SOMETHING_ELSE: '1',
    };
    const config = loadSupervisorConfig(paths, env);
    assert.equal(config.logLevel, 'warn');
    assert.equal(config.shutdownGraceMs, 250);
    assert.equal(config.natsUrl, 'nats://env:4222');
    assert.deepEqual(config.gatewayAddr, { host: '10.0.0.1', port: 7000 });
    assert.equal(config.adminToken, 'env-token');
    // Keys the environment does not set still come from the file.
    assert.equal(config.restartBackoffMs, 20);
    assert.deepEqual(config.unknownKeys, []);
    assert.deepEqual(config.environmentOverrides.sort(), ['ADMIN_TOKEN', 'GATEWAY_ADDR', 'LOG_LEVEL', 'NATS_URL', 'SHUTDOWN_GRACE_MS']);
  });

  test('an empty environment variable does not override the file', () => {
    writeFile('LOG_LEVEL=debug\n');
    const config = loadSupervisorConfig(paths, { LOG_LEVEL: '' });
    assert.equal(config.logLevel, 'debug');
    assert.deepEqual(config.environmentOverrides, []);
  });

  test('the environment defaults to process.env', () => {
    const saved = process.env.SHUTDOWN_GRACE_MS;
    process.env.SHUTDOWN_GRACE_MS = '4321';
    try {
      assert.equal(loadSupervisorConfig(paths).shutdownGraceMs, 4321);
    } finally {
      if (saved === undefined) delete process.env.SHUTDOWN_GRACE_MS;
      else process.env.SHUTDOWN_GRACE_MS = saved;
    }
  });

  test('a bad value names where it came from: the environment variable or the file', () => {
    writeFile('SHUTDOWN_GRACE_MS=100\nLOG_LEVEL=loud\n');
    failsWith(
      { SHUTDOWN_GRACE_MS: 'soon', LOG_LEVEL: 'info' },
      'SHUTDOWN_GRACE_MS',
      'invalid SHUTDOWN_GRACE_MS="soon" in environment variable SHUTDOWN_GRACE_MS: must be an integer from 0 to 3600000',
    );
    failsWith({}, 'LOG_LEVEL', `invalid LOG_LEVEL="loud" in ${file}: must be debug, info, warn or error`);
    failsWith({ LOG_LEVEL: 'chatty' }, 'LOG_LEVEL', 'invalid LOG_LEVEL="chatty" in environment variable LOG_LEVEL: must be debug, info, warn or error');
    writeFile('');
    failsWith({ GATEWAY_ADDR: 'nowhere' }, 'GATEWAY_ADDR', 'invalid GATEWAY_ADDR="nowhere" in environment variable GATEWAY_ADDR: must be host:port');
    failsWith({ NATS_URL: 'http://x' }, 'NATS_URL', /^invalid NATS_URL="http:\/\/x" in environment variable NATS_URL: must be a nats: or tls: or ws: or wss: URL$/);
    failsWith({ RESTART_BACKOFF_MS: '5' }, 'RESTART_BACKOFF_MS', /in environment variable RESTART_BACKOFF_MS: must be an integer from 10 to 600000$/);
  });

  test('a gateway off loopback needs ADMIN_TOKEN from the file or the environment', () => {
    writeFile('GATEWAY_ADDR=0.0.0.0:5760\n');
    failsWith(
      {},
      'ADMIN_TOKEN',
      `invalid ADMIN_TOKEN (not set in environment variable ADMIN_TOKEN or ${file}): must be set when GATEWAY_ADDR is not a loopback address`,
    );
    assert.equal(loadSupervisorConfig(paths, { ADMIN_TOKEN: 'from-env' }).adminToken, 'from-env');
    writeFile('');
    failsWith({ GATEWAY_ADDR: '0.0.0.0:5760' }, 'ADMIN_TOKEN', /must be set when GATEWAY_ADDR is not a loopback address/);
  });

  test('unknown keys come from the file only', () => {
    writeFile('LOG_LEVEL=info\nLOG_LEVLE=debug\n');
    assert.deepEqual(loadSupervisorConfig(paths, { LOG_LEVLE: 'x', RANDOM: 'y' }).unknownKeys, ['LOG_LEVLE']);
  });
});
