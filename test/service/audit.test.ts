/**
 * The audit trail and the metrics of a real supervisor: every request is one row of its
 * model's SQLite file (completed, failed, cancelled and rejected), the original service's
 * sqlite3 one-liners work verbatim, GET /logs and /events read it back, the counters move by
 * exactly what clients got, and the files survive kill -9 of the supervisor and of a host.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

const sqlite = (file: string, sql: string) => execFileSync('sqlite3', [file, sql], { encoding: 'utf8' });
const ONE_LINER_REQUESTS = 'SELECT req_id, input_len, tokens_out, dur_ms, status FROM requests ORDER BY id DESC LIMIT 5';
const ONE_LINER_EVENTS = "SELECT datetime(ts, 'unixepoch') as time, level, code, msg FROM events ORDER BY ts DESC LIMIT 10";

/** The value of one series in Prometheus text (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const match = /^([^{ ]+)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3]);
  }
  return 0;
}

describe('audit trail and metrics', () => {
  const service = new ServiceFixture();
  let db = '';

  before(async () => {
    await service.configure(
      { alpha: { model: tinyModel, env: { WORKER_CONCURRENCY: '1', MAX_QUEUE: '0' } }, beta: { model: tinyModel, env: { LOG_BODIES: 'off' } } },
      { AUDIT: 'on', METRICS: 'on' },
    );
    await service.start();
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
    db = join(service.dataDir, 'logs', 'alpha.sqlite');
  });

  after(() => service.cleanup());

  const metrics = async (name?: string) => (await fetch(name ? service.url(name, '/metrics') : `http://127.0.0.1:${service.gatewayPort}/metrics`)).text();
  const logs = async (name: string, query = '') => (await fetch(service.url(name, `/logs${query}`))).json() as Promise<any[]>;

  test('a completed request is one row, read by the original one-liner, /logs and the counters alike', async () => {
    const before = await metrics('alpha');
    const res = await service.complete('alpha', { input: 'Hello audit', params: { max_tokens: 5, ignore_eos: true } });
    assert.equal(res.status, 200);
    const rows = await waitFor('the row', async () => {
      const list = await logs('alpha', `?limit=5`);
      return list.find((r) => r.req_id === res.body.id);
    });
    assert.equal(rows.status, 'completed');
    assert.equal(rows.tokens_out, 5);
    assert.equal(rows.tokens_in, res.body.usage.tokens_in);
    assert.equal(rows.input_len, 'Hello audit'.length);
    assert.equal(rows.transport, 'http');
    assert.equal(rows.model, 'alpha');
    assert.equal(rows.input, 'Hello audit');
    assert.equal(rows.output, res.body.output);
    assert.ok(rows.ttft_ms > 0 && rows.dur_ms >= rows.ttft_ms);
    const line = sqlite(db, ONE_LINER_REQUESTS).split('\n').find((l) => l.startsWith(res.body.id));
    assert.ok(line, sqlite(db, ONE_LINER_REQUESTS));
    assert.match(line, new RegExp(`^${res.body.id}\\|11\\|5\\|[0-9.]+\\|completed$`));
    const after = await metrics('alpha');
    const delta = (name: string, labels: Record<string, string>) => sample(after, name, labels) - sample(before, name, labels);
    assert.equal(delta('lmserve_requests_total', { model: 'alpha', transport: 'http', status: 'completed' }), 1);
    assert.equal(delta('lmserve_generation_tokens_total', { model: 'alpha' }), 5);
    assert.equal(delta('lmserve_prompt_tokens_total', { model: 'alpha' }), res.body.usage.tokens_in);
    assert.equal(delta('lmserve_time_to_first_token_seconds_count', { model: 'alpha' }), 1);
  });

  test('failed, rejected and cancelled requests are rows with their status and code', async () => {
    const bad = await service.complete('alpha', { input: 'x', params: { top_p: 3 } });
    assert.equal(bad.status, 400);
    const grammar = await service.complete('alpha', { input: 'x', params: { grammar: 'root ::= "a"{5,2}' } });
    assert.equal(grammar.status, 400);
    // One slot, no queue: a second request while one streams is rejected with 429.
    const abort = new AbortController();
    let started!: () => void;
    const streaming = new Promise<void>((r) => (started = r));
    const running = service
      .stream('alpha', { input: 'occupy', params: { max_tokens: 400, ignore_eos: true } }, (e) => e.event === 'token' && started(), abort.signal)
      .catch(() => undefined);
    await streaming;
    const rejected = await service.complete('alpha', { input: 'no room', params: { max_tokens: 2 } });
    assert.equal(rejected.status, 429);
    abort.abort();
    await running;
    const rows = await waitFor('four rows', async () => {
      const list = await logs('alpha', '?limit=4');
      return list.length === 4 && list.some((r) => r.status === 'cancelled') ? list : undefined;
    });
    assert.ok(rows.some((r) => r.req_id === bad.headers.get('x-request-id')), 'the 400 carries its request id');
    const statuses = rows.map((r) => `${r.status}:${r.error_code ?? ''}`).sort();
    assert.deepEqual(statuses, ['cancelled:', 'failed:INVALID_GRAMMAR', 'failed:INVALID_REQUEST', 'rejected:QUEUE_FULL']);
    const filtered = await logs('alpha', '?status=rejected&limit=10');
    assert.ok(filtered.length >= 1 && filtered.every((r) => r.status === 'rejected'));
  });

  test('supervisor logs NAME prints the rows as a table; --json as JSON lines', async () => {
    const res = await service.complete('alpha', { input: 'from the cli', params: { max_tokens: 2 } });
    const table = await service.cli(['logs', 'alpha', '--limit', '3']);
    assert.ok(table.stdout.includes(res.body.id), table.stdout);
    assert.match(table.stdout.split('\n')[0] ?? '', /REQ_ID/);
    const json = await service.cli(['logs', 'alpha', '--limit', '1', '--json']);
    assert.equal(JSON.parse(json.stdout.trim()).req_id, res.body.id);
    const events = await service.cli(['events', 'alpha', '--code', 'server.ready']);
    assert.match(events.stdout, /server\.ready/);
  });

  test('events: the original one-liner lists the lifecycle; GET /events reads it', async () => {
    const text = await waitFor('server.ready in the file', async () => {
      const out = sqlite(db, ONE_LINER_EVENTS);
      return out.includes('|server.ready|') ? out : undefined;
    });
    for (const code of ['startup', 'model.loading', 'model.loaded', 'services.init', 'server.ready']) {
      assert.match(text, new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\|info\\|${code.replace('.', '\\.')}\\|`, 'm'), code);
    }
    const events = (await (await fetch(service.url('alpha', '/events?code=model.loaded'))).json()) as any[];
    assert.equal(events[0]?.code, 'model.loaded');
    assert.ok(JSON.parse(events[0].data).loadSeconds > 0);
  });

  test('bad /logs queries are 400s naming the parameter', async () => {
    for (const [query, field] of [['?limit=0', 'limit'], ['?status=great', 'status'], ['?since=yesterday', 'since'], ['?after_id=-1', 'after_id']]) {
      const res = await fetch(service.url('alpha', `/logs${query}`));
      assert.equal(res.status, 400, query);
      assert.equal(((await res.json()) as any).error.field, field);
    }
  });

  test('the gateway serves every model in one scrape; a model port only its own', async () => {
    await service.complete('beta', { input: 'hi', params: { max_tokens: 2 } });
    const all = await metrics();
    assert.ok(all.includes('model="alpha"') && all.includes('model="beta"'));
    assert.ok(all.includes('lmserve_supervisor_'));
    const alpha = await metrics('alpha');
    assert.ok(!alpha.includes('model="beta"'));
    // promtool, where installed (.ci/run installs it), finds nothing to say about either scrape.
    if (spawnSync('promtool', ['--version']).status === 0) {
      for (const text of [all, alpha]) {
        const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
        assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
      }
    }
    const betaRows = await logs('beta', '?limit=1');
    assert.equal(betaRows[0]?.status, 'completed');
    assert.equal(betaRows[0]?.input, null, 'LOG_BODIES=off stores no input');
    assert.equal(betaRows[0]?.output, null, 'LOG_BODIES=off stores no output');
    assert.equal(sample(alpha, 'lmserve_worker_up', { model: 'alpha' }), 1);
  });

  test('the files survive kill -9 of a host and of the supervisor, with every committed row', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await service.complete('alpha', { input: `row ${i}`, params: { max_tokens: 2 } });
      ids.push(res.body.id);
    }
    await waitFor('the rows committed', async () => {
      const list = await logs('alpha', '?limit=20');
      return ids.every((id) => list.some((r) => r.req_id === id)) ? true : undefined;
    });
    const pid = (await service.worker('alpha')).pid as number;
    process.kill(pid, 'SIGKILL');
    await waitFor('alpha back with a new host', async () => {
      const w = await service.worker('alpha');
      return w.state === 'ready' && w.pid !== pid ? true : undefined;
    });
    // The crash event is committed within one flush period (200 ms) of being recorded.
    await waitFor('the crash event committed', async () => {
      const events = (await (await fetch(service.url('alpha', '/events?code=crash'))).json()) as unknown[];
      return events.length > 0 ? true : undefined;
    });
    service.child?.kill('SIGKILL');
    await service.exit;
    assert.equal(sqlite(db, 'PRAGMA integrity_check').trim(), 'ok');
    const stored = sqlite(db, `SELECT count(*) FROM requests WHERE req_id IN (${ids.map((id) => `'${id}'`).join(',')})`).trim();
    assert.equal(stored, '5');
    assert.match(sqlite(db, "SELECT count(*) FROM events WHERE code = 'crash'").trim(), /^[1-9]/);
  });
});

describe('an audit trail that cannot be written', () => {
  const service = new ServiceFixture();

  before(async () => {
    // The DB's folder would have to be a regular file: nothing can create it, even as root.
    await service.configure({ alpha: { model: tinyModel, env: { DB_PATH: join(service.envsDir, 'supervisor.env', 'alpha.sqlite') } } });
    await service.start();
    await service.waitReady('alpha');
  });

  after(() => service.cleanup());

  test('the model keeps serving; the failure is an event and a metric', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await service.complete('alpha', { input: 'still here', params: { max_tokens: 2 } });
      assert.equal(res.status, 200);
    }
    const failures = await waitFor('the audit failure event', async () => {
      const events = (await service.admin('GET', '/admin/events?worker=alpha')).body.events as any[];
      const found = events.filter((e) => e.event.code === 'audit.failed');
      return found.length > 0 ? found : undefined;
    });
    assert.equal(failures[0].event.level, 'error');
    // Rows lost are counted into the metric within a second of being dropped.
    await waitFor('the audit error metric', async () => {
      const text = await (await fetch(service.url('alpha', '/metrics'))).text();
      return sample(text, 'lmserve_audit_write_errors_total', { model: 'alpha' }) >= 1 ? true : undefined;
    });
    const logs = await fetch(service.url('alpha', '/logs'));
    assert.equal(logs.status, 503);
  });
});
