import type { WorkerInfo } from '@lmserve/protocol';

/** Left-aligned columns, two spaces apart; `minWidths` keeps later batches aligned with earlier ones. */
export function table(rows: string[][], minWidths: readonly number[] = []): string {
  const widths = columnWidths(rows, minWidths);
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

function duration(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
}

export function workersTable(workers: WorkerInfo[]): string {
  const header = ['NAME', 'STATE', 'PID', 'PORT', 'MODEL', 'SLOTS', 'QUEUE', 'UPTIME', 'RESTARTS', 'REASON'];
  const rows = workers.map((w) => [
    w.name,
    w.state,
    w.pid === null ? '-' : String(w.pid),
    w.port === null ? '-' : String(w.port),
    w.model,
    `${w.slots.busy}/${w.slots.total}`,
    String(w.queue),
    duration(w.uptime_s),
    String(w.restarts),
    (w.reason ?? '').split('\n')[0] ?? '',
  ]);
  return table([header, ...rows]);
}

/** The widths `table` gives each column of `rows` (to pass on as `minWidths`). */
export function columnWidths(rows: string[][], minWidths: readonly number[] = []): number[] {
  const widths: number[] = [...minWidths];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return widths;
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** Unix seconds as local ISO time without milliseconds or offset: 2024-05-01T14:03:22. */
export function localTime(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  if (Number.isNaN(d.getTime())) return '-';
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** A table cell: one line, whatever the text holds. */
function cell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  return String(value).replace(/[\r\n\t\u0000-\u001f\u007f]+/g, ' ');
}

/** Milliseconds: one decimal under 10, whole above. */
function ms(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

/** The row fields the requests table shows (a subset of RequestRow). */
export interface RequestTableRow {
  ts: number;
  req_id: string;
  transport: string;
  status: string;
  tokens_in: number;
  tokens_out: number;
  ttft_ms: number | null;
  dur_ms: number;
  error_code: string | null;
}

/** The row fields the events table shows (a subset of EventRow). */
export interface EventTableRow {
  ts: number;
  level: string;
  code: string;
  msg: string;
}

export const REQUEST_HEADER = ['TIME', 'REQ_ID', 'TRANSPORT', 'STATUS', 'IN', 'OUT', 'TTFT_MS', 'DUR_MS', 'ERROR'];
export const EVENT_HEADER = ['TIME', 'LEVEL', 'CODE', 'MSG'];

export function requestCells(r: RequestTableRow): string[] {
  return [
    localTime(r.ts),
    cell(r.req_id),
    cell(r.transport),
    cell(r.status),
    cell(r.tokens_in),
    cell(r.tokens_out),
    ms(r.ttft_ms),
    ms(r.dur_ms),
    r.error_code ? cell(r.error_code) : '',
  ];
}

export function eventCells(e: EventTableRow): string[] {
  return [localTime(e.ts), cell(e.level), cell(e.code), e.msg ? cell(e.msg) : ''];
}

/** Requests as a table in the order given (callers pass oldest first). */
export function requestsTable(rows: RequestTableRow[]): string {
  return table([REQUEST_HEADER, ...rows.map(requestCells)]);
}

/** Events as a table in the order given (callers pass oldest first). */
export function eventsTable(rows: EventTableRow[]): string {
  return table([EVENT_HEADER, ...rows.map(eventCells)]);
}
