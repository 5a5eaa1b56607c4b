/**
 * A job's result: what it holds, where it goes and how it is stored once. The results stream
 * keeps it at `<RESULTS_SUBJECT>.<job id>`, published with `Nats-Msg-Id: <job id>` (the
 * stream's duplicate window drops a second copy) into a stream that keeps one message per
 * subject; a job whose result is already there is never run again.
 */
import { completionBody, type CompletionBody } from '@lmserve/core';
import type { GenerationResult, LmError } from '@lmserve/protocol';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import type { JetStreamClient, JetStreamManager, PubAck } from '@nats-io/jetstream';
import { JobHeaders } from './job-message.js';

export type JobStatus = 'completed' | 'failed';

/** The HTTP API's non-streaming response plus the job's id and status. */
export type CompletedResult = CompletionBody & { job_id: string; status: 'completed' };

export interface FailedResult {
  job_id: string | null;
  status: 'failed';
  error: { code: string; message: string; field?: string };
}

export type JobResult = CompletedResult | FailedResult;

export function completedResult(jobId: string, requestId: string, model: string, result: GenerationResult): CompletedResult {
  return { ...completionBody(requestId, model, result), job_id: jobId, status: 'completed' };
}

export function failedResult<Id extends string | null>(jobId: Id, error: LmError): FailedResult & { job_id: Id } {
  return { job_id: jobId, status: 'failed', error: error.toJSON() };
}

/** Where the result of `jobId` is stored. */
export function resultSubject(prefix: string, jobId: string): string {
  return `${prefix}.${jobId}`;
}

function resultHeaders(result: JobResult) {
  const h = headers();
  if (result.job_id !== null) h.set(JobHeaders.jobId, result.job_id);
  h.set(JobHeaders.status, result.status);
  return h;
}

const encoder = new TextEncoder();

/**
 * Stores the result in the results stream with `Nats-Msg-Id` = the job id. Resolves with the
 * PubAck (`duplicate: true` when that job's result was already stored); rejects when JetStream
 * did not confirm (NATS down, timeout): the caller retries, the id keeps it stored once.
 */
export function storeResult(js: JetStreamClient, prefix: string, result: JobResult & { job_id: string }, timeoutMs: number): Promise<PubAck> {
  return js.publish(resultSubject(prefix, result.job_id), encoder.encode(JSON.stringify(result)), {
    msgID: result.job_id,
    headers: resultHeaders(result),
    timeout: timeoutMs,
  });
}

/** Sends the result to a job's `Lm-Reply-To` subject (core NATS: at most once per call, never throws). */
export function replyResult(nc: NatsConnection, subject: string, result: JobResult): void {
  try {
    nc.publish(subject, encoder.encode(JSON.stringify(result)), { headers: resultHeaders(result) });
  } catch {
    // A closed connection: the result is in the results stream, where producers look first.
  }
}

/** The stored result of `jobId`, or null when there is none yet. Rejects when JetStream cannot be asked. */
export async function findResult(jsm: JetStreamManager, stream: string, prefix: string, jobId: string): Promise<JobResult | null> {
  const stored = await jsm.streams.getMessage(stream, { last_by_subj: resultSubject(prefix, jobId) });
  if (!stored) return null;
  try {
    return stored.json<JobResult>();
  } catch {
    return failedResultUnreadable(jobId);
  }
}

/** A stored result that is not JSON (written by something else): it still counts as the job's result. */
function failedResultUnreadable(jobId: string): FailedResult {
  return { job_id: jobId, status: 'failed', error: { code: 'INTERNAL', message: 'the stored result is not JSON' } };
}
