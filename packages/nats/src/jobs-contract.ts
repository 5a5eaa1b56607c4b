/**
 * What the NATS transport (request/reply, the connection) and the JetStream job runner
 * (jobs/) agree on. The transport owns the connection and calls `startJobs` for a worker whose
 * JETSTREAM is on; the runner owns its stream, consumer, results and pull loop.
 */
import type { TransportWorker } from '@lmserve/core';
import type { Logger } from '@lmserve/protocol';
import type { NatsConnection } from '@nats-io/transport-node';

export interface JobsContext {
  /** The worker's shared connection (reconnects by itself; never closed by the runner). */
  nc: NatsConnection;
  /** The worker: its request path, settings, events and status board. */
  worker: TransportWorker;
  log: Logger;
}

export interface JobsService {
  /** Ensures the streams and the durable consumer (idempotently) and starts pulling. */
  start(): Promise<void>;
  /** Stops pulling; resolves when the jobs in flight have ended (acked, nak'd or left to redeliver). */
  close(): Promise<void>;
  /** Abandons the jobs in flight (JetStream redelivers them after ack_wait). */
  terminate(): void;
}
