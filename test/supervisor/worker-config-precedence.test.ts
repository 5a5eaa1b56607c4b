/**
 * Worker configuration precedence: LMSERVE_<WORKER>_<KEY> > envs/worker.<name>.env > the
 * supervisor's NATS_URL > built-in default; errors name where the bad value came from.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import type { ServicePaths } from '../../packages/supervisor/src/service-paths.js';
import { loadSupervisorConfig } from '../../packages/supervisor/src/supervisor-config.js';
import {
  isConfigError,
  loadWorkerConfig,
  parseWorkerConfig,
  workerEnvPrefix,
} from '../../packages/supervisor/src/worker-config.js';

const dir = mkdtempSync(join(tmpdir(), 'lmserve-worker-env-'));
const paths: ServicePaths = { root: '/srv/lmserve', envsDir: join(dir, 'envs'), dataDir: join(dir, 'data') };
const file = join(paths.envsDir, 'worker.qwen3-4b.env');
const NONE = { natsUrl: null };

const parse = (text: string, env: Record<string, string> = {}, defaults: { natsUrl: string | null } = NONE) =>
  parseWorkerConfig('qwen3-4b', file, text, paths, defaults, env);

function failsWith(fn: () => unknown, key: string, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof LmError, String(err));
    assert.equal(err.code, 'INVALID_REQUEST');
    assert.equal(err.field, key);
    assert.equal(err.message, message);
    return true;
  });
}

describe('worker configuration from the environment', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the variable prefix: the name upper-cased, anything but A-Z and 0-9 turned into _', () => {
    assert.equal(workerEnvPrefix('qwen3-4b'), 'LMSERVE_QWEN3_4B_');
    assert.equal(workerEnvPrefix('gemma3-270m'), 'LMSERVE_GEMMA3_270M_');
    assert.equal(workerEnvPrefix('gpt-oss-20b'), 'LMSERVE_GPT_OSS_20B_');
    assert.equal(workerEnvPrefix('a.b_c'), 'LMSERVE_A_B_C_');
    assert.equal(workerEnvPrefix('Demo'), 'LMSERVE_DEMO_');
  });

  test('LMSERVE_<WORKER>_<KEY> wins over the file; keys it does not set come from the file', () => {
    const config = parse('CTX_SIZE=2048\nREPLICAS=2\n', { LMSERVE_QWEN3_4B_CTX_SIZE: '8192' });
    assert.equal(config.contextSize, 8192);
    assert.equal(config.replicas, 2);
    assert.deepEqual(config.environmentOverrides, ['LMSERVE_QWEN3_4B_CTX_SIZE']);
  });

  test('every key can come from the environment alone', () => {
    const env = {
      LMSERVE_QWEN3_4B_MODEL_NAME: 'qwen',
      LMSERVE_QWEN3_4B_MODEL_PATH: 'models/q.gguf',
      LMSERVE_QWEN3_4B_HTTP_ADDR: '0.0.0.0:5800',
      LMSERVE_QWEN3_4B_WORKER_CONCURRENCY: '16',
      LMSERVE_QWEN3_4B_GPU_LAYERS: '99',
      LMSERVE_QWEN3_4B_JETSTREAM: 'on',
      LMSERVE_QWEN3_4B_API_KEY: 'k',
      LMSERVE_QWEN3_4B_MAX_QUEUE: '3',
    };
    const config = parse('', env);
    assert.equal(config.modelName, 'qwen');
    // Relative paths from the environment resolve against the repo root too.
    assert.equal(config.modelPath, '/srv/lmserve/models/q.gguf');
    assert.deepEqual(config.httpAddr, { host: '0.0.0.0', port: 5800 });
    assert.equal(config.concurrency, 16);
    assert.equal(config.gpuLayers, 99);
    assert.equal(config.jetstream, true);
    assert.equal(config.apiKey, 'k');
    assert.equal(config.maxQueue, 3);
    assert.equal(config.environmentOverrides.length, Object.keys(env).length);
  });

  test("other workers' variables, unprefixed keys and empty variables change nothing", () => {
    const env = { LMSERVE_DEMO_CTX_SIZE: '128', CTX_SIZE: '256', LMSERVE_QWEN3_4B_REPLICAS: '', LMSERVE_QWEN3_4B_BOGUS: '1' };
    const config = parse('CTX_SIZE=2048\nREPLICAS=2\n', env);
    assert.equal(config.contextSize, 2048);
    assert.equal(config.replicas, 2);
    assert.deepEqual(config.environmentOverrides, []);
    // The environment is not a file of ours: its other variables are not "unknown keys".
    assert.deepEqual(config.unknownKeys, []);
  });

  test('NATS_URL: the supervisor\'s is the default of a worker that sets none', () => {
    const supervisor = { natsUrl: 'nats://supervisor:4222' };
    assert.equal(parse('', {}, supervisor).natsUrl, 'nats://supervisor:4222');
    assert.equal(parse('NATS_URL=nats://file:4222\n', {}, supervisor).natsUrl, 'nats://file:4222');
    assert.equal(parse('NATS_URL=nats://file:4222\n', { LMSERVE_QWEN3_4B_NATS_URL: 'nats://env:4222' }, supervisor).natsUrl, 'nats://env:4222');
    assert.equal(parse('NATS_URL=\n', {}, supervisor).natsUrl, 'nats://supervisor:4222');
    assert.equal(parse('', {}, NONE).natsUrl, null);
    // The supervisor's own NATS_URL variable is not a worker key.
    assert.equal(parse('', { NATS_URL: 'nats://stray:4222' }, NONE).natsUrl, null);
  });

  test("the supervisor's NATS_URL from its file or the environment reaches the workers", () => {
    mkdirSync(paths.envsDir, { recursive: true });
    writeFileSync(join(paths.envsDir, 'supervisor.env'), 'NATS_URL=nats://from-file:4222\n');
    writeFileSync(file, 'CTX_SIZE=512\n');
    for (const [env, expected] of [
      [{}, 'nats://from-file:4222'],
      [{ NATS_URL: 'nats://from-env:4222' }, 'nats://from-env:4222'],
    ] as const) {
      const supervisor = loadSupervisorConfig(paths, env);
      const worker = loadWorkerConfig('qwen3-4b', file, paths, { natsUrl: supervisor.natsUrl }, env);
      assert.ok(!isConfigError(worker));
      assert.equal(worker.natsUrl, expected);
    }
  });

  test('a bad value from the environment names the variable; from the file, the file', () => {
    failsWith(
      () => parse('CTX_SIZE=2048\n', { LMSERVE_QWEN3_4B_CTX_SIZE: 'huge' }),
      'CTX_SIZE',
      'invalid CTX_SIZE="huge" in environment variable LMSERVE_QWEN3_4B_CTX_SIZE: must be an integer from 64 to 16777216',
    );
    failsWith(() => parse('CTX_SIZE=huge\n'), 'CTX_SIZE', `invalid CTX_SIZE="huge" in ${file}: must be an integer from 64 to 16777216`);
    failsWith(
      () => parse('', { LMSERVE_QWEN3_4B_GPU_LAYERS: 'most' }),
      'GPU_LAYERS',
      'invalid GPU_LAYERS="most" in environment variable LMSERVE_QWEN3_4B_GPU_LAYERS: must be auto or a number of layers (0 = CPU only)',
    );
    failsWith(
      () => parse('', { LMSERVE_QWEN3_4B_HTTP_ADDR: 'localhost' }),
      'HTTP_ADDR',
      'invalid HTTP_ADDR="localhost" in environment variable LMSERVE_QWEN3_4B_HTTP_ADDR: must be host:port',
    );
    failsWith(
      () => parse('', { LMSERVE_QWEN3_4B_NATS_URL: 'http://x' }),
      'NATS_URL',
      'invalid NATS_URL="http://x" in environment variable LMSERVE_QWEN3_4B_NATS_URL: must be a nats: or tls: or ws: or wss: URL',
    );
  });

  test('loadWorkerConfig reports a bad variable as the worker\'s config error', () => {
    mkdirSync(paths.envsDir, { recursive: true });
    writeFileSync(file, 'CTX_SIZE=512\n');
    const result = loadWorkerConfig('qwen3-4b', file, paths, NONE, { LMSERVE_QWEN3_4B_REPLICAS: '0' });
    assert.ok(isConfigError(result));
    assert.equal(result.error.field, 'REPLICAS');
    assert.match(result.error.message, /in environment variable LMSERVE_QWEN3_4B_REPLICAS: must be an integer from 1 to 64$/);
  });

  test('the environment defaults to process.env', () => {
    const name = 'LMSERVE_QWEN3_4B_MAX_QUEUE';
    const saved = process.env[name];
    process.env[name] = '7';
    try {
      assert.equal(parseWorkerConfig('qwen3-4b', file, 'MAX_QUEUE=9\n', paths).maxQueue, 7);
    } finally {
      if (saved === undefined) delete process.env[name];
      else process.env[name] = saved;
    }
  });
});
