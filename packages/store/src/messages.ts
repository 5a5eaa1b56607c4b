/**
 * The typed messages between an AuditStore (the caller's thread) and its writer thread, which
 * owns the SQLite connection. Requests that expect an answer carry an id; the writer answers
 * every one of them exactly once, in the order it received them.
 */
import type { EventQuery, EventRow, RequestQuery, RequestRow } from '@lmserve/core';
import type { EventValues, RequestValues } from './rows.js';

/** What the writer thread is started with (its workerData). */
export interface WriterSettings {
  /** Absolute path of the SQLite file. */
  path: string;
  /** The worker's model name, for messages. */
  model: string;
  retentionDays: number;
  maxRows: number;
  flushMs: number;
  /** Pending rows that trigger a write before flushMs is up. */
  batchRows: number;
  /** How long a failed open or write waits before the next attempt. */
  retryMs: number;
  pruneIntervalMs: number;
  /** Rows deleted per pruning statement: short write locks. */
  pruneChunk: number;
  busyTimeoutMs: number;
}

/** The writer's counters, sent after every change so stats() is synchronous on the caller's side. */
export interface WriterCounters {
  /** Rows committed since the store opened. */
  written: number;
  /** Rows the writer could not commit (not recording, a failed transaction). */
  dropped: number;
  /** Failed attempts to open, write or prune. */
  writeErrors: number;
  recording: boolean;
  lastError: string | null;
}

/** store -> writer */
export type StoreToWriter =
  | { type: 'rows'; requests: RequestValues[]; events: EventValues[] }
  | { type: 'flush'; id: number }
  | { type: 'read-requests'; id: number; query: RequestQuery }
  | { type: 'read-events'; id: number; query: EventQuery }
  | { type: 'close'; id: number };

/** writer -> store */
export type WriterToStore =
  | { type: 'counters'; counters: WriterCounters }
  /** A failure episode began (the store calls onError once for it). */
  | { type: 'failure'; message: string; counters: WriterCounters }
  | { type: 'flushed'; id: number; counters: WriterCounters }
  | { type: 'closed'; id: number; counters: WriterCounters }
  | { type: 'rows'; id: number; rows: RequestRow[] | EventRow[] }
  | { type: 'read-failed'; id: number; message: string };
