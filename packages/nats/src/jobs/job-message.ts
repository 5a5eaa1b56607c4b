/**
 * A JetStream job as it arrives: `{"id", "input", "params"}` in the body, `Nats-Msg-Id` and
 * `Lm-Reply-To` in the headers. Reading one never throws: it yields either a runnable job or a
 * malformed one (with its id when a usable one was found, so the error result can be published
 * where its producer looks for it).
 */
import { parseGenerateBody, type ParsedGenerate } from '@lmserve/core';
import { LmError, toLmError } from '@lmserve/protocol';

/** Headers the runner reads on a job and writes on its result. */
export const JobHeaders = {
  /** Dedup on the way in (JetStream), and the job id when the body has none. */
  msgId: 'Nats-Msg-Id',
  /** A subject the result is also published to (core NATS, at least once), besides the results stream. */
  replyTo: 'Lm-Reply-To',
  /** On a result: the job id, and `completed` or `failed`. */
  jobId: 'Lm-Job-Id',
  status: 'Lm-Job-Status',
} as const;

/** Longest job id: it is one token of the result's subject and the results stream's Nats-Msg-Id. */
export const MAX_JOB_ID_LENGTH = 128;
const JOB_ID = /^[A-Za-z0-9_-]+$/;

export interface JobRequest {
  id: string;
  body: ParsedGenerate;
}

export type ReadJob =
  | { ok: true; job: JobRequest; replyTo: string | null }
  | { ok: false; id: string | null; replyTo: string | null; error: LmError };

/** Header access as both the JetStream message and a test need it. */
export interface HeaderSource {
  get(name: string): string;
}

/** Throws LmError INVALID_REQUEST naming `field` when `id` cannot be a job id. */
export function checkJobId(id: unknown, field: string): string {
  if (typeof id !== 'string' || id.length === 0) throw new LmError('INVALID_REQUEST', `${field} must be a non-empty string`, { field });
  if (id.length > MAX_JOB_ID_LENGTH) {
    throw new LmError('INVALID_REQUEST', `${field} must be at most ${MAX_JOB_ID_LENGTH} characters`, { field });
  }
  if (!JOB_ID.test(id)) throw new LmError('INVALID_REQUEST', `${field} may hold only letters, digits, - and _`, { field });
  return id;
}

/** A subject a result may be published to: non-empty tokens, no wildcards, no spaces. */
function checkReplySubject(value: string): string {
  const field = `headers.${JobHeaders.replyTo}`;
  if (value.length > 512 || !/^[^\s*>.]+(\.[^\s*>.]+)*$/.test(value)) {
    throw new LmError('INVALID_REQUEST', `${field} must be a NATS subject without wildcards`, { field });
  }
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Reads one job: the id from the body's `id`, else from `Nats-Msg-Id`; the rest is the original
 * API's body, validated by the core (chat messages included). `params.stream` is accepted and
 * ignored: a job's result is always whole.
 */
export function readJob(data: Uint8Array, hdrs: HeaderSource | undefined): ReadJob {
  const headerId = hdrs?.get(JobHeaders.msgId) ?? '';
  const replyHeader = hdrs?.get(JobHeaders.replyTo) ?? '';
  let replyTo: string | null = null;
  let id: string | null = null;
  try {
    // The header id first: a body that does not parse still has an id to report its error under.
    if (headerId !== '') id = checkJobId(headerId, `headers.${JobHeaders.msgId}`);
  } catch (err) {
    id = null;
    return { ok: false, id, replyTo: safeReplyTo(replyHeader), error: toLmError(err) };
  }
  try {
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
    } catch (err) {
      throw new LmError('INVALID_REQUEST', `the job is not valid JSON: ${(err as Error).message}`, { field: 'body' });
    }
    if (!isObject(body)) throw new LmError('INVALID_REQUEST', 'body must be a JSON object {"id", "input", "params"}', { field: 'body' });
    const { id: bodyId, ...rest } = body;
    if (bodyId !== undefined && bodyId !== null) id = checkJobId(bodyId, 'id');
    if (id === null) {
      throw new LmError('INVALID_REQUEST', `id is required: set it in the body or in the ${JobHeaders.msgId} header`, { field: 'id' });
    }
    if (replyHeader !== '') replyTo = checkReplySubject(replyHeader);
    return { ok: true, job: { id, body: parseGenerateBody(rest) }, replyTo };
  } catch (err) {
    return { ok: false, id, replyTo: replyTo ?? safeReplyTo(replyHeader), error: toLmError(err, 'INVALID_REQUEST') };
  }
}

/** The reply-to header when it is usable, for reporting an error whatever else was wrong. */
function safeReplyTo(value: string): string | null {
  if (value === '') return null;
  try {
    return checkReplySubject(value);
  } catch {
    return null;
  }
}
