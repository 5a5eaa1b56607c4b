import assert from 'node:assert/strict';
import { test, describe } from 'node:test';
import { Worker } from 'node:worker_threads';
import { loadModel } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

const workerUrl = new URL('../fixtures/engine-worker.mjs', import.meta.url);

type WorkerMessage = { type: 'generating' } | { type: 'done'; text: string; tokensOut: number };

function nextMessage(worker: Worker, type: WorkerMessage['type']): Promise<WorkerMessage> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: WorkerMessage) => {
      if (m.type === type) {
        worker.off('message', onMessage);
        resolve(m);
      }
    };
    worker.on('message', onMessage);
    worker.once('error', reject);
  });
}

describe('the addon in worker threads', () => {
  test('threads of one process generate at the same time and match the main thread', async () => {
    const path = await modelPath('tiny');
    const model = await loadModel(path);
    const expected = (await model.generate('threads', { maxTokens: 12, seed: 1, ignoreEos: true }).result).text;
    model.dispose();
    const workers = [0, 1, 2].map(
      () => new Worker(workerUrl, { execArgv: [], workerData: { modelPath: path, prompt: 'threads', maxTokens: 12, signalAfter: 1, dispose: true } }),
    );
    const exited = workers.map((w) => new Promise((r) => w.once('exit', r)));
    const results = await Promise.all(workers.map((w) => nextMessage(w, 'done')));
    await Promise.all(exited);
    for (const r of results) {
      assert.equal(r.type, 'done');
      if (r.type === 'done') assert.equal(r.text, expected);
    }
  });

  test('terminating a thread mid-generation frees its engine and the process lives on', async () => {
    const path = await modelPath('tiny');
    for (let i = 0; i < 4; i++) {
      const worker = new Worker(workerUrl, {
        execArgv: [],
        workerData: { modelPath: path, prompt: 'endless', maxTokens: 1_000_000, signalAfter: 10, dispose: false },
      });
      await nextMessage(worker, 'generating');
      const code = await worker.terminate();
      assert.equal(code, 1);
    }
    const model = await loadModel(path);
    const result = await model.generate('after', { maxTokens: 4, ignoreEos: true }).result;
    assert.equal(result.usage.tokensOut, 4);
    model.dispose();
  });

  test('terminating threads while they load the addon or a model leaves the process alive', async () => {
    // tiny-bpe takes a few hundred ms to load; stop threads at several points of that.
    const path = await modelPath('tiny-bpe');
    for (const delayMs of [0, 15, 40, 80, 150, 300]) {
      const worker = new Worker(workerUrl, {
        execArgv: [],
        workerData: { modelPath: path, prompt: 'x', maxTokens: 4, signalAfter: 1, dispose: true },
      });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      await worker.terminate();
    }
    const model = await loadModel(path);
    const result = await model.generate('after', { maxTokens: 4, ignoreEos: true }).result;
    assert.equal(result.usage.tokensOut, 4);
    model.dispose();
  });
});
