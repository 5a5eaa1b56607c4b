/**
 * The one place the transport reaches the JetStream job runner (./jobs/, the contract in
 * jobs-contract.ts): loaded on first use, so a worker without JETSTREAM never loads it.
 */
import type { JobsContext, JobsService } from './jobs-contract.js';

interface JobsModule {
  startJobs(ctx: JobsContext): JobsService;
}

// A variable specifier: the runner lives in its own folder and may be absent from a build.
const JOBS_MODULE = './jobs/index.js';
let loaded: Promise<JobsModule> | undefined;

/** Creates the worker's job runner (not started). */
export async function createJobs(ctx: JobsContext): Promise<JobsService> {
  loaded ??= import(JOBS_MODULE) as Promise<JobsModule>;
  const module = await loaded;
  return module.startJobs(ctx);
}
