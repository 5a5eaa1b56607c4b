/**
 * RequestEnd and ServiceEvent to the values of one row. Runs on the caller's thread, so it is
 * kept to field copies and two small JSON.stringify calls; rows are tuples (in the column order
 * of schema.ts) because a tuple of primitives is the cheapest thing to post to the writer thread.
 */
import type { RequestEnd, ServiceEvent } from '@lmserve/core';

/** req_id, ts, model, transport, input_len, tokens_in, tokens_out, ttft_ms, dur_ms, queue_ms, status, error_code, error, params, input, output, client_id */
export type RequestValues = [
  string,
  number,
  string,
  string,
  number,
  number,
  number,
  number | null,
  number,
  number | null,
  string,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
];

/** ts, level, code, msg, data */
export type EventValues = [number, string, string, string, string];

export function requestValues(end: RequestEnd, logBodies: boolean): RequestValues {
  const input = end.input;
  return [
    String(end.reqId),
    num(end.startedAt) / 1000,
    String(end.model),
    String(end.transport),
    num(end.inputLen),
    num(end.usage.tokensIn),
    num(end.usage.tokensOut),
    numOrNull(end.timings.ttftMs),
    num(end.timings.totalMs),
    numOrNull(end.timings.queueMs),
    String(end.status),
    strOrNull(end.errorCode),
    strOrNull(end.error),
    end.params == null ? null : toJson(end.params),
    !logBodies || input == null ? null : typeof input === 'string' ? input : toJson(input),
    !logBodies ? null : strOrNull(end.output),
    strOrNull(end.clientId),
  ];
}

export function eventValues(event: ServiceEvent): EventValues {
  return [num(event.ts) / 1000, String(event.level), String(event.code), String(event.msg), toJson(event.data ?? {})];
}

// The types promise these; the coercions keep one malformed value from failing a whole batch
// (SQLite binds only numbers, strings and null).
function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(value) || 0;
}

function numOrNull(value: unknown): number | null {
  return typeof value === 'number' ? value : null;
}

function strOrNull(value: unknown): string | null {
  return value == null ? null : String(value);
}

/**
 * JSON text of anything, never a throw: an event's data comes from every part of the service
 * (an error object, a BigInt, a cycle, a getter that throws) and losing the event over it would
 * be worse than losing the odd field.
 */
export function toJson(value: unknown): string {
  try {
    const text = JSON.stringify(value);
    if (text !== undefined) return text;
  } catch {
    // a cycle, a BigInt or a throwing toJSON/getter: try again field by field below
  }
  try {
    const seen = new WeakSet<object>();
    const text = JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (v instanceof Error) return { name: v.name, message: v.message };
      if (typeof v === 'object' && v !== null) {
        if (seen.has(v)) return '[circular]';
        seen.add(v);
      }
      return v;
    });
    if (text !== undefined) return text;
    return 'null';
  } catch (err) {
    let why = 'unknown';
    try {
      why = err instanceof Error ? err.message : String(err);
    } catch {
      // the error itself is hostile: keep 'unknown'
    }
    return JSON.stringify({ unserializable: why });
  }
}
