/**
 * A worker's JetStream job keys (JOBS_* and RESULTS_*): subjects, stream and consumer names,
 * delivery and retention limits. Every key has a default derived from the worker's name, so
 * `JETSTREAM=on` alone is enough; every bad value is an error naming the key.
 */
import type { JobsSettings } from '@lmserve/core';
import type { ConfigReader } from './config-values.js';

export const JOBS_KEYS = [
  'JOBS_SUBJECT',
  'JOBS_STREAM',
  'JOBS_CONSUMER',
  'JOBS_MAX_DELIVER',
  'JOBS_ACK_WAIT_MS',
  'JOBS_MAX_AGE',
  'JOBS_MAX_MSGS',
  'JOBS_REPLICAS',
  'RESULTS_STREAM',
  'RESULTS_SUBJECT',
  'RESULTS_MAX_AGE',
  'RESULTS_MAX_BYTES',
  'RESULTS_DUPLICATE_WINDOW',
] as const;

/** Tokens of printable characters without wildcards, separated by single dots. */
const SUBJECT = /^[^\s.*>]+(\.[^\s.*>]+)*$/;
/** Stream and durable consumer names: one subject token, no path separators. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+)(ms|s|m|h|d)$/;

/** `<name>` as a stream or consumer name's tail: every character other than A-Z, a-z, 0-9, _ and - becomes `_`. */
function nameToken(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, '_');
}

/** A duration such as 90s, 15m, 24h or 7d (0: none), in milliseconds. */
function duration(r: ConfigReader, key: string, fallback: string): number {
  const raw = r.string(key, fallback).trim();
  if (raw === '0') return 0;
  const match = DURATION.exec(raw);
  const ms = match ? Number(match[1]) * (UNITS[match[2] as string] as number) : NaN;
  if (!Number.isSafeInteger(ms) || ms > 100 * 365 * UNITS.d!) r.fail(key, 'must be a duration such as 90s, 15m, 24h or 7d (0: no limit)');
  return ms;
}

/**
 * The JOBS_* and RESULTS_* keys of worker `name`; `slots` (WORKER_CONCURRENCY × REPLICAS) and
 * `maxQueue` (MAX_QUEUE) bound how many jobs it pulls.
 */
export function jobsSettings(r: ConfigReader, name: string, slots: number, maxQueue: number): JobsSettings {
  const subject = r.matching('JOBS_SUBJECT', `inference.jobs.${name}`, SUBJECT, 'must be a NATS subject without wildcards');
  const resultsSubject = r.matching('RESULTS_SUBJECT', `inference.results.${name}`, SUBJECT, 'must be a NATS subject without wildcards (results go to <RESULTS_SUBJECT>.<job id>)');
  if (subject.startsWith(`${resultsSubject}.`)) r.fail('JOBS_SUBJECT', `must not be under RESULTS_SUBJECT (${resultsSubject}.>)`);
  const upper = nameToken(name).toUpperCase();
  const names = 'must be 1 to 64 letters, digits, _ or -';
  const stream = r.matching('JOBS_STREAM', `LMSERVE_JOBS_${upper}`, NAME, names);
  const resultsStream = r.matching('RESULTS_STREAM', `LMSERVE_RESULTS_${upper}`, NAME, names);
  if (stream === resultsStream) r.fail('RESULTS_STREAM', 'must differ from JOBS_STREAM');
  const resultsMaxAgeMs = duration(r, 'RESULTS_MAX_AGE', '7d');
  const resultsDuplicateWindowMs = duration(r, 'RESULTS_DUPLICATE_WINDOW', '1d');
  if (resultsDuplicateWindowMs === 0) r.fail('RESULTS_DUPLICATE_WINDOW', 'must be a duration (the results stream deduplicates job ids over it)');
  if (resultsMaxAgeMs > 0 && resultsDuplicateWindowMs > resultsMaxAgeMs) {
    r.fail('RESULTS_DUPLICATE_WINDOW', `must not exceed RESULTS_MAX_AGE (${resultsMaxAgeMs / 1000} s)`);
  }
  const maxMsgs = r.int('JOBS_MAX_MSGS', 1_000_000, -1, Number.MAX_SAFE_INTEGER);
  if (maxMsgs === 0) r.fail('JOBS_MAX_MSGS', 'must be -1 (no limit) or at least 1');
  const resultsMaxBytes = r.int('RESULTS_MAX_BYTES', 1024 ** 3, -1, Number.MAX_SAFE_INTEGER);
  if (resultsMaxBytes >= 0 && resultsMaxBytes < 1024 * 1024) r.fail('RESULTS_MAX_BYTES', 'must be -1 (no limit) or at least 1048576');
  return {
    subject,
    stream,
    consumer: r.matching('JOBS_CONSUMER', `lmserve-${nameToken(name)}`, NAME, names),
    maxDeliver: r.int('JOBS_MAX_DELIVER', 5, 1, 1000),
    ackWaitMs: r.int('JOBS_ACK_WAIT_MS', 30_000, 1000, 3_600_000),
    maxAgeMs: duration(r, 'JOBS_MAX_AGE', '0'),
    maxMsgs,
    resultsStream,
    resultsSubject,
    resultsMaxAgeMs,
    resultsMaxBytes,
    resultsDuplicateWindowMs,
    replicas: r.int('JOBS_REPLICAS', 1, 1, 5),
    slots,
    maxQueue,
  };
}
