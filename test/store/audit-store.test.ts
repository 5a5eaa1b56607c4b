/**
 * The audit store on real SQLite files: the schema, one row per record with every column as
 * the original service's tables have it, the sqlite3 one-liners of its README, LOG_BODIES,
 * nothing lost on flush and close, reads and their filters, pruning, and the caller's event
 * loop turning while the writer thread commits.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { AuditStore, SCHEMA_VERSION, type AuditStoreOptions } from '@lmserve/store';
import { LmError } from '@lmserve/protocol';
import { tempDir } from '../helpers.js';
import { eventQuery, requestEnd, requestQuery, serviceEvent, waitFor } from './fixtures/records.js';

const dir = tempDir('lmserve-store-');
after(() => dir.cleanup());
let files = 0;

function openStore(options: Partial<AuditStoreOptions> = {}): AuditStore {
  // Rows with fixed dates in the past must outlive the pruning at open, except where a test prunes.
  return AuditStore.open({ path: join(dir.path, `audit-${++files}.db`), model: 'demo-model', logBodies: true, retentionDays: 100 * 365, ...options });
}

function sqlite(path: string): Database.Database {
  return new Database(path, { readonly: true });
}

function count(path: string, table: 'requests' | 'events'): number {
  const db = sqlite(path);
  try {
    return db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
  } finally {
    db.close();
  }
}

describe('the schema', () => {
  test('is created at open: schema_version, both tables with their columns and indexes, WAL', async () => {
    const store = openStore();
    await store.flush();
    const db = sqlite(store.path);
    try {
      assert.deepEqual(db.prepare('SELECT version FROM schema_version').pluck().all(), [SCHEMA_VERSION]);
      assert.equal(SCHEMA_VERSION, 2);
      const columns = (table: string) => (db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string; type: string; pk: number }>).map((c) => `${c.name}:${c.type.toUpperCase()}${c.pk ? ':pk' : ''}`);
      assert.deepEqual(columns('requests'), [
        'id:INTEGER:pk', 'req_id:TEXT', 'ts:REAL', 'model:TEXT', 'transport:TEXT', 'input_len:INTEGER', 'tokens_in:INTEGER',
        'tokens_out:INTEGER', 'ttft_ms:REAL', 'dur_ms:REAL', 'queue_ms:REAL', 'status:TEXT', 'error_code:TEXT', 'error:TEXT',
        'params:TEXT', 'input:TEXT', 'output:TEXT', 'client_id:TEXT',
      ]);
      assert.deepEqual(columns('events'), ['id:INTEGER:pk', 'ts:REAL', 'level:TEXT', 'code:TEXT', 'msg:TEXT', 'data:TEXT']);
      const indexes = db.prepare("SELECT tbl_name || '(' || name || ')' FROM sqlite_master WHERE type = 'index' ORDER BY name").pluck().all();
      assert.deepEqual(indexes, ['events(events_ts)', 'requests(requests_client_id)', 'requests(requests_req_id)', 'requests(requests_status)', 'requests(requests_ts)']);
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      db.close();
    }
    await store.close();
  });

  test('a version 1 file is migrated to version 2: its rows kept, client_id added (NULL for old rows) and written for new ones', async () => {
    const first = openStore();
    first.recordRequest(requestEnd({ reqId: 'old' }));
    await first.close();
    // Back to version 1 as the previous release left it: no client_id column, no index.
    const db = new Database(first.path);
    db.exec('DROP INDEX requests_client_id; ALTER TABLE requests DROP COLUMN client_id; UPDATE schema_version SET version = 1');
    db.close();
    const again = AuditStore.open({ path: first.path, model: 'demo-model', logBodies: true });
    again.recordRequest(requestEnd({ reqId: 'new', transport: 'jobs', clientId: 'job-42' }));
    await again.flush();
    const rows = (await again.requests(requestQuery())).map((r) => [r.req_id, r.client_id]);
    assert.deepEqual(rows, [['new', 'job-42'], ['old', null]]);
    assert.deepEqual((await again.requests(requestQuery({ clientId: 'job-42' }))).map((r) => r.req_id), ['new']);
    await again.close();
    const check = sqlite(first.path);
    try {
      assert.deepEqual(check.prepare('SELECT version FROM schema_version').pluck().all(), [2]);
    } finally {
      check.close();
    }
  });

  test('a second open of the same file keeps its rows and its version', async () => {
    const first = openStore();
    first.recordRequest(requestEnd());
    await first.close();
    const again = AuditStore.open({ path: first.path, model: 'demo-model', logBodies: true });
    again.recordRequest(requestEnd());
    await again.close();
    assert.equal(count(first.path, 'requests'), 2);
    assert.equal(again.stats().writeErrors, 0);
  });
});

describe('rows', () => {
  test('one RequestEnd is one row with every column mapped', async () => {
    const store = openStore();
    const startedAt = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const end = requestEnd({
      reqId: 'http-11111111-2222-4333-8444-555555555555',
      transport: 'nats',
      model: 'tiny',
      startedAt,
      status: 'failed',
      errorCode: 'MODEL_CRASHED',
      error: 'the model host exited',
      input: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi "there"' },
      ],
      inputLen: 19,
      params: { maxTokens: 8, stop: ['\n'], seed: 7 },
      output: 'partial',
      usage: { tokensIn: 12, tokensOut: 3, cachedTokens: 2 },
      timings: { queueMs: 0.5, ttftMs: null, totalMs: 81.25 },
    });
    store.recordRequest(end);
    await store.flush();
    const db = sqlite(store.path);
    const rows = db.prepare('SELECT * FROM requests').all();
    db.close();
    const expected = {
      id: 1,
      req_id: end.reqId,
      ts: startedAt / 1000,
      model: 'tiny',
      transport: 'nats',
      input_len: 19,
      tokens_in: 12,
      tokens_out: 3,
      ttft_ms: null,
      dur_ms: 81.25,
      queue_ms: 0.5,
      status: 'failed',
      error_code: 'MODEL_CRASHED',
      error: 'the model host exited',
      params: '{"maxTokens":8,"stop":["\\n"],"seed":7}',
      input: '[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi \\"there\\""}]',
      output: 'partial',
      client_id: null,
    };
    assert.deepEqual(rows, [expected]);
    assert.deepEqual(await store.requests(requestQuery()), [expected], 'the store reads back the same row');
    assert.deepEqual(JSON.parse(expected.input), end.input);
    await store.close();
  });

  test('a string input is stored as is; absent params, input and output are NULL', async () => {
    const store = openStore();
    store.recordRequest(requestEnd({ input: 'plain "text"\n' }));
    store.recordRequest(requestEnd({ status: 'rejected', input: null, params: null, output: null, timings: { queueMs: null, ttftMs: null, totalMs: 0 } }));
    const rows = await store.requests(requestQuery());
    assert.equal(rows[1]?.input, 'plain "text"\n');
    assert.deepEqual([rows[0]?.input, rows[0]?.params, rows[0]?.output, rows[0]?.queue_ms, rows[0]?.ttft_ms], [null, null, null, null, null]);
    await store.close();
  });

  test('one ServiceEvent is one events row; data that JSON cannot take never throws', async () => {
    const store = openStore();
    const ts = Date.UTC(2026, 5, 1, 12, 0, 0, 250);
    store.recordEvent(serviceEvent({ ts, level: 'warn', code: 'crash', worker: 'demo', msg: 'host exited', data: { exitCode: 1, tail: ['a', 'b'] } }));
    const cyclic: Record<string, unknown> = { big: 10n };
    cyclic.self = cyclic;
    const hostile = {};
    Object.defineProperty(hostile, 'boom', { enumerable: true, get: () => { throw new Error('getter'); } });
    assert.doesNotThrow(() => store.recordEvent(serviceEvent({ code: 'internal.error', data: cyclic })));
    assert.doesNotThrow(() => store.recordEvent(serviceEvent({ code: 'internal.error', data: hostile })));
    assert.doesNotThrow(() => store.recordEvent(serviceEvent({ code: 'internal.error', data: undefined as never })));
    const rows = await store.events(eventQuery());
    assert.equal(rows.length, 4);
    assert.deepEqual(rows[3], { id: 1, ts: ts / 1000, level: 'warn', code: 'crash', msg: 'host exited', data: '{"exitCode":1,"tail":["a","b"]}' });
    assert.deepEqual(JSON.parse(rows[2]?.data ?? ''), { big: '10', self: '[circular]' });
    assert.match(rows[1]?.data ?? '', /unserializable/);
    assert.equal(rows[0]?.data, '{}');
    await store.close();
  });

  test('a record whose fields throw is dropped and counted, never thrown', async () => {
    const store = openStore();
    const hostile = requestEnd();
    Object.defineProperty(hostile, 'usage', { get: () => { throw new Error('hostile'); } });
    assert.doesNotThrow(() => store.recordRequest(hostile));
    store.recordRequest(requestEnd());
    await store.flush();
    assert.deepEqual({ ...store.stats(), lastError: null }, { written: 1, dropped: 1, writeErrors: 0, pending: 0, recording: true, lastError: null });
    await store.close();
  });

  test('LOG_BODIES off stores NULL input and output, and keeps everything else', async () => {
    const store = openStore({ logBodies: false });
    store.recordRequest(requestEnd({ input: 'secret prompt', output: 'secret answer' }));
    store.recordRequest(requestEnd({ input: [{ role: 'user', content: 'secret' }], output: 'x' }));
    const rows = await store.requests(requestQuery());
    for (const row of rows) {
      assert.equal(row.input, null);
      assert.equal(row.output, null);
      assert.equal(row.input_len, 16);
      assert.equal(row.params, '{"maxTokens":16,"temperature":0}');
    }
    const db = sqlite(store.path);
    assert.equal(db.prepare("SELECT count(*) FROM requests WHERE input IS NULL AND output IS NULL").pluck().get(), 2);
    db.close();
    await store.close();
  });
});

describe('the sqlite3 one-liners of the original service', () => {
  test('run verbatim with the sqlite3 CLI while the store is open', async () => {
    const store = openStore();
    const base = Math.floor(Date.now() / 60_000) * 60_000 - 3_600_000 + 500;
    for (let i = 1; i <= 7; i++) {
      store.recordRequest(requestEnd({ reqId: `http-${i}`, inputLen: 10 * i, usage: { tokensIn: i, tokensOut: 100 + i, cachedTokens: 0 }, timings: { queueMs: 0, ttftMs: 1, totalMs: 12.5 * i }, status: i % 3 === 0 ? 'failed' : 'completed' }));
    }
    for (let i = 1; i <= 12; i++) {
      store.recordEvent(serviceEvent({ ts: base + i * 1000, level: i % 4 === 0 ? 'error' : 'info', code: i === 1 ? 'startup' : 'model.loading', msg: `event ${i}` }));
    }
    await store.flush();
    const F = store.path;
    const requestsOut = execFileSync('sqlite3', [F, 'SELECT req_id, input_len, tokens_out, dur_ms, status FROM requests ORDER BY id DESC LIMIT 5'], { encoding: 'utf8' });
    assert.equal(
      requestsOut,
      ['http-7|70|107|87.5|completed', 'http-6|60|106|75.0|failed', 'http-5|50|105|62.5|completed', 'http-4|40|104|50.0|completed', 'http-3|30|103|37.5|failed', ''].join('\n'),
    );
    const eventsOut = execFileSync('sqlite3', [F, "SELECT datetime(ts, 'unixepoch') as time, level, code, msg FROM events ORDER BY ts DESC LIMIT 10"], { encoding: 'utf8' });
    const expected: string[] = [];
    for (let i = 12; i >= 3; i--) {
      const time = new Date(base + i * 1000).toISOString().slice(0, 19).replace('T', ' ');
      expected.push(`${time}|${i % 4 === 0 ? 'error' : 'info'}|model.loading|event ${i}`);
    }
    assert.equal(eventsOut, `${expected.join('\n')}\n`);
    assert.match(expected[0] ?? '', /^\d{4}-\d\d-\d\d \d\d:\d\d:12\|error\|model\.loading\|event 12$/);
    await store.close();
  });
});

describe('flush and close', () => {
  test('2,000 rows recorded in one go and closed at once are all in the file', async () => {
    const store = openStore();
    for (let i = 0; i < 2000; i++) store.recordRequest(requestEnd({ reqId: `http-${i}` }));
    for (let i = 0; i < 10; i++) store.recordEvent(serviceEvent({ msg: `e${i}` }));
    assert.equal(store.stats().pending, 2010);
    await store.close();
    assert.equal(count(store.path, 'requests'), 2000);
    assert.equal(count(store.path, 'events'), 10);
    assert.deepEqual(store.stats(), { written: 2010, dropped: 0, writeErrors: 0, pending: 0, recording: false, lastError: null });
    const db = sqlite(store.path);
    assert.equal(db.prepare('SELECT count(DISTINCT req_id) FROM requests').pluck().get(), 2000);
    db.close();
  });

  test('flush resolves when what was recorded before it is committed; rows are batched, not written one by one', async () => {
    const store = openStore({ flushMs: 60_000 });
    await store.flush();
    store.recordRequest(requestEnd());
    store.recordRequest(requestEnd());
    await store.flush();
    assert.equal(count(store.path, 'requests'), 2, 'flush does not wait for flushMs');
    assert.equal(store.stats().pending, 0);
    await store.close();
  });

  test('without flush, rows are committed within flushMs', async () => {
    const store = openStore({ flushMs: 50 });
    store.recordRequest(requestEnd());
    await waitFor('the timed commit', () => store.stats().written === 1, 5000);
    assert.equal(count(store.path, 'requests'), 1);
    await store.close();
  });

  test('a process that never calls close exits once its rows are committed, not before', () => {
    const path = join(dir.path, `audit-${++files}.db`);
    const script = `
      import { AuditStore } from '@lmserve/store';
      const store = AuditStore.open({ path: ${JSON.stringify(path)}, model: 'm', logBodies: true, flushMs: 300 });
      for (let i = 0; i < 100; i++) store.recordRequest({ reqId: 'r' + i, transport: 'http', model: 'm', startedAt: Date.now(), inputLen: 1,
        usage: { tokensIn: 1, tokensOut: 1 }, timings: { queueMs: null, ttftMs: null, totalMs: 1 }, status: 'completed', params: null, input: 'x', output: 'y' });
    `;
    const started = Date.now();
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: join(import.meta.dirname, '..', '..'), timeout: 20_000 });
    assert.equal(count(path, 'requests'), 100, 'the thread kept the process alive until the commit');
    assert.ok(Date.now() - started < 15_000, 'an idle store does not keep the process alive');
  });

  test('after close: records are dropped and counted, flush resolves, reads reject with DISPOSED', async () => {
    const store = openStore();
    await store.close();
    assert.doesNotThrow(() => store.recordRequest(requestEnd()));
    assert.doesNotThrow(() => store.recordEvent(serviceEvent()));
    await store.flush();
    await store.close();
    assert.equal(store.stats().dropped, 2);
    await assert.rejects(store.requests(requestQuery()), (err: unknown) => err instanceof LmError && err.code === 'DISPOSED');
  });
});

describe('reads', () => {
  test('newest first, each filter, limits clamped to 1..1000', async () => {
    const store = openStore();
    const now = Date.now();
    const statuses = ['completed', 'failed', 'cancelled', 'rejected'] as const;
    for (let i = 0; i < 1200; i++) {
      store.recordRequest(requestEnd({
        reqId: `r${i}`,
        status: statuses[i % 4],
        transport: i % 2 === 0 ? 'http' : 'nats',
        startedAt: now - (1200 - i) * 1000,
      }));
    }
    const levels = ['debug', 'info', 'warn', 'error'] as const;
    for (let i = 0; i < 40; i++) {
      store.recordEvent(serviceEvent({ ts: now - (40 - i) * 1000, level: levels[i % 4], code: i % 5 === 0 ? 'crash' : 'restart', msg: `e${i}` }));
    }

    // Reads see everything recorded before them, without an explicit flush.
    const all = await store.requests(requestQuery({ limit: 5000 }));
    assert.equal(all.length, 1000, 'limit clamped to 1000');
    assert.equal(all[0]?.req_id, 'r1199');
    assert.ok(all.every((row, i) => i === 0 || row.id < (all[i - 1] as { id: number }).id), 'newest first (id desc)');
    assert.equal((await store.requests(requestQuery({ limit: 0 }))).length, 1, 'limit clamped to 1');
    assert.equal((await store.requests(requestQuery({ limit: -3 }))).length, 1);
    assert.equal((await store.requests(requestQuery({ limit: 7.9 }))).length, 7);

    const failed = await store.requests(requestQuery({ status: 'failed' }));
    assert.equal(failed.length, 300);
    assert.ok(failed.every((r) => r.status === 'failed'));
    const nats = await store.requests(requestQuery({ transport: 'nats' }));
    assert.equal(nats.length, 600);
    assert.ok(nats.every((r) => r.transport === 'nats'));
    const both = await store.requests(requestQuery({ status: 'completed', transport: 'http', limit: 3 }));
    assert.deepEqual(both.map((r) => r.req_id), ['r1196', 'r1192', 'r1188']);
    const since = await store.requests(requestQuery({ since: (now - 10_000) / 1000 }));
    assert.deepEqual(since.map((r) => r.req_id), ['r1199', 'r1198', 'r1197', 'r1196', 'r1195', 'r1194', 'r1193', 'r1192', 'r1191', 'r1190']);
    const lastId = all[0]?.id as number;
    const after = await store.requests(requestQuery({ afterId: lastId - 3 }));
    assert.deepEqual(after.map((r) => r.id), [lastId, lastId - 1, lastId - 2]);
    store.recordRequest(requestEnd({ reqId: 'follow' }));
    const followed = await store.requests(requestQuery({ afterId: lastId }));
    assert.deepEqual(followed.map((r) => r.req_id), ['follow'], '--follow sees the row recorded just before');

    const events = await store.events(eventQuery());
    assert.equal(events.length, 40);
    assert.equal(events[0]?.msg, 'e39');
    const errors = await store.events(eventQuery({ level: 'error' }));
    assert.deepEqual(errors.map((e) => e.msg), ['e39', 'e35', 'e31', 'e27', 'e23', 'e19', 'e15', 'e11', 'e7', 'e3']);
    const crashes = await store.events(eventQuery({ code: 'crash', limit: 2 }));
    assert.deepEqual(crashes.map((e) => e.msg), ['e35', 'e30']);
    const recent = await store.events(eventQuery({ since: (now - 3000) / 1000 }));
    assert.deepEqual(recent.map((e) => e.msg), ['e39', 'e38', 'e37']);
    const afterEvents = await store.events(eventQuery({ afterId: (events[1]?.id as number) }));
    assert.deepEqual(afterEvents.map((e) => e.msg), ['e39']);
    const combined = await store.events(eventQuery({ level: 'debug', code: 'crash' }));
    assert.deepEqual(combined.map((e) => e.msg), ['e20', 'e0']);
    await store.close();
  });
});

describe('pruning', () => {
  test('rows older than retentionDays are deleted in the background', async () => {
    const store = openStore({ retentionDays: 30, pruneIntervalMs: 100 });
    const day = 86_400_000;
    const now = Date.now();
    for (let i = 0; i < 5; i++) store.recordRequest(requestEnd({ reqId: `old${i}`, startedAt: now - 40 * day }));
    for (let i = 0; i < 5; i++) store.recordRequest(requestEnd({ reqId: `new${i}`, startedAt: now - 29 * day }));
    for (let i = 0; i < 3; i++) store.recordEvent(serviceEvent({ msg: `old${i}`, ts: now - 31 * day }));
    store.recordEvent(serviceEvent({ msg: 'new' }));
    await store.flush();
    await waitFor('old rows pruned', async () => (await store.requests(requestQuery())).length === 5 && (await store.events(eventQuery())).length === 1);
    assert.deepEqual((await store.requests(requestQuery())).map((r) => r.req_id), ['new4', 'new3', 'new2', 'new1', 'new0']);
    assert.deepEqual((await store.events(eventQuery())).map((e) => e.msg), ['new']);
    await store.close();
  });

  test('retention also runs at open', async () => {
    const path = join(dir.path, `audit-${++files}.db`);
    const first = AuditStore.open({ path, model: 'm', logBodies: true, retentionDays: 365 });
    first.recordRequest(requestEnd({ reqId: 'old', startedAt: Date.now() - 100 * 86_400_000 }));
    first.recordRequest(requestEnd({ reqId: 'new' }));
    await first.close();
    assert.equal(count(path, 'requests'), 2);
    const second = AuditStore.open({ path, model: 'm', logBodies: true, retentionDays: 30 });
    await waitFor('pruned at open', async () => (await second.requests(requestQuery())).length === 1);
    assert.equal((await second.requests(requestQuery()))[0]?.req_id, 'new');
    await second.close();
  });

  test('the row cap keeps the newest maxRows of each table, deleted in chunks', async () => {
    const store = openStore({ maxRows: 100, pruneIntervalMs: 50 });
    for (let i = 0; i < 1250; i++) store.recordRequest(requestEnd({ reqId: `r${i}` }));
    for (let i = 0; i < 130; i++) store.recordEvent(serviceEvent({ msg: `e${i}` }));
    await store.flush();
    await waitFor('the cap', () => count(store.path, 'requests') === 100 && count(store.path, 'events') === 100);
    const rows = await store.requests(requestQuery());
    assert.equal(rows[0]?.req_id, 'r1249');
    assert.equal(rows[99]?.req_id, 'r1150');
    assert.equal((await store.events(eventQuery()))[99]?.msg, 'e30');
    // The cap holds as rows keep coming, and never cuts below it.
    for (let i = 1250; i < 1300; i++) store.recordRequest(requestEnd({ reqId: `r${i}` }));
    await store.flush();
    await waitFor('the cap again', () => count(store.path, 'requests') === 100);
    assert.equal((await store.requests(requestQuery()))[99]?.req_id, 'r1200');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(count(store.path, 'requests'), 100);
    await store.close();
  });
});

describe('the caller\'s event loop', () => {
  /** Counts setImmediate turns and the longest gap between two of them until stopped. */
  function spinner() {
    let turns = 0;
    let maxGapMs = 0;
    let last = performance.now();
    let spinning = true;
    const spin = () => {
      if (!spinning) return;
      const now = performance.now();
      maxGapMs = Math.max(maxGapMs, now - last);
      last = now;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    return { stop: () => { spinning = false; return { turns, maxGapMs }; } };
  }

  test('keeps turning while 20,000 rows are recorded and committed', async () => {
    const store = openStore();
    await store.flush();

    // Traffic-like: 1,000 request ends per turn; the writer commits as they come.
    let spin = spinner();
    for (let i = 0; i < 20_000; i += 1000) {
      for (let j = i; j < i + 1000; j++) store.recordRequest(requestEnd({ reqId: `a${j}`, output: 'x'.repeat(200) }));
      await new Promise((r) => setImmediate(r));
    }
    await store.flush();
    const traffic = spin.stop();
    assert.ok(traffic.turns >= 20, `the loop turned ${traffic.turns} times`);

    // One turn of 20,000: the writer's single big transaction runs while the caller's loop turns.
    for (let j = 0; j < 20_000; j++) store.recordRequest(requestEnd({ reqId: `b${j}`, output: 'x'.repeat(200) }));
    const flushing = store.flush(); // posts the batch (the one structured clone on this thread)
    const started = performance.now();
    spin = spinner();
    await flushing;
    const flushMs = performance.now() - started;
    const during = spin.stop();
    assert.equal(count(store.path, 'requests'), 40_000);
    assert.ok(during.turns >= 10, `the loop turned ${during.turns} times while the writer committed for ${flushMs.toFixed(0)} ms`);
    // Were the writes on this thread, one gap would span the whole flush.
    assert.ok(during.maxGapMs < Math.max(100, flushMs / 2), `the longest turn took ${during.maxGapMs.toFixed(1)} ms of ${flushMs.toFixed(0)} ms`);
    console.log(
      `[store] 20,000 rows at 1,000 per turn: ${traffic.turns} turns, longest ${traffic.maxGapMs.toFixed(1)} ms; ` +
        `20,000 in one turn: commit ${flushMs.toFixed(0)} ms, ${during.turns} turns meanwhile, longest ${during.maxGapMs.toFixed(1)} ms`,
    );
    await store.close();
  });
});
