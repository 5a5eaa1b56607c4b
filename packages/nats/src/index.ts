/**
 * The NATS transport: request/reply on each worker's SUBJECT (a queue group, so several
 * supervisors share the load) and durable JetStream work queues. Imports only the core and the
 * protocol, like every transport.
 */
export const NATS_TRANSPORT = 'nats';
export const JOBS_TRANSPORT = 'jobs';
