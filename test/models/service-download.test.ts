/**
 * Models that arrive by themselves, through real supervisor processes and a local HTTP server
 * (model-server.ts) serving the generated tiny model: a worker downloads on first use and shows
 * its progress in /readyz, /admin/workers, events and metrics, then serves; two workers sharing a
 * file download it once; a wrong checksum and a 404 fail the worker with the reason; a supervisor
 * killed mid-download resumes from the partial file when started again.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel, waitFor } from '../service/service-fixture.js';
import { ModelServer } from './model-server.js';

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

async function events(service: ServiceFixture, worker: string): Promise<Array<{ code: string; msg: string; data: Record<string, any> }>> {
  const { body } = await service.admin('GET', `/admin/events?worker=${worker}&limit=1000`);
  return (body.events as Array<{ event: { code: string; msg: string; data: Record<string, any> } } | { code: string; msg: string; data: Record<string, any> }>).map((e) =>
    'event' in e ? e.event : e,
  );
}

describe('download on first use', () => {
  const server = new ModelServer(tinyModel);
  const missing = new ModelServer(tinyModel);
  const service = new ServiceFixture();
  let models: string;

  before(async () => {
    await Promise.all([server.start(), missing.start()]);
    missing.setMode({ status: 404 });
    server.setMode({ rate: 3 << 20 });
    models = mkdtempSync(join(tmpdir(), 'lmserve-models-'));
    await service.configure({
      solo: { model: join(models, 'solo', 'model.gguf'), env: { MODEL_URL: server.url('solo.gguf'), MODEL_SHA256: server.sha256 } },
      twin1: { model: join(models, 'shared', 'model.gguf'), env: { MODEL_URL: server.url('shared.gguf') } },
      twin2: { model: join(models, 'shared', 'model.gguf'), env: { MODEL_URL: server.url('shared.gguf') } },
      liar: { model: join(models, 'liar', 'model.gguf'), env: { MODEL_URL: server.url('liar.gguf'), MODEL_SHA256: 'ab'.repeat(32) } },
      gone: { model: join(models, 'gone', 'model.gguf'), env: { MODEL_URL: missing.url('gone.gguf') } },
    });
    await service.start(['--all']);
  });

  after(async () => {
    await service.cleanup();
    await Promise.all([server.close(), missing.close()]);
    rmSync(models, { recursive: true, force: true });
  });

  test('while it downloads, /readyz is 503 with the progress and a Retry-After; /admin/workers and /metrics show it', async () => {
    const info = await waitFor('solo to report download progress', async () => {
      const w = await service.worker('solo');
      return w.state === 'downloading' && (w.download?.bytes ?? 0) > 0 ? w : undefined;
    }, 60_000);
    assert.equal(info.download?.url, server.url('solo.gguf'));
    assert.equal(info.download?.path, join(models, 'solo', 'model.gguf'));
    const res = await fetch(service.url('solo', '/readyz'));
    const body = (await res.json()) as Record<string, any>;
    assert.equal(res.status, 503);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    assert.equal(body.state, 'downloading');
    assert.match(body.reason, /^downloading http:\/\/127\.0\.0\.1:\d+\/solo\.gguf: [\d.]+ MiB of [\d.]+ MiB \([\d.]+%\), [\d.]+ MiB\/s/);
    assert.equal(body.download.total_bytes, server.file.length);
    assert.ok(body.download.bytes > 0 && body.download.bytes <= server.file.length);
    assert.equal(typeof body.download.bytes_per_second, 'number');
    const metrics = await (await fetch(`http://127.0.0.1:${service.gatewayPort}/metrics`, { headers: { authorization: `Bearer ${service.adminToken}` } })).text();
    assert.match(metrics, /^lmserve_model_download_total_bytes\{model="solo",worker="solo"\} 17406176$/m);
    assert.match(metrics, /^lmserve_model_download_bytes\{model="solo",worker="solo"\} \d+$/m);
    assert.match(metrics, /^lmserve_worker_state\{model="solo",worker="solo",state="downloading"\} 1$/m);
    assert.equal(existsSync(join(models, 'solo', 'model.gguf')), false, 'never a half file at MODEL_PATH');
  });

  test('then it verifies the checksum, loads the model and serves', async () => {
    await service.waitReady('solo', 120_000);
    const path = join(models, 'solo', 'model.gguf');
    assert.equal(sha(path), server.sha256);
    assert.equal(existsSync(`${path}.part`), false);
    const answer = await service.complete('solo', { input: 'Hello', params: { max_tokens: 2 } });
    assert.equal(answer.status, 200);
    const codes = (await events(service, 'solo')).map((e) => e.code);
    const order = ['model.download.started', 'model.download.progress', 'model.download.completed', 'host.spawned', 'model.loaded', 'server.ready'];
    let at = -1;
    for (const code of order) {
      const next = codes.indexOf(code, at + 1);
      assert.ok(next > at, `${code} after the previous step in ${codes.join(', ')}`);
      at = next;
    }
    const completed = (await events(service, 'solo')).find((e) => e.code === 'model.download.completed');
    assert.equal(completed?.data.sha256, server.sha256);
    assert.equal(completed?.data.bytes, server.file.length);
  });

  test('two workers with the same MODEL_PATH download it once and both serve', async () => {
    await Promise.all([service.waitReady('twin1', 120_000), service.waitReady('twin2', 120_000)]);
    assert.equal(server.requests.filter((r) => r.path === '/shared.gguf').length, 1, 'one request for the shared file');
    const twin2 = (await events(service, 'twin2')).find((e) => e.code === 'model.download.started');
    const twin1 = (await events(service, 'twin1')).find((e) => e.code === 'model.download.started');
    assert.equal([twin1?.data.shared, twin2?.data.shared].filter(Boolean).length, 1, 'one of them joined the other');
  });

  test('a wrong checksum fails the worker; /readyz names both hashes; the temporary file is gone', async () => {
    const info = await service.waitState('liar', 'failed', 120_000);
    const res = await fetch(service.url('liar', '/readyz'));
    const body = (await res.json()) as Record<string, any>;
    assert.equal(res.status, 503);
    assert.equal(body.state, 'failed');
    assert.match(body.reason, /checksum/);
    assert.ok(body.reason.includes('ab'.repeat(32)), 'the expected hash');
    assert.ok(body.reason.includes(server.sha256), 'the actual hash');
    assert.equal(info.download?.error, body.reason);
    const path = join(models, 'liar', 'model.gguf');
    assert.equal(existsSync(path), false);
    assert.equal(existsSync(`${path}.part`), false);
    const failed = (await events(service, 'liar')).find((e) => e.code === 'model.download.failed');
    assert.equal(failed?.data.failure, 'checksum');
    assert.equal(failed?.data.actual, server.sha256);
  });

  test('a 404 fails the worker with the status in its reason', async () => {
    const info = await service.waitState('gone', 'failed', 60_000);
    assert.match(info.reason ?? '', /model download failed: .*gone\.gguf answered HTTP 404/);
    assert.equal(missing.requests.length, 1, 'a 404 is not retried');
  });
});

describe('a supervisor killed mid-download', () => {
  const server = new ModelServer(tinyModel);
  const first = new ServiceFixture();
  const second = new ServiceFixture();
  let models: string;

  before(async () => {
    await server.start();
    server.setMode({ rate: 2 << 20 });
    models = mkdtempSync(join(tmpdir(), 'lmserve-models-'));
  });

  after(async () => {
    await first.cleanup();
    await second.cleanup();
    await server.close();
    rmSync(models, { recursive: true, force: true });
  });

  test('the next supervisor resumes from the partial file with a Range request', async () => {
    const path = join(models, 'm', 'model.gguf');
    const worker = { model: path, env: { MODEL_URL: server.url(), MODEL_SHA256: server.sha256 } };
    await first.configure({ m: worker });
    await first.start(['--all']);
    const before = await waitFor('3 MiB downloaded', async () => {
      const w = await first.worker('m');
      return (w.download?.bytes ?? 0) > 3 << 20 ? w.download?.bytes : undefined;
    }, 60_000);
    await first.stop({ signal: 'SIGKILL' });
    assert.ok(existsSync(`${path}.part`), 'the partial file stays');
    assert.equal(existsSync(path), false);
    server.setMode({});
    await second.configure({ m: worker });
    await second.start(['--all']);
    await second.waitReady('m', 120_000);
    assert.equal(sha(path), server.sha256);
    const ranged = server.ranged();
    assert.equal(ranged.length, 1, 'one resumed request');
    const from = Number(/^bytes=(\d+)-$/.exec(ranged[0]?.range ?? '')?.[1]);
    assert.ok(from >= (before ?? 0), `resumed from byte ${from}, at least the ${before} bytes seen before the kill`);
    assert.equal(server.requests.length, 2, 'the first request and the resume, nothing downloaded twice');
  });
});

describe('a worker stopped during its download', () => {
  const server = new ModelServer(tinyModel);
  const service = new ServiceFixture();
  let models: string;

  before(async () => {
    await server.start();
    server.setMode({ rate: 2 << 20 });
    models = mkdtempSync(join(tmpdir(), 'lmserve-models-'));
    await service.configure({ m: { model: join(models, 'm', 'model.gguf'), env: { MODEL_URL: server.url(), MODEL_SHA256: server.sha256 } } });
    await service.start(['--all']);
  });

  after(async () => {
    await service.cleanup();
    await server.close();
    rmSync(models, { recursive: true, force: true });
  });

  test('keeps its partial file; started again, it resumes from there and serves', async () => {
    const path = join(models, 'm', 'model.gguf');
    await waitFor('2 MiB downloaded', async () => ((await service.worker('m')).download?.bytes ?? 0) > 2 << 20 || undefined, 60_000);
    const stopped = await service.admin('POST', '/admin/workers/m/stop');
    assert.equal(stopped.status, 200);
    assert.equal(stopped.body.worker.state, 'stopped');
    await waitFor('the download thread to let go of the lock', async () => (!existsSync(`${path}.part.lock`) ? true : undefined), 10_000);
    const partial = statSync(`${path}.part`).size;
    assert.ok(partial > 2 << 20);
    server.setMode({});
    assert.equal((await service.admin('POST', '/admin/workers/m/start')).status, 200);
    await service.waitReady('m', 120_000);
    assert.equal(sha(path), server.sha256);
    const from = Number(/^bytes=(\d+)-$/.exec(server.ranged()[0]?.range ?? '')?.[1]);
    assert.ok(from >= partial, `resumed from byte ${from} (the partial file had ${partial})`);
  });
});
