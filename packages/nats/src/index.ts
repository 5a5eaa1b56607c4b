/**
 * The NATS transport: request/reply on each worker's SUBJECT (a queue group, so several
 * supervisors share the load) and durable JetStream work queues. Imports only the core and the
 * protocol, like every transport.
 */
export { NatsTransport } from './nats-transport.js';
export { NATS_STREAM_INTERVAL_MS, NATS_TRANSPORT, PROBE_INTERVAL_MS, muxSibling, natsStreamIntervalMs, probeIntervalMs } from './request-reply.js';
export { CANCEL_PREFIX } from './worker-binding.js';
export { ConnectionPool, SharedConnection, errorText } from './connection.js';
export type { ConnectionChange } from './connection.js';
export { connectionSettings, connectionKey, parseServers, describe as describeConnection } from './settings.js';
export type { ConnectionSettings, ParsedServers } from './settings.js';
export { LM_CANCEL, LM_ERROR_CODE, LM_EVENT, LM_REQUEST_ID, LM_STATUS, RETRY_AFTER, errorHeaders, replyHeaders } from './wire.js';
export type { ReplyEvent, TokenMessage } from './wire.js';
/** The body of a reply and of a `done` message (the HTTP API's answer). */
export type { CompletionBody } from '@lmserve/core';
export type { JobsContext, JobsService } from './jobs-contract.js';
// The job runner and what producers need of jobs and results (jobs/index.ts is its public face).
export * from './jobs/index.js';

export const JOBS_TRANSPORT = 'jobs';
