/**
 * downloadModel against a real local HTTP server (model-server.ts) serving the generated tiny
 * model: a whole download, a dropped connection resumed with Range, a partial file from an
 * earlier run resumed, a stall retried, a wrong checksum, a 404 and an HTML page refused, and the
 * worker thread that keeps the supervisor's event loop free.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { DownloadError, downloadInThread, downloadModel, partPath, type DownloadProgress } from '@lmserve/supervisor';
import { tinyModel } from '../service/service-fixture.js';
import { ModelServer } from './model-server.js';

describe('model download', () => {
  const server = new ModelServer(tinyModel);
  let dir: string;
  let dest: string;

  before(() => server.start());
  after(() => server.close());
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lmserve-download-'));
    dest = join(dir, 'sub', 'model.gguf');
    server.setMode({});
    server.requests.length = 0;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

  test('downloads the whole file, checks its SHA-256 and renames it into place', async () => {
    const progress: DownloadProgress[] = [];
    const result = await downloadModel({ url: server.url(), dest, sha256: server.sha256 }, { onProgress: (p) => progress.push(p) });
    assert.equal(result.bytes, server.file.length);
    assert.equal(result.sha256, server.sha256);
    assert.equal(result.resumedFrom, 0);
    assert.equal(sha(dest), server.sha256);
    assert.equal(existsSync(partPath(dest)), false);
    assert.equal(existsSync(`${partPath(dest)}.json`), false);
    assert.equal(existsSync(`${partPath(dest)}.lock`), false);
    assert.equal(progress.at(-1)?.bytes, server.file.length);
    assert.equal(progress.at(-1)?.totalBytes, server.file.length);
  });

  test('a dropped connection is resumed with a Range request from where it stopped', async () => {
    server.setMode({ dropAt: 4 << 20, times: 2 });
    const retries: string[] = [];
    const result = await downloadModel(
      { url: server.url(), dest, sha256: server.sha256, backoffMs: 50 },
      { onRetry: (r) => retries.push(r.code) },
    );
    assert.equal(sha(dest), server.sha256);
    assert.equal(result.attempts, 3);
    assert.deepEqual(retries, ['network', 'network']);
    const ranged = server.ranged();
    assert.equal(ranged.length, 2);
    assert.match(ranged[0]?.range ?? '', /^bytes=\d+-$/);
    assert.ok(Number(/\d+/.exec(ranged[0]?.range ?? '')?.[0]) > 0, 'resumed past byte 0');
    assert.equal(ranged[0]?.ifRange, server.etag, 'the resume is conditional on the same file');
  });

  test('a partial file left by an earlier run is re-hashed and resumed (not downloaded again)', async () => {
    server.setMode({ rate: 4 << 20 });
    const stop = new AbortController();
    const first = downloadModel({ url: server.url(), dest, sha256: server.sha256 }, {
      signal: stop.signal,
      onProgress: (p) => {
        if (p.bytes > 3 << 20) stop.abort();
      },
    });
    await assert.rejects(first, (err: DownloadError) => err.code === 'aborted');
    const partial = statSync(partPath(dest)).size;
    assert.ok(partial > 0 && partial < server.file.length, `a partial file of ${partial} bytes`);
    assert.equal(existsSync(dest), false, 'never a half file at the destination');
    server.setMode({});
    server.requests.length = 0;
    const result = await downloadModel({ url: server.url(), dest, sha256: server.sha256 });
    assert.equal(result.resumedFrom, partial);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0]?.range, `bytes=${partial}-`);
    assert.equal(sha(dest), server.sha256);
  });

  test('a stalled transfer is abandoned after the stall timeout and resumed', async () => {
    server.setMode({ stallAt: 2 << 20 });
    const retries: string[] = [];
    await downloadModel({ url: server.url(), dest, sha256: server.sha256, stallTimeoutMs: 500, backoffMs: 50 }, { onRetry: (r) => retries.push(r.code) });
    assert.deepEqual(retries, ['stalled']);
    assert.equal(server.ranged().length, 1);
    assert.equal(sha(dest), server.sha256);
  });

  test('a wrong checksum deletes the temporary file and names both hashes', async () => {
    const wrong = '0'.repeat(64);
    await assert.rejects(downloadModel({ url: server.url(), dest, sha256: wrong }), (err: DownloadError) => {
      assert.equal(err.code, 'checksum');
      assert.equal(err.permanent, true);
      assert.ok(err.message.includes(wrong) && err.message.includes(server.sha256), err.message);
      return true;
    });
    assert.equal(existsSync(dest), false);
    assert.equal(existsSync(partPath(dest)), false);
  });

  test('a 404 fails at once with the status', async () => {
    server.setMode({ status: 404 });
    await assert.rejects(downloadModel({ url: server.url(), dest, sha256: null, backoffMs: 10 }), (err: DownloadError) => {
      assert.equal(err.code, 'http-status');
      assert.equal(err.details.status, 404);
      assert.match(err.message, /HTTP 404/);
      return true;
    });
    assert.equal(server.requests.length, 1, 'not retried');
    assert.equal(existsSync(dest), false);
  });

  test('an HTML page instead of a model fails with a reason', async () => {
    server.setMode({ html: true });
    await assert.rejects(downloadModel({ url: server.url(), dest, sha256: null }), (err: DownloadError) => err.code === 'not-gguf' && /HTML/.test(err.message));
    assert.equal(existsSync(dest), false);
  });

  test('a body that does not start with the GGUF magic is refused', async () => {
    const other = new ModelServer(tinyModel);
    (other as { file: Buffer }).file = Buffer.concat([Buffer.from('PK\u0003\u0004'), server.file.subarray(4)]);
    await other.start();
    try {
      await assert.rejects(downloadModel({ url: other.url(), dest, sha256: null }), (err: DownloadError) => err.code === 'not-gguf' && /GGUF/.test(err.message));
      assert.equal(existsSync(dest), false);
      assert.equal(existsSync(partPath(dest)), false);
    } finally {
      await other.close();
    }
  });

  test('a 5xx is retried with backoff and the failures are counted', async () => {
    server.setMode({ status: 500 });
    await assert.rejects(downloadModel({ url: server.url(), dest, sha256: null, retries: 2, backoffMs: 10 }), (err: DownloadError) => {
      assert.equal(err.code, 'http-status');
      assert.match(err.message, /gave up after 3 failed attempts/);
      return true;
    });
    assert.equal(server.requests.length, 3);
  });

  test('in a worker thread, the event loop keeps turning while the file downloads', async () => {
    server.setMode({ rate: 8 << 20 });
    let turns = 0;
    let running = true;
    const spin = async () => {
      while (running) {
        await new Promise((resolve) => setImmediate(resolve));
        turns++;
      }
    };
    const spinning = spin();
    const result = await downloadInThread({ url: server.url(), dest, sha256: server.sha256 }, { onProgress: () => undefined, onRetry: () => undefined, onWaiting: () => undefined });
    running = false;
    await spinning;
    assert.equal(result.sha256, server.sha256);
    assert.ok(turns > 100, `the event loop turned ${turns} times during the download`);
  });

  test('a second process waits on the lock of the first and finds the file done', async () => {
    // A lock held by a live process on this host (our parent, for the test): the download waits.
    const lock = `${partPath(dest)}.lock`;
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    const { hostname } = await import('node:os');
    writeFileSync(lock, JSON.stringify({ pid: process.ppid, host: hostname() }));
    let waited = 0;
    const pending = downloadModel({ url: server.url(), dest, sha256: server.sha256 }, { onWaiting: () => waited++ });
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.equal(server.requests.length, 0, 'no request while another process holds the lock');
    writeFileSync(dest, server.file);
    rmSync(lock);
    const result = await pending;
    assert.equal(result.byOtherProcess, true);
    assert.equal(waited, 1);
    assert.equal(server.requests.length, 0);
  });
});
