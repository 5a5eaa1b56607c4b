/**
 * The CLI without a running supervisor: `supervisor pull NAME` downloads a worker's model (exit
 * 0; 1 with the reason on a 404 or a wrong checksum), and `supervisor list-workers` reads envs/
 * (port, subject, model path, size, present / missing / downloading); with a supervisor running
 * it adds the states.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel } from '../service/service-fixture.js';
import { ModelServer } from './model-server.js';

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

interface Listing {
  name: string;
  state: string | null;
  port: number | null;
  subject: string | null;
  model_path: string | null;
  file: string | null;
  size_bytes: number | null;
  total_bytes: number | null;
}

describe('pull and list-workers', () => {
  const server = new ModelServer(tinyModel);
  const service = new ServiceFixture();
  const path = (name: string) => join(service.dir, 'models', name, 'model.gguf');
  const failing = (err: { code?: number; stdout: string; stderr: string }) => err;

  before(async () => {
    await server.start();
    await service.configure({
      fetched: { model: path('fetched'), port: 45_123, env: { MODEL_URL: server.url('fetched.gguf'), MODEL_SHA256: server.sha256 } },
      wrongsum: { model: path('wrongsum'), env: { MODEL_URL: server.url('w.gguf'), MODEL_SHA256: 'cd'.repeat(32) } },
      gone: { model: path('gone'), env: { MODEL_URL: server.url('gone.gguf') } },
      nourl: { model: path('nourl') },
      halfway: { model: path('halfway'), env: { MODEL_URL: server.url('halfway.gguf') } },
      local: { model: tinyModel },
    });
  });

  after(async () => {
    await service.cleanup();
    await server.close();
  });

  test('pull downloads the model without a supervisor and exits 0; a second pull finds it present', async () => {
    const { stdout } = await service.cli(['pull', 'fetched']);
    assert.match(stdout, /^fetched: downloading http:/m);
    assert.match(stdout, /^ +\d+\.\d% +[\d.]+ MiB \/ [\d.]+ MiB/m, 'plain progress lines when not on a terminal');
    assert.match(stdout, /^fetched: done, 16\.6 MiB in [\d.]+ s \(checksum verified\)$/m);
    assert.equal(sha(path('fetched')), server.sha256);
    assert.equal(existsSync(`${path('fetched')}.part`), false);
    const again = await service.cli(['pull', 'fetched']);
    assert.match(again.stdout, /^fetched: .* is present \(16\.6 MiB\)$/m);
    assert.equal(server.requests.filter((r) => r.path === '/fetched.gguf').length, 1);
  });

  test('pull exits 1 with the reason on a wrong checksum, a 404 and a worker without MODEL_URL', async () => {
    const wrong = failing(await service.cli(['pull', 'wrongsum']).then(() => assert.fail('exit 0'), (err) => err));
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /wrongsum: download failed: checksum mismatch: MODEL_SHA256 is (cd){32} but the downloaded file's SHA-256 is [0-9a-f]{64}/);
    assert.equal(existsSync(path('wrongsum')), false);
    server.setMode({ status: 404 });
    try {
      const gone = failing(await service.cli(['pull', 'gone']).then(() => assert.fail('exit 0'), (err) => err));
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /gone: download failed: .*gone\.gguf answered HTTP 404/);
    } finally {
      server.setMode({});
    }
    const nourl = failing(await service.cli(['pull', 'nourl']).then(() => assert.fail('exit 0'), (err) => err));
    assert.equal(nourl.code, 1);
    assert.match(nourl.stderr, /MODEL_URL is not set/);
    const unknown = failing(await service.cli(['pull', 'nobody']).then(() => assert.fail('exit 0'), (err) => err));
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /NOT_FOUND: no worker named "nobody"/);
  });

  test('list-workers works without a supervisor: port, subject, path, size, present / missing / downloading', async () => {
    // A partial download, as an interrupted pull leaves it.
    mkdirSync(join(service.dir, 'models', 'halfway'), { recursive: true });
    writeFileSync(`${path('halfway')}.part`, server.file.subarray(0, 1 << 20));
    writeFileSync(`${path('halfway')}.part.json`, JSON.stringify({ url: server.url('halfway.gguf'), etag: null, lastModified: null, totalBytes: server.file.length }));
    const { stdout, stderr } = await service.cli(['list-workers', '--json']);
    assert.equal(stderr, '');
    const list = JSON.parse(stdout) as Listing[];
    const by = Object.fromEntries(list.map((w) => [w.name, w]));
    assert.deepEqual(list.map((w) => w.name), ['fetched', 'gone', 'halfway', 'local', 'nourl', 'wrongsum']);
    assert.ok(list.every((w) => w.state === null), 'no supervisor: no states');
    assert.deepEqual(
      { port: by.fetched?.port, subject: by.fetched?.subject, path: by.fetched?.model_path, file: by.fetched?.file, size: by.fetched?.size_bytes },
      { port: 45_123, subject: 'inference.request.fetched', path: path('fetched'), file: 'present', size: server.file.length },
    );
    assert.equal(by.gone?.file, 'missing');
    assert.equal(by.gone?.size_bytes, null);
    assert.deepEqual([by.halfway?.file, by.halfway?.size_bytes, by.halfway?.total_bytes], ['downloading', 1 << 20, server.file.length]);
    const table = await service.cli(['list-workers']);
    assert.match(table.stderr, /no supervisor answers/);
    assert.match(table.stdout, /^NAME +STATE +PID +PORT +FILE +SIZE +SUBJECT +MODEL_PATH/m);
    assert.match(table.stdout, /^fetched +- +- +45123 +present +16\.6 MiB +inference\.request\.fetched /m);
    assert.match(table.stdout, /^halfway +- +- +\d+ +downloading 6% +1\.0 MiB /m);
    assert.match(table.stdout, /^nourl +- +- +\d+ +missing +- /m);
  });

  test('with a supervisor running, list-workers adds each worker state', async () => {
    await service.start(['local']);
    await service.waitReady('local', 60_000);
    const list = JSON.parse((await service.cli(['list-workers', '--json'])).stdout) as Listing[];
    const by = Object.fromEntries(list.map((w) => [w.name, w]));
    assert.equal(by.local?.state, 'ready');
    assert.equal(by.fetched?.state, 'stopped');
    assert.equal(by.local?.file, 'present');
    const table = await service.cli(['list-workers']);
    assert.match(table.stdout, /^local +ready +\d+ +\d+ +present /m);
  });
});
