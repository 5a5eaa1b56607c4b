/**
 * Parses the query of a read of the audit trail (GET /logs, GET /events; the same names on any
 * transport). Bad values are INVALID_REQUEST naming the parameter.
 */
import { LmError } from '@lmserve/protocol';
import type { RequestStatus } from './observer.js';
import type { EventQuery, RequestQuery } from './records.js';

export const MAX_RECORDS_PER_READ = 1000;

const STATUSES: readonly RequestStatus[] = ['completed', 'failed', 'cancelled', 'rejected'];

type Query = Record<string, unknown>;

function single(query: Query, name: string): string | null {
  const value = query[name];
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string') throw new LmError('INVALID_REQUEST', `${name} must be given once`, { field: name });
  return value;
}

function integer(query: Query, name: string, min: number, max: number): number | null {
  const raw = single(query, name);
  if (raw === null) return null;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) {
    throw new LmError('INVALID_REQUEST', `${name} must be an integer from ${min} to ${max}`, { field: name });
  }
  return n;
}

/** `since`: unix seconds, or an ISO-8601 time. */
function since(query: Query): number | null {
  const raw = single(query, 'since');
  if (raw === null) return null;
  if (/^\d+(\.\d+)?$/.test(raw)) return Number(raw);
  const ms = Date.parse(raw);
  if (Number.isNaN(ms)) throw new LmError('INVALID_REQUEST', 'since must be unix seconds or an ISO-8601 time', { field: 'since' });
  return ms / 1000;
}

function word(query: Query, name: string): string | null {
  const raw = single(query, name);
  if (raw !== null && !/^[A-Za-z0-9._-]{1,64}$/.test(raw)) {
    throw new LmError('INVALID_REQUEST', `${name} must be a word of letters, digits, . _ -`, { field: name });
  }
  return raw;
}

export function parseRequestQuery(query: Query): RequestQuery {
  const status = single(query, 'status');
  if (status !== null && !STATUSES.includes(status as RequestStatus)) {
    throw new LmError('INVALID_REQUEST', `status must be one of ${STATUSES.join(', ')}`, { field: 'status' });
  }
  return {
    limit: integer(query, 'limit', 1, MAX_RECORDS_PER_READ) ?? 100,
    status: status as RequestStatus | null,
    transport: word(query, 'transport'),
    clientId: word(query, 'client_id'),
    since: since(query),
    afterId: integer(query, 'after_id', 0, Number.MAX_SAFE_INTEGER),
  };
}

export function parseEventQuery(query: Query): EventQuery {
  return {
    limit: integer(query, 'limit', 1, MAX_RECORDS_PER_READ) ?? 100,
    level: word(query, 'level'),
    code: word(query, 'code'),
    since: since(query),
    afterId: integer(query, 'after_id', 0, Number.MAX_SAFE_INTEGER),
  };
}
