/**
 * What a worker's audit trail holds and how it is read: the row shapes of the per-model SQLite
 * file (the original service's tables, so its sqlite3 one-liners keep working) and the query
 * interface transports serve as GET /logs and GET /events. The store implements it; transports
 * only read through it.
 */
import type { RequestStatus } from './observer.js';

/** One row of `requests`: one request of any transport, whatever its outcome. */
export interface RequestRow {
  id: number;
  req_id: string;
  /** Unix seconds (REAL) when the request arrived. */
  ts: number;
  model: string;
  transport: string;
  input_len: number;
  tokens_in: number;
  tokens_out: number;
  ttft_ms: number | null;
  dur_ms: number;
  queue_ms: number | null;
  status: RequestStatus;
  error_code: string | null;
  error: string | null;
  /** JSON text of the engine parameters. */
  params: string | null;
  /** The input text (chat turns as JSON); null with LOG_BODIES=off. */
  input: string | null;
  /** The output text; null with LOG_BODIES=off. */
  output: string | null;
  /** The id the client gave (a JetStream job id); null when none. */
  client_id: string | null;
}

/** One row of `events`. */
export interface EventRow {
  id: number;
  /** Unix seconds (REAL). */
  ts: number;
  level: string;
  code: string;
  msg: string;
  /** JSON text. */
  data: string;
}

export interface RequestQuery {
  /** Newest first, at most this many (1..1000). */
  limit: number;
  status: RequestStatus | null;
  transport: string | null;
  /** Only the rows of this client id (a JetStream job id). */
  clientId: string | null;
  /** Only rows at or after this time (unix seconds). */
  since: number | null;
  /** Only rows with a larger id (for --follow). */
  afterId: number | null;
}

export interface EventQuery {
  limit: number;
  level: string | null;
  code: string | null;
  since: number | null;
  afterId: number | null;
}

/** A worker's audit trail as transports read it. */
export interface WorkerRecords {
  requests(query: RequestQuery): Promise<RequestRow[]>;
  events(query: EventQuery): Promise<EventRow[]>;
}
