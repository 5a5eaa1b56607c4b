/**
 * A store whose file cannot be opened or written keeps running: records never throw, losses are
 * counted, onError is called once per episode, and it recovers when the file can be written
 * again. Files that are not ours, or newer than this code, are refused and left untouched.
 *
 * The tests run as root, and root ignores permission bits (CAP_DAC_OVERRIDE): chmod 0444 on the
 * file and 0555 on its directory stop nothing. What does stop root, and is used here:
 *  - a directory that cannot exist because a path component is a regular file (ENOTDIR), both at
 *    open and by replacing the directory of an open store: needs no privilege;
 *  - a full file system: a 512 KiB tmpfs, grown afterwards with `mount -o remount,size=`;
 *  - a read-only file system: a read-only bind mount of the store's directory.
 * The last two need CAP_SYS_ADMIN (root in this sandbox and CI has it) and are skipped where
 * `mount` is refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { AuditStore, SCHEMA_VERSION, type AuditStoreOptions } from '@lmserve/store';
import { LmError } from '@lmserve/protocol';
import { tempDir } from '../helpers.js';
import { eventQuery, fileHash, requestEnd, requestQuery, serviceEvent, waitFor } from './fixtures/records.js';

const dir = tempDir('lmserve-store-degrade-');
const mounts: string[] = [];
after(() => {
  for (const point of mounts.reverse()) {
    try {
      execFileSync('umount', ['-l', point], { stdio: 'ignore' });
    } catch {
      // already unmounted by the test
    }
  }
  dir.cleanup();
});
let seq = 0;

function fresh(name: string): string {
  const path = join(dir.path, `${++seq}-${name}`);
  mkdirSync(path, { recursive: true });
  return path;
}

function openStore(path: string, options: Partial<AuditStoreOptions> = {}): { store: AuditStore; errors: LmError[] } {
  const errors: LmError[] = [];
  const store = AuditStore.open({ path, model: 'demo-model', logBodies: true, retryMs: 200, onError: (e) => errors.push(e), ...options });
  return { store, errors };
}

function count(path: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT count(*) FROM requests').pluck().get() as number;
  } finally {
    db.close();
  }
}

function integrity(path: string): string {
  const db = new Database(path, { readonly: true });
  try {
    return db.pragma('integrity_check', { simple: true }) as string;
  } finally {
    db.close();
  }
}

function mount(args: string[], point: string): boolean {
  try {
    execFileSync('mount', [...args, point], { stdio: 'pipe' });
    mounts.push(point);
    return true;
  } catch {
    return false;
  }
}

const canMount = (() => {
  const probe = join(dir.path, 'mount-probe');
  mkdirSync(probe);
  if (!mount(['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs'], probe)) return false;
  execFileSync('umount', [probe]);
  mounts.pop();
  return true;
})();

describe('a file that cannot be opened', () => {
  test('a directory that cannot be created: not recording, never throws, onError once, recovers when fixed', async () => {
    const base = fresh('blocked');
    const blocker = join(base, 'data');
    writeFileSync(blocker, 'a regular file where the directory should be');
    const path = join(blocker, 'audit', 'demo.db');
    const { store, errors } = openStore(path);
    await waitFor('onError', () => errors.length === 1);
    const error = errors[0] as LmError;
    assert.ok(error instanceof LmError);
    assert.equal(error.code, 'INTERNAL');
    assert.ok(error.message.includes(path), error.message);
    assert.match(error.message, /ENOTDIR|not a directory/i);
    assert.match(error.message, /not recording/);

    for (let i = 0; i < 5; i++) assert.doesNotThrow(() => store.recordRequest(requestEnd()));
    assert.doesNotThrow(() => store.recordEvent(serviceEvent()));
    await store.flush();
    let stats = store.stats();
    assert.equal(stats.recording, false);
    assert.equal(stats.dropped, 6);
    assert.equal(stats.written, 0);
    assert.equal(stats.pending, 0);
    assert.ok(stats.writeErrors >= 1);
    assert.ok(stats.lastError?.includes(path));
    await assert.rejects(store.requests(requestQuery()), (err: unknown) => err instanceof LmError && err.code === 'INTERNAL');
    await assert.rejects(store.events(eventQuery()), (err: unknown) => err instanceof LmError);

    // Retries keep failing (each counted) within one episode: still one onError.
    await waitFor('two more attempts', () => store.stats().writeErrors >= 3);
    assert.equal(errors.length, 1);

    rmSync(blocker);
    await waitFor('recording again', () => store.stats().recording, 5000);
    store.recordRequest(requestEnd({ reqId: 'after-fix' }));
    await store.flush();
    assert.deepEqual((await store.requests(requestQuery())).map((r) => r.req_id), ['after-fix']);
    stats = store.stats();
    assert.equal(stats.written, 1);
    assert.equal(stats.dropped, 6);
    assert.equal(errors.length, 1);
    await store.close();
    assert.equal(count(path), 1);
  });

  test('a corrupt file is refused and left untouched', async () => {
    const path = join(fresh('corrupt'), 'demo.db');
    writeFileSync(path, Buffer.alloc(8192, 0x5a));
    const before = fileHash(path);
    const { store, errors } = openStore(path);
    await waitFor('onError', () => errors.length === 1);
    assert.ok(errors[0]?.message.includes(path));
    assert.match(errors[0]?.message ?? '', /not a database/i);
    store.recordRequest(requestEnd());
    await store.close();
    assert.equal(store.stats().dropped, 1);
    assert.equal(fileHash(path), before);
  });

  test('a newer schema version is refused with the file, its version and ours, and never altered', async () => {
    const base = fresh('newer');
    const path = join(base, 'demo.db');
    const db = new Database(path);
    db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (7);
      CREATE TABLE requests (id INTEGER PRIMARY KEY, req_id TEXT, future_column TEXT);
      INSERT INTO requests (req_id, future_column) VALUES ('kept', 'x');`);
    db.close();
    const before = fileHash(path);
    const { store, errors } = openStore(path);
    await waitFor('onError', () => errors.length === 1);
    const message = errors[0]?.message ?? '';
    assert.ok(message.includes(path), message);
    assert.ok(message.includes(`schema version 7, newer than this lmserve's (${SCHEMA_VERSION})`), message);
    assert.equal(store.stats().recording, false);
    assert.doesNotThrow(() => store.recordRequest(requestEnd()));
    await store.flush();
    assert.equal(store.stats().dropped, 1);
    await waitFor('a retry', () => store.stats().writeErrors >= 2);
    await store.close();
    assert.equal(fileHash(path), before);
    assert.deepEqual(readdirSync(base), ['demo.db'], 'no -wal or -shm left beside it');
    assert.equal(errors.length, 1);
  });

  test('a database with other tables is not ours; an empty one is used', async () => {
    const foreign = join(fresh('foreign'), 'app.db');
    const db = new Database(foreign);
    db.exec("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');");
    db.close();
    const before = fileHash(foreign);
    const refused = openStore(foreign);
    await waitFor('onError', () => refused.errors.length === 1);
    assert.match(refused.errors[0]?.message ?? '', /is not an lmserve audit file \(it has the tables users/);
    await refused.store.close();
    assert.equal(fileHash(foreign), before);

    const empty = join(fresh('empty'), 'demo.db');
    writeFileSync(empty, '');
    const used = openStore(empty);
    used.store.recordRequest(requestEnd());
    await used.store.close();
    assert.equal(used.errors.length, 0);
    assert.equal(count(empty), 1);
  });

  test('a file of the original service (its two tables, no schema_version) is adopted with its rows', async () => {
    const path = join(fresh('original'), 'demo.db');
    const db = new Database(path);
    db.exec(`CREATE TABLE requests (id INTEGER PRIMARY KEY, req_id TEXT, ts REAL, model TEXT, transport TEXT, input_len INTEGER,
        tokens_in INTEGER, tokens_out INTEGER, ttft_ms REAL, dur_ms REAL, queue_ms REAL, status TEXT, error_code TEXT, error TEXT,
        params TEXT, input TEXT, output TEXT);
      CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL, level TEXT, code TEXT, msg TEXT, data TEXT);
      INSERT INTO requests (req_id, ts, status) VALUES ('old-service', ${Date.now() / 1000}, 'completed');`);
    db.close();
    const { store, errors } = openStore(path);
    store.recordRequest(requestEnd({ reqId: 'ours' }));
    assert.deepEqual((await store.requests(requestQuery())).map((r) => r.req_id), ['ours', 'old-service']);
    await store.close();
    assert.equal(errors.length, 0);
  });
});

describe('a file that cannot be written any more', () => {
  test('its directory replaced under an open store: rows dropped and counted, onError once, then recovery', async () => {
    const base = fresh('replaced');
    const sub = join(base, 'audit');
    const path = join(sub, 'demo.db');
    const { store, errors } = openStore(path);
    store.recordRequest(requestEnd({ reqId: 'before' }));
    await store.flush();
    assert.equal(store.stats().written, 1);

    rmSync(sub, { recursive: true });
    writeFileSync(sub, 'no longer a directory');
    for (let i = 0; i < 3; i++) assert.doesNotThrow(() => store.recordRequest(requestEnd({ reqId: `lost${i}` })));
    await store.flush();
    await waitFor('onError', () => errors.length === 1);
    assert.match(errors[0]?.message ?? '', /not recording/);
    let stats = store.stats();
    assert.equal(stats.recording, false);
    assert.equal(stats.dropped, 3);
    assert.ok(stats.writeErrors >= 1);
    // While not recording, rows are dropped at once until the next attempt.
    store.recordEvent(serviceEvent());
    await store.flush();
    assert.equal(store.stats().dropped, 4);

    rmSync(sub);
    await waitFor('recording again', () => store.stats().recording, 5000);
    store.recordRequest(requestEnd({ reqId: 'after' }));
    await store.flush();
    stats = store.stats();
    assert.deepEqual([stats.written, stats.dropped, stats.pending, stats.recording], [2, 4, 0, true]);
    assert.deepEqual((await store.requests(requestQuery())).map((r) => r.req_id), ['after'], 'a new file at the path');
    await store.close();
    assert.equal(errors.length, 1);
  });

  test('its file deleted under an open store: reopened at the path, nothing dropped', async () => {
    const base = fresh('deleted');
    const path = join(base, 'demo.db');
    const { store, errors } = openStore(path);
    store.recordRequest(requestEnd({ reqId: 'first' }));
    await store.flush();
    for (const name of readdirSync(base)) rmSync(join(base, name));
    store.recordRequest(requestEnd({ reqId: 'second' }));
    await store.flush();
    assert.deepEqual((await store.requests(requestQuery())).map((r) => r.req_id), ['second']);
    assert.equal(store.stats().dropped, 0);
    assert.equal(errors.length, 0);
    await store.close();
    assert.equal(count(path), 1);
  });

  test('an onError that throws changes nothing', async () => {
    const base = fresh('throwing-callback');
    writeFileSync(join(base, 'x'), '');
    const store = AuditStore.open({ path: join(base, 'x', 'demo.db'), model: 'm', logBodies: true, retryMs: 200, onError: () => { throw new Error('callback'); } });
    store.recordRequest(requestEnd());
    await waitFor('failure counted', () => store.stats().writeErrors >= 1);
    await store.flush();
    assert.equal(store.stats().dropped, 1);
    await store.close();
  });

  test('disk full (a 512 KiB tmpfs): not recording, onError once, recovers when the file system grows', { skip: !canMount && 'mount is not permitted here' }, async () => {
    const point = fresh('tmpfs');
    assert.ok(mount(['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs'], point));
    const path = join(point, 'demo.db');
    const { store, errors } = openStore(path);
    store.recordRequest(requestEnd({ reqId: 'small' }));
    await store.flush();
    assert.equal(store.stats().written, 1);

    const big = 'x'.repeat(16 * 1024);
    for (let i = 0; i < 64; i++) store.recordRequest(requestEnd({ reqId: `big${i}`, output: big }));
    await store.flush();
    await waitFor('onError', () => errors.length === 1);
    assert.match(errors[0]?.message ?? '', /SQLITE_FULL|disk is full/i);
    let stats = store.stats();
    assert.equal(stats.recording, false);
    assert.equal(stats.dropped, 64, 'the failed batch, one transaction, is dropped whole');
    assert.ok(stats.writeErrors >= 1);

    execFileSync('mount', ['-o', 'remount,size=64m', point]);
    await waitFor('recording again', () => store.stats().recording, 5000);
    for (let i = 0; i < 64; i++) store.recordRequest(requestEnd({ reqId: `again${i}`, output: big }));
    await store.flush();
    stats = store.stats();
    assert.deepEqual([stats.written, stats.dropped, stats.recording], [65, 64, true]);
    await store.close();
    assert.equal(errors.length, 1);
    assert.equal(integrity(path), 'ok');
    assert.equal(count(path), 65);
    execFileSync('umount', [point]);
  });

  test('a read-only file system (a read-only bind mount): not recording, recovers when writable', { skip: !canMount && 'mount is not permitted here' }, async () => {
    const point = fresh('readonly');
    const path = join(point, 'demo.db');
    const first = openStore(path);
    first.store.recordRequest(requestEnd({ reqId: 'written-before' }));
    await first.store.close();
    const before = fileHash(path);

    assert.ok(mount(['--bind', point], point));
    execFileSync('mount', ['-o', 'remount,bind,ro', point]);
    assert.throws(() => writeFileSync(join(point, 'probe'), 'x'), /EROFS|read-only/i, 'root cannot write there');
    const { store, errors } = openStore(path);
    await waitFor('onError', () => errors.length === 1);
    assert.match(errors[0]?.message ?? '', /readonly|read-only|unable to open/i);
    assert.doesNotThrow(() => store.recordRequest(requestEnd({ reqId: 'lost' })));
    await store.flush();
    assert.deepEqual([store.stats().recording, store.stats().dropped], [false, 1]);
    assert.equal(fileHash(path), before);

    execFileSync('umount', [point]);
    await waitFor('recording again', () => store.stats().recording, 5000);
    store.recordRequest(requestEnd({ reqId: 'written-after' }));
    assert.deepEqual((await store.requests(requestQuery())).map((r) => r.req_id), ['written-after', 'written-before']);
    await store.close();
    assert.equal(errors.length, 1);
  });
});
