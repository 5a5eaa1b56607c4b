/**
 * envs/worker.<name>.env parsing: defaults for every key, errors that name the key and the file.
 * Every call passes an empty environment, so variables of the shell running the tests change
 * nothing (precedence over the environment: test/supervisor/).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import { totalmem } from 'node:os';
import { defaultCacheRamMiB, usableMemoryBytes, loadSupervisorConfig, parseWorkerConfig as parseWithEnv, type ServicePaths } from '@lmserve/supervisor';

const dir = mkdtempSync(join(tmpdir(), 'lmserve-config-'));
const paths: ServicePaths = { root: '/srv/lmserve', envsDir: join(dir, 'envs'), dataDir: join(dir, 'data') };
const file = join(paths.envsDir, 'worker.demo.env');
const parseWorkerConfig = (name: string, path: string, text: string, p: ServicePaths) => parseWithEnv(name, path, text, p, { natsUrl: null }, {});

describe('worker configuration', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('every key has a default', () => {
    const config = parseWorkerConfig('demo', file, '', paths);
    assert.equal(config.modelName, 'demo');
    assert.equal(config.modelPath, '/srv/lmserve/data/models/demo/model.gguf');
    assert.deepEqual(config.httpAddr, { host: '127.0.0.1', port: 0 });
    assert.equal(config.subject, 'inference.request.demo');
    assert.equal(config.concurrency, 4);
    assert.equal(config.replicas, 1);
    assert.equal(config.threads, 0);
    assert.equal(config.contextSize, 4096);
    assert.equal(config.batchSize, 0);
    assert.equal(config.prefixSharing, true);
    assert.equal(config.swaFull, false);
    assert.equal(config.cacheRamMiB, defaultCacheRamMiB());
    assert.equal(config.gpuLayers, 'auto');
    assert.equal(config.jetstream, false);
    assert.equal(config.maxQueue, 64);
    assert.equal(config.apiKey, null);
    assert.equal(config.modelUrl, null);
    assert.equal(config.modelSha256, null);
    assert.equal(config.natsUrl, null);
    assert.equal(config.promptTemplate, null);
  });

  test('values are read, relative paths resolve against the repo root', () => {
    const text = [
      '# a comment',
      'MODEL_NAME=tiny',
      'MODEL_PATH=data/models/tiny/model.gguf',
      'HTTP_ADDR=0.0.0.0:5773',
      'WORKER_CONCURRENCY=8',
      'BATCH_SIZE=256',
      'SWA_FULL=on',
      'CACHE_RAM=512',
      'GPU_LAYERS=12',
      'JETSTREAM=on',
      'API_KEY="s3cret # not a comment"',
      'NATS_URL=nats://127.0.0.1:4222',
      'MODEL_URL=https://example.com/m.gguf',
    ].join('\n');
    const config = parseWorkerConfig('demo', file, text, paths);
    assert.equal(config.modelName, 'tiny');
    assert.equal(config.modelPath, '/srv/lmserve/data/models/tiny/model.gguf');
    assert.deepEqual(config.httpAddr, { host: '0.0.0.0', port: 5773 });
    assert.equal(config.concurrency, 8);
    assert.equal(config.batchSize, 256);
    assert.equal(config.swaFull, true);
    assert.equal(config.cacheRamMiB, 512);
    assert.equal(config.gpuLayers, 12);
    assert.equal(config.jetstream, true);
    assert.equal(config.apiKey, 's3cret # not a comment');
  });

  test('a bad value is an error naming the key and the file', () => {
    const cases: Array<[string, string]> = [
      ['WORKER_CONCURRENCY=abc', 'WORKER_CONCURRENCY'],
      ['WORKER_CONCURRENCY=0', 'WORKER_CONCURRENCY'],
      ['CTX_SIZE=1.5', 'CTX_SIZE'],
      ['BATCH_SIZE=-1', 'BATCH_SIZE'],
      ['SWA_FULL=yes', 'SWA_FULL'],
      ['CACHE_RAM=lots', 'CACHE_RAM'],
      ['CACHE_RAM=-1', 'CACHE_RAM'],
      ['MODEL_THREADS=-1', 'MODEL_THREADS'],
      ['MAX_QUEUE=lots', 'MAX_QUEUE'],
      ['GPU_LAYERS=some', 'GPU_LAYERS'],
      ['JETSTREAM=maybe', 'JETSTREAM'],
      ['HTTP_ADDR=localhost', 'HTTP_ADDR'],
      ['HTTP_ADDR=127.0.0.1:99999', 'HTTP_ADDR'],
      ['MODEL_URL=ftp://x/y', 'MODEL_URL'],
      ['MODEL_SHA256=abc', 'MODEL_SHA256'],
      ['NATS_URL=http://x', 'NATS_URL'],
      ['MODEL_NAME=has space', 'MODEL_NAME'],
    ];
    for (const [line, key] of cases) {
      assert.throws(
        () => parseWorkerConfig('demo', file, line, paths),
        (err: unknown) => err instanceof LmError && err.code === 'INVALID_REQUEST' && err.field === key && err.message.includes(file),
        line,
      );
    }
  });

  test('CACHE_RAM: auto is an eighth of the memory, at most 8192 MiB, shared by the workers; 0 turns the prompt cache off', () => {
    assert.equal(defaultCacheRamMiB(24 * 1024 ** 3), 3072);
    assert.equal(defaultCacheRamMiB(256 * 1024 ** 3), 8192);
    assert.equal(parseWorkerConfig('demo', file, 'CACHE_RAM=auto', paths).cacheRamMiB, defaultCacheRamMiB());
    assert.equal(parseWorkerConfig('demo', file, 'CACHE_RAM=0', paths).cacheRamMiB, 0);
    // One budget for the service: each of its workers gets an equal share.
    assert.equal(defaultCacheRamMiB(24 * 1024 ** 3, 3), 1024);
    assert.equal(defaultCacheRamMiB(256 * 1024 ** 3, 3), 2730);
    const shared = parseWithEnv('demo', file, 'CACHE_RAM=auto', paths, { natsUrl: null, workers: 4 }, {});
    assert.equal(shared.cacheRamMiB, defaultCacheRamMiB(usableMemoryBytes(), 4));
    assert.equal(parseWithEnv('demo', file, 'CACHE_RAM=512', paths, { natsUrl: null, workers: 4 }, {}).cacheRamMiB, 512);
    // A container's memory limit, when there is one below the machine's memory, is the base.
    assert.ok(usableMemoryBytes() > 0 && usableMemoryBytes() <= totalmem());
  });

  test('unknown keys are reported, not fatal', () => {
    assert.deepEqual(parseWorkerConfig('demo', file, 'WORKER_CONCURENCY=2', paths).unknownKeys, ['WORKER_CONCURENCY']);
  });

  test('prompt_template.json of the model is read', () => {
    mkdirSync(join(paths.dataDir, 'models', 'demo'), { recursive: true });
    writeFileSync(
      join(paths.dataDir, 'models', 'demo', 'prompt_template.json'),
      JSON.stringify({ user_prefix: '<u>', user_suffix: '</u>', model_prefix: '<m>' }),
    );
    const config = parseWorkerConfig('demo', file, '', paths);
    assert.deepEqual(config.promptTemplate, {
      name: null,
      systemPrefix: null,
      systemSuffix: null,
      userPrefix: '<u>',
      userSuffix: '</u>',
      modelPrefix: '<m>',
      modelSuffix: '',
    });
    writeFileSync(
      join(paths.dataDir, 'models', 'demo', 'prompt_template.json'),
      JSON.stringify({ name: 'tags', system_prefix: '<s>', system_suffix: '</s>', user_prefix: '<u>' }),
    );
    const withSystem = parseWorkerConfig('demo', file, '', paths).promptTemplate;
    assert.equal(withSystem?.name, 'tags');
    assert.equal(withSystem?.systemPrefix, '<s>');
    assert.equal(withSystem?.systemSuffix, '</s>');
    for (const bad of ['[1]', '{"system_prefix": 3}', 'not json']) {
      writeFileSync(join(paths.dataDir, 'models', 'demo', 'prompt_template.json'), bad);
      assert.throws(() => parseWorkerConfig('demo', file, '', paths), (err: unknown) => err instanceof LmError && err.code === 'INVALID_REQUEST');
    }
  });

  test('supervisor.env: defaults, and a generated admin token when none is set', () => {
    mkdirSync(paths.envsDir, { recursive: true });
    const config = loadSupervisorConfig(paths, {});
    assert.deepEqual(config.gatewayAddr, { host: '127.0.0.1', port: 5760 });
    assert.equal(config.adminTokenGenerated, true);
    assert.ok(config.adminToken.length >= 24);
    writeFileSync(join(paths.envsDir, 'supervisor.env'), 'GATEWAY_ADDR=0.0.0.0:5760\n');
    assert.throws(() => loadSupervisorConfig(paths, {}), (err: unknown) => err instanceof LmError && err.field === 'ADMIN_TOKEN');
  });
});
