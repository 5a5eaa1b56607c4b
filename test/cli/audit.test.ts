/**
 * `supervisor logs NAME` and `supervisor events NAME` end to end: the CLI (a child process) finds
 * the worker through a fake gateway's /admin/workers and reads a fake worker port's /logs and
 * /events over real loopback HTTP.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { API_KEY, FakeService, eventRow, requestRow } from './fake-service.js';

let service: FakeService;

before(async () => {
  service = await new FakeService().start();
});

after(async () => {
  await service.close();
});

beforeEach(() => {
  service.unavailable = false;
  service.requests.length = 0;
  service.events.length = 0;
  service.received.length = 0;
});

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

/** Resolves once `read()` satisfies `until`, failing after `ms`. */
async function waitFor(what: string, read: () => string, until: (text: string) => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!until(read())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; have:\n${read()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('supervisor logs', () => {
  test('a table of the newest 20 requests, oldest first, with the API key from the env file', async () => {
    for (let id = 1; id <= 25; id++) service.requests.push(requestRow(id));
    service.requests[24]!.status = 'failed';
    service.requests[24]!.error_code = 'QUEUE_FULL';
    service.requests[24]!.ttft_ms = null;
    const { code, stdout, stderr } = await service.cli(['logs', 'demo']);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
    const out = lines(stdout);
    assert.equal(out.length, 21);
    assert.match(out[0]!, /^TIME\s+REQ_ID\s+TRANSPORT\s+STATUS\s+IN\s+OUT\s+TTFT_MS\s+DUR_MS\s+ERROR$/);
    // ids 6..25, oldest at the top, newest at the bottom; TZ=UTC in the child.
    const first = service.requests[5]!;
    assert.deepEqual(out[1]!.split(/\s+/), ['2024-05-01T12:00:06', first.req_id, 'http', 'completed', '16', '26', '12', '251']);
    const last = service.requests[24]!;
    assert.deepEqual(out[20]!.split(/\s+/), ['2024-05-01T12:00:25', last.req_id, 'http', 'failed', '35', '45', '-', '251', 'QUEUE_FULL']);
    const [read] = service.reads('/logs');
    assert.deepEqual(read?.query, { limit: '20' });
    assert.equal(read?.authorization, `Bearer ${API_KEY}`);
  });

  test('--json prints the rows as JSON lines, oldest first; filters go through as query parameters', async () => {
    service.requests.push(
      requestRow(1, { status: 'failed', transport: 'nats', ts: 1_714_564_700 }),
      requestRow(2, { status: 'failed', transport: 'nats' }),
      requestRow(3, { status: 'completed', transport: 'nats' }),
      requestRow(4, { status: 'failed', transport: 'http' }),
      requestRow(5, { status: 'failed', transport: 'nats', error_code: 'INTERNAL', error: 'boom' }),
    );
    const { code, stdout, stderr } = await service.cli([
      'logs',
      'demo',
      '--json',
      '--status',
      'failed',
      '--transport',
      'nats',
      '--since',
      '1714564800',
      '--limit',
      '5',
    ]);
    assert.equal(code, 0, stderr);
    const rows = lines(stdout).map((l) => JSON.parse(l) as { id: number });
    assert.deepEqual(rows, [service.requests[1], service.requests[4]]);
    assert.deepEqual(service.reads('/logs')[0]?.query, { limit: '5', status: 'failed', transport: 'nats', since: '1714564800' });
  });

  test('--since takes ISO-8601 times and durations, sent as unix seconds', async () => {
    await service.cli(['logs', 'demo', '--since', '2024-05-01T14:00:00+02:00']);
    const started = Date.now() / 1000;
    await service.cli(['logs', 'demo', '--since', '2h']);
    const [iso, relative] = service.reads('/logs');
    assert.equal(iso?.query.since, '1714564800');
    const since = Number(relative?.query.since);
    assert.ok(Math.abs(since - (started - 7200)) < 30, `${since} vs ${started - 7200}`);
  });

  test('no rows: nothing on stdout, a note on stderr, exit 0', async () => {
    service.requests.push(requestRow(1));
    const { code, stdout, stderr } = await service.cli(['logs', 'demo', '--status', 'rejected']);
    assert.equal(code, 0);
    assert.equal(stdout, '');
    assert.equal(stderr, 'no requests from demo\n');
  });

  test('--follow prints the rows that arrive after it started, oldest first, until it is stopped', async () => {
    service.requests.push(requestRow(1), requestRow(2));
    const child = service.spawnCli(['logs', 'demo', '--json', '--follow']);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    try {
      await waitFor('the first rows', () => stdout, (s) => lines(s).length === 2);
      // Wait for a poll, so the new rows arrive while it is following.
      await waitFor('a poll', () => String(service.reads('/logs').length), (n) => Number(n) >= 2);
      service.requests.push(requestRow(4), requestRow(3));
      await waitFor('the new rows', () => stdout, (s) => lines(s).length === 4);
      service.requests.push(requestRow(5));
      await waitFor('one more', () => stdout, (s) => lines(s).length === 5);
      assert.deepEqual(lines(stdout).map((l) => (JSON.parse(l) as { id: number }).id), [1, 2, 3, 4, 5]);
      const polls = service.reads('/logs').slice(1);
      assert.ok(polls.length >= 2);
      // Every poll asks for what came after the largest id printed so far.
      assert.ok(polls.every((p) => ['2', '4', '5'].includes(p.query.after_id ?? '')), JSON.stringify(polls.map((p) => p.query)));
      assert.ok(polls.some((p) => p.query.after_id === '4'));
      assert.equal(polls[0]?.authorization, `Bearer ${API_KEY}`);
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
  });

  test('--follow rides out a worker that stops answering for a while, saying so once', async () => {
    service.requests.push(requestRow(1));
    const child = service.spawnCli(['logs', 'demo', '--json', '--follow']);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    try {
      await waitFor('the first row', () => stdout, (s) => lines(s).length === 1);
      service.unavailable = true;
      await waitFor('the warning', () => stderr, (s) => s.includes('demo is restarting'));
      const failedPolls = service.reads('/logs').length;
      await waitFor('another failed poll', () => String(service.reads('/logs').length), (n) => Number(n) >= failedPolls + 1);
      service.requests.push(requestRow(2));
      service.unavailable = false;
      await waitFor('the row after the outage', () => stdout, (s) => lines(s).length === 2);
      await waitFor('the recovery note', () => stderr, (s) => s.includes('demo answers again'));
      assert.deepEqual(lines(stdout).map((l) => (JSON.parse(l) as { id: number }).id), [1, 2]);
      assert.deepEqual(lines(stderr), [
        'supervisor: MODEL_NOT_READY: demo: demo is restarting (still following, retrying every 1s)',
        'supervisor: demo answers again',
      ]);
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 0, stderr);
  });
});

describe('supervisor events', () => {
  test('a table of events, oldest first; --json with --level, --code and --since', async () => {
    service.events.push(
      eventRow(1, { code: 'startup', msg: 'supervisor starting' }),
      eventRow(2, { level: 'error', code: 'crash', msg: 'host exited with code 1\nlast lines: boom' }),
      eventRow(3, { level: 'warn', code: 'restart', msg: 'restarting in 500 ms' }),
    );
    const table = await service.cli(['events', 'demo']);
    assert.equal(table.code, 0, table.stderr);
    const out = lines(table.stdout);
    assert.equal(out.length, 4);
    assert.match(out[0]!, /^TIME\s+LEVEL\s+CODE\s+MSG$/);
    assert.match(out[1]!, /^2024-05-01T12:00:01\s+info\s+startup\s+supervisor starting$/);
    assert.match(out[2]!, /^2024-05-01T12:00:02\s+error\s+crash\s+host exited with code 1 last lines: boom$/);
    assert.match(out[3]!, /^2024-05-01T12:00:03\s+warn\s+restart\s+restarting in 500 ms$/);
    assert.equal(out[1]!.indexOf('startup'), out[3]!.indexOf('restart'), 'aligned');
    assert.deepEqual(service.reads('/events')[0]?.query, { limit: '20' });

    const json = await service.cli(['events', 'demo', '--json', '--level', 'error', '--code', 'crash', '--since', '1714564801', '--limit', '3']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(lines(json.stdout).map((l) => JSON.parse(l) as unknown), [service.events[1]]);
    assert.deepEqual(service.reads('/events')[1]?.query, { limit: '3', level: 'error', code: 'crash', since: '1714564801' });
  });

  test('--follow in a table: the header once, new events aligned under it', async () => {
    const child = service.spawnCli(['events', 'demo', '--follow', '--code', 'crash']);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    try {
      // Nothing yet: the header alone, then it follows from id 0.
      await waitFor('the header', () => stdout, (s) => lines(s).length === 1);
      assert.match(stdout, /^TIME\s+LEVEL\s+CODE\s+MSG\n$/);
      await waitFor('a poll', () => String(service.reads('/events').length), (n) => Number(n) >= 2);
      service.events.push(eventRow(7, { level: 'error', code: 'crash', msg: 'host died' }), eventRow(8, { code: 'restart', msg: 'not a crash' }));
      await waitFor('the crash', () => stdout, (s) => lines(s).length === 2);
      const out = lines(stdout);
      assert.match(out[1]!, /^2024-05-01T12:00:07\s+error\s+crash\s+host died$/);
      assert.equal(out[0]!.indexOf('CODE'), out[1]!.indexOf('crash'));
      const polls = service.reads('/events').slice(1);
      assert.equal(polls[0]?.query.after_id, '0');
      assert.equal(polls[0]?.query.code, 'crash');
    } finally {
      child.kill('SIGINT');
    }
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 0, stderr);
  });
});

describe('errors: one line on stderr, exit 1', () => {
  const oneLine = (stderr: string, pattern: RegExp) => {
    assert.equal(lines(stderr).length, 1, stderr);
    assert.match(stderr.trimEnd(), pattern);
  };

  test('no supervisor running', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r));
    const { code, stdout, stderr } = await service.cli(['logs', 'demo'], { GATEWAY_ADDR: `127.0.0.1:${port}` });
    assert.equal(code, 1);
    assert.equal(stdout, '');
    oneLine(stderr, new RegExp(`^supervisor: MODEL_NOT_READY: no supervisor is answering at http://127\\.0\\.0\\.1:${port}`));
  });

  test('an unknown worker, a worker without a port, a worker that refuses the key', async () => {
    const unknown = await service.cli(['events', 'nope']);
    assert.equal(unknown.code, 1);
    oneLine(unknown.stderr, /^supervisor: NOT_FOUND: no worker named "nope" \(workers: demo, nokey, broken\)$/);

    const noPort = await service.cli(['logs', 'broken']);
    assert.equal(noPort.code, 1);
    oneLine(noPort.stderr, /^supervisor: MODEL_NOT_READY: worker broken has no HTTP port \(failed: INVALID_MODEL_FILE: bad magic\)$/);

    // nokey's address is 0.0.0.0:<port> (reached on loopback); its env file has no API_KEY.
    const refused = await service.cli(['logs', 'nokey']);
    assert.equal(refused.code, 1);
    oneLine(refused.stderr, /^supervisor: UNAUTHORIZED: nokey: missing or wrong API key$/);
    assert.equal(service.reads('/logs').at(-1)?.authorization, undefined);
  });

  test("the worker's error answer is passed on", async () => {
    const { code, stderr } = await service.cli(['logs', 'demo', '--transport', 'no such']);
    assert.equal(code, 1);
    oneLine(stderr, /^supervisor: INVALID_REQUEST: demo: transport must be a word/);
  });

  test('bad options name the option', async () => {
    const since = await service.cli(['logs', 'demo', '--since', 'yesterday']);
    assert.notEqual(since.code, 0);
    assert.match(since.stderr, /--since/);
    assert.match(since.stderr, /yesterday/);
    const limit = await service.cli(['events', 'demo', '--limit', '0']);
    assert.notEqual(limit.code, 0);
    assert.match(limit.stderr, /--limit/);
    const status = await service.cli(['logs', 'demo', '--status', 'done']);
    assert.notEqual(status.code, 0);
    assert.match(status.stderr, /--status/);
    assert.equal(service.reads('/logs').length + service.reads('/events').length, 0, 'nothing was sent');
  });
});
