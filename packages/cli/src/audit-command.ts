/**
 * `supervisor logs NAME` and `supervisor events NAME`: a worker's audit trail, read over HTTP from
 * the worker's own port (GET /logs, GET /events; newest first there, printed oldest first here so
 * the newest line is at the bottom, like `tail`). `--follow` polls with `after_id` = the largest
 * id printed so far.
 */
import { LmError, isErrorCode, toLmError } from '@lmserve/protocol';
import type { ServicePaths } from '@lmserve/supervisor';
import {
  EVENT_HEADER,
  REQUEST_HEADER,
  columnWidths,
  eventCells,
  requestCells,
  table,
  type EventTableRow,
  type RequestTableRow,
} from './format.js';
import { workerEndpoint, type WorkerEndpoint } from './worker-endpoint.js';

export type AuditKind = 'logs' | 'events';

/** The most rows one read may ask for (the server's bound); follow polls ask for this many. */
export const MAX_LIMIT = 1000;

export interface AuditOptions {
  limit: number;
  /** logs */
  status?: string;
  transport?: string;
  /** events */
  level?: string;
  code?: string;
  /** Unix seconds. */
  since?: number;
  json?: boolean;
  follow?: boolean;
}

export interface AuditIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Ends --follow. */
  signal?: AbortSignal;
  /** --follow's polling interval. */
  pollMs?: number;
}

interface Row {
  id: number;
}

const KINDS = {
  logs: {
    header: REQUEST_HEADER,
    cells: (row: Row) => requestCells(row as unknown as RequestTableRow),
    filters: ['status', 'transport'] as const,
    nothing: 'no requests',
    /** --follow: room for typical values, so rows that come later line up with the header. */
    followWidths: [19, 41, 9, 9, 5, 5, 7, 6],
  },
  events: {
    header: EVENT_HEADER,
    cells: (row: Row) => eventCells(row as unknown as EventTableRow),
    filters: ['level', 'code'] as const,
    nothing: 'no events',
    followWidths: [19, 5, 17],
  },
};

/** The query string of one read: only what is set. */
export function auditQuery(kind: AuditKind, options: AuditOptions, limit: number, afterId: number | null): URLSearchParams {
  const query = new URLSearchParams({ limit: String(limit) });
  for (const key of KINDS[kind].filters) {
    const value = options[key];
    if (value !== undefined && value !== '') query.set(key, value);
  }
  if (options.since !== undefined) query.set('since', String(options.since));
  if (afterId !== null) query.set('after_id', String(afterId));
  return query;
}

/** One GET of a worker's rows, oldest first. Errors are LmErrors with one-line messages. */
export async function readRows(endpoint: WorkerEndpoint, kind: AuditKind, query: URLSearchParams, stop?: AbortSignal): Promise<Row[]> {
  const name = endpoint.worker.name;
  let res: Response;
  try {
    const timeout = AbortSignal.timeout(30_000);
    res = await fetch(`${endpoint.baseUrl}/${kind}?${query}`, {
      headers: endpoint.headers,
      signal: stop ? AbortSignal.any([timeout, stop]) : timeout,
    });
  } catch (err) {
    throw new LmError('MODEL_NOT_READY', `worker ${name} is not answering at ${endpoint.baseUrl}`, { cause: err });
  }
  const body = (await res.json().catch(() => undefined)) as unknown;
  if (!res.ok) {
    const error = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | undefined)?.error;
    const code = isErrorCode(error?.code) ? error.code : 'INTERNAL';
    const message = typeof error?.message === 'string' ? error.message : `GET /${kind}: HTTP ${res.status}`;
    throw new LmError(code, `${name}: ${message}`, typeof error?.field === 'string' ? { field: error.field } : {});
  }
  if (!Array.isArray(body) || !body.every((r) => typeof r === 'object' && r !== null && typeof (r as Row).id === 'number')) {
    throw new LmError('INTERNAL', `${name}: GET /${kind} did not answer a JSON array of rows`);
  }
  return (body as Row[]).slice().sort((a, b) => a.id - b.id);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Prints rows oldest first as JSON lines or as a table whose columns stay aligned across batches. */
class Printer {
  #widths: number[];

  constructor(
    private readonly kind: AuditKind,
    private readonly json: boolean,
    follow: boolean,
    private readonly out: (text: string) => void,
  ) {
    this.#widths = follow ? [...KINDS[kind].followWidths] : [];
  }

  print(rows: Row[], withHeader: boolean): void {
    if (this.json) {
      for (const row of rows) this.out(`${JSON.stringify(row)}\n`);
      return;
    }
    const cells = rows.map(KINDS[this.kind].cells);
    const all = withHeader ? [KINDS[this.kind].header, ...cells] : cells;
    if (all.length === 0) return;
    const text = table(all, this.#widths);
    this.#widths = columnWidths(all, this.#widths);
    this.out(`${text}\n`);
  }
}

export async function runAudit(paths: ServicePaths, name: string, kind: AuditKind, options: AuditOptions, io: AuditIo): Promise<void> {
  let endpoint: WorkerEndpoint | null = await workerEndpoint(paths, name);
  let rows: Row[];
  try {
    rows = await readRows(endpoint, kind, auditQuery(kind, options, options.limit, null), io.signal);
  } catch (err) {
    if (io.signal?.aborted) return;
    throw err;
  }
  const printer = new Printer(kind, options.json === true, options.follow === true, io.out);
  if (rows.length === 0 && !options.follow && !options.json) io.err(`${KINDS[kind].nothing} from ${name}\n`);
  printer.print(rows, rows.length > 0 || options.follow === true);
  if (!options.follow) return;

  // Ids grow; a read with after_id = the largest seen returns only what came after it (an empty
  // first read follows from 0: everything that matches from now on is new).
  let afterId = rows.reduce((max, r) => Math.max(max, r.id), 0);
  let failing: string | null = null;
  while (!io.signal?.aborted) {
    await sleep(io.pollMs ?? 1000, io.signal);
    if (io.signal?.aborted) break;
    let fresh: Row[];
    try {
      // The port can change when the supervisor restarts: after a failure, ask it again.
      endpoint ??= await workerEndpoint(paths, name);
      fresh = (await readRows(endpoint, kind, auditQuery(kind, options, MAX_LIMIT, afterId), io.signal)).filter((r) => r.id > afterId);
    } catch (err) {
      if (io.signal?.aborted) break;
      endpoint = null;
      const error = toLmError(err);
      const line = `${error.code}: ${error.message}`;
      if (line !== failing) io.err(`supervisor: ${line} (still following, retrying every ${Math.round((io.pollMs ?? 1000) / 1000)}s)\n`);
      failing = line;
      continue;
    }
    if (failing !== null) io.err(`supervisor: ${name} answers again\n`);
    failing = null;
    if (fresh.length >= MAX_LIMIT) io.err(`supervisor: more than ${MAX_LIMIT} new rows in one poll; older ones among them were skipped\n`);
    printer.print(fresh, false);
    afterId = fresh.reduce((max, r) => Math.max(max, r.id), afterId);
  }
}
