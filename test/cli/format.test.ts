/** The CLI's tables: the audit trail's columns, local times, oldest-first order kept, alignment across batches. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  columnWidths,
  eventsTable,
  localTime,
  requestCells,
  requestsTable,
  table,
  type RequestTableRow,
} from '../../packages/cli/src/format.js';

process.env.TZ = 'Asia/Kolkata'; // +05:30, no daylight saving

const base: RequestTableRow = {
  ts: Date.UTC(2024, 4, 1, 12, 0, 0) / 1000,
  req_id: 'http-1',
  transport: 'http',
  status: 'completed',
  tokens_in: 12,
  tokens_out: 34,
  ttft_ms: 5.55,
  dur_ms: 1234.4,
  error_code: null,
};

test('localTime: local ISO time without milliseconds or offset', () => {
  assert.equal(localTime(Date.UTC(2024, 4, 1, 12, 0, 0) / 1000), '2024-05-01T17:30:00');
  assert.equal(localTime(Date.UTC(2024, 11, 31, 20, 5, 9, 999) / 1000), '2025-01-01T01:35:09');
  assert.equal(localTime(Number.NaN), '-');
});

test('requests table: the columns in order, one row per request in the order given', () => {
  const failed = { ...base, ts: base.ts + 61, req_id: 'nats-2', transport: 'nats', status: 'failed', tokens_out: 0, ttft_ms: null, dur_ms: 3, error_code: 'QUEUE_FULL' };
  const lines = requestsTable([base, failed]).split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0]!, /^TIME\s+REQ_ID\s+TRANSPORT\s+STATUS\s+IN\s+OUT\s+TTFT_MS\s+DUR_MS\s+ERROR$/);
  assert.deepEqual(lines[1]!.split(/\s+/), ['2024-05-01T17:30:00', 'http-1', 'http', 'completed', '12', '34', '5.5', '1234']);
  assert.deepEqual(lines[2]!.split(/\s+/), ['2024-05-01T17:31:01', 'nats-2', 'nats', 'failed', '12', '0', '-', '3.0', 'QUEUE_FULL']);
  // Columns line up: every column starts at the header's offset.
  for (const name of ['REQ_ID', 'STATUS', 'TTFT_MS', 'ERROR']) {
    const at = lines[0]!.indexOf(name);
    assert.notEqual(lines[2]![at - 1], undefined);
    assert.equal(lines[2]![at - 1], ' ', `${name} column aligned`);
    assert.notEqual(lines[2]![at], ' ', `${name} column aligned`);
  }
  assert.ok(!lines.some((l) => l.endsWith(' ')), 'no trailing blanks');
});

test('events table: TIME, LEVEL, CODE, MSG; a message is kept on one line', () => {
  const text = eventsTable([
    { ts: base.ts, level: 'info', code: 'server.ready', msg: 'ready' },
    { ts: base.ts + 1, level: 'error', code: 'crash', msg: 'host exited with code 1\nlast stderr:\n\tboom' },
  ]);
  const lines = text.split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0]!, /^TIME\s+LEVEL\s+CODE\s+MSG$/);
  assert.match(lines[1]!, /^2024-05-01T17:30:00\s+info\s+server\.ready\s+ready$/);
  assert.match(lines[2]!, /^2024-05-01T17:30:01\s+error\s+crash\s+host exited with code 1 last stderr: boom$/);
});

test('table with minimum widths keeps a later batch aligned with the first', () => {
  const first = [['TIME', 'LEVEL', 'MSG'], ['2024-05-01T17:30:00', 'warning', 'A']];
  const widths = columnWidths(first);
  assert.deepEqual(widths, [19, 7, 3]);
  const later = table([['2024-05-01T17:30:01', 'info', 'B']], widths);
  assert.equal(later, '2024-05-01T17:30:01  info     B');
  assert.equal(table(first).split('\n')[1]!.indexOf('A'), later.indexOf('B'));
  // A longer cell widens its column rather than being cut.
  assert.equal(table([['x', 'a much longer level', 'c']], widths), 'x                    a much longer level  c');
  assert.deepEqual(requestCells({ ...base, req_id: 'a\nb' }).slice(1, 2), ['a b']);
});
