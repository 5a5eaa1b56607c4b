/**
 * JetStream jobs: the runner the NATS transport starts for every worker whose JETSTREAM is on
 * (the contract is ../jobs-contract.ts), and what producers need to know of jobs and results.
 */
import type { JobsContext, JobsService } from '../jobs-contract.js';
import { JobRunner } from './job-runner.js';

export { JobHeaders, MAX_JOB_ID_LENGTH, checkJobId, readJob } from './job-message.js';
export type { JobRequest, ReadJob } from './job-message.js';
export { resultSubject } from './job-results.js';
export type { CompletedResult, FailedResult, JobResult, JobStatus } from './job-results.js';
export { jobCapacity, failureAction, retryDelayMs } from './job-policy.js';
export { maxDeliveriesSubject } from './dead-letters.js';

/** The job runner of one worker; `start()` sets up its streams and starts pulling. */
export function startJobs(ctx: JobsContext): JobsService {
  return new JobRunner(ctx);
}
