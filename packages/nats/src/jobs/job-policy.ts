/**
 * The runner's decisions as pure functions: how many jobs a worker may hold, what a failed run
 * means for its job, and how long a job waits before its next delivery.
 */
import type { JobsSettings } from '@lmserve/core';
import type { LmError } from '@lmserve/protocol';

/**
 * Jobs held at once: every slot busy plus a queue of at most as many again (MAX_QUEUE when it is
 * smaller), so jobs never fill the queue that HTTP and NATS requests share.
 */
export function jobCapacity(s: Pick<JobsSettings, 'slots' | 'maxQueue'>): number {
  return s.slots + Math.min(s.maxQueue, s.slots);
}

/**
 * - `retry`: a failure of the moment (the model restarting or crashed, a full queue, a
 *   cancelled run, a server error): nak it, JetStream redelivers it later.
 * - `dead`: the same, but it was the job's last delivery (max_deliver): an error result and a
 *   dead-letter event.
 * - `final`: the job itself is at fault (a 4xx: context overflow, an unknown grammar...; or it
 *   ran past REQUEST_TIMEOUT_MS, which it would again): an error result, never retried.
 */
export type FailureAction = 'retry' | 'dead' | 'final';

export function failureAction(error: LmError, deliveries: number, maxDeliver: number): FailureAction {
  const transient = (error.status >= 500 && error.code !== 'TIMEOUT') || error.code === 'QUEUE_FULL' || error.code === 'CANCELLED';
  if (!transient) return 'final';
  return maxDeliver > 0 && deliveries >= maxDeliver ? 'dead' : 'retry';
}

/** The nak delay before delivery n+1: 1 s, 2 s, 4 s, … up to 30 s (a full queue waits at least 5 s). */
export function retryDelayMs(deliveries: number, error: LmError): number {
  const delay = Math.min(30_000, 1000 * 2 ** Math.max(0, Math.min(deliveries - 1, 15)));
  return error.code === 'QUEUE_FULL' ? Math.max(delay, 5000) : delay;
}
