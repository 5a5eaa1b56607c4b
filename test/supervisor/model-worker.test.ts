/**
 * ModelWorker in this process over real host processes, for the failures that are hard to
 * reach through a whole supervisor.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ServiceObserver, type ServiceEvent } from '@lmserve/core';
import { DIRECT_QUEUE_LIMIT, HostProcess, ModelWorker, directQueueLimit, parseWorkerConfig } from '@lmserve/supervisor';
import { createLogger } from '@lmserve/protocol';
import { modelPath, tempDir } from '../helpers.js';

describe('a model worker', () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const log = createLogger({ test: 'model-worker' }, { level: 'error', write: () => undefined });

  async function worker(createHost?: ConstructorParameters<typeof ModelWorker>[0]['createHost']) {
    const file = join(dir.path, 'worker.alpha.env');
    const text = `MODEL_PATH=${await modelPath('tiny')}\nCTX_SIZE=256\nWORKER_CONCURRENCY=1\nMODEL_THREADS=1\n`;
    writeFileSync(file, text);
    const paths = { root: dir.path, envsDir: dir.path, dataDir: dir.path };
    const observer = new ServiceObserver();
    const events: ServiceEvent[] = [];
    observer.onEvent((e) => events.push(e));
    const w = new ModelWorker({
      config: parseWorkerConfig('alpha', file, text, paths, { natsUrl: null }, {}),
      log,
      observer,
      timings: { restartBackoffMs: 100, restartBackoffMaxMs: 1000, shutdownGraceMs: 1000 },
      logLevel: 'error',
      ...(createHost ? { createHost } : {}),
    });
    return { w, events };
  }

  test('a host that cannot be spawned ends as a failed worker with the reason, and stop() returns at once', async () => {
    const { w, events } = await worker((o) => new HostProcess({ ...o, execPath: join(dir.path, 'no-such-node') }));
    w.start();
    for (let i = 0; i < 100 && w.state !== 'failed'; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(w.state, 'failed');
    assert.match(w.info().reason ?? '', /cannot start the model host: .*ENOENT/);
    assert.ok(events.some((e) => e.code === 'host.spawn_failed'));
    await w.stop(1000);
    assert.equal(w.state, 'stopped');
  });

  test('a factory that throws is a failed worker too, not an exception out of start()', async () => {
    const { w } = await worker(() => {
      throw new Error('no processes left');
    });
    w.start();
    // The fit check (an async read of the GGUF header) runs before the host is created.
    for (let i = 0; i < 100 && w.state !== 'failed'; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(w.state, 'failed');
    assert.match(w.info().reason ?? '', /no processes left/);
  });

  test('requests on a worker that is not ready are refused with MODEL_NOT_READY', async () => {
    const { w } = await worker();
    await assert.rejects(
      w.complete({ id: 'test-1', input: 'x', params: {}, raw: false }, () => undefined, new AbortController().signal),
      { code: 'MODEL_NOT_READY' },
    );
  });
});

describe('LMSERVE_DIRECT_QUEUE', () => {
  test('an integer 0 … 64, else the default (8)', () => {
    assert.equal(DIRECT_QUEUE_LIMIT, 8);
    assert.equal(directQueueLimit({}), 8);
    assert.equal(directQueueLimit({ LMSERVE_DIRECT_QUEUE: '' }), 8);
    assert.equal(directQueueLimit({ LMSERVE_DIRECT_QUEUE: '0' }), 0);
    assert.equal(directQueueLimit({ LMSERVE_DIRECT_QUEUE: '64' }), 64);
    for (const bad of ['65', '-1', '2.5', 'many']) assert.equal(directQueueLimit({ LMSERVE_DIRECT_QUEUE: bad }), 8, bad);
  });
});
