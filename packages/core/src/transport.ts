/**
 * How the supervisor plugs a transport (HTTP, NATS, ...) into a worker: bind it, unbind it.
 * A transport sees a worker only through this interface and reaches the model only through
 * the worker's RequestPath; transports never import each other.
 */
import type { LogLevel } from '@lmserve/protocol';
import type { ListenAddress } from './address.js';
import type { GrammarLibraryApi, ModelBackend } from './backend.js';
import type { WorkerRecords } from './records.js';
import type { EventCode } from './observer.js';
import type { RequestPath } from './request-path.js';

/** A worker's Prometheus metrics in exposition format (GET /metrics). */
export interface MetricsSource {
  readonly contentType: string;
  text(): Promise<string>;
}

/** The worker settings transports read (a subset of envs/worker.<name>.env). */
export interface TransportSettings {
  /** The worker's env file, for messages that point at the key to fix. */
  file: string;
  httpAddr: ListenAddress;
  /** The largest request body an HTTP port reads (MAX_BODY_BYTES; 413 PAYLOAD_TOO_LARGE above). */
  maxBodyBytes: number;
  apiKey: string | null;
  subject: string;
  /** NATS servers, comma-separated URLs (null: NATS is off for this worker). */
  natsUrl: string | null;
  natsToken: string | null;
  natsUser: string | null;
  natsPassword: string | null;
  /** Paths: a creds file (JWT + nkey seed), an nkey seed file, TLS CA, client certificate and key. */
  natsCreds: string | null;
  natsNkeySeed: string | null;
  natsTlsCa: string | null;
  natsTlsCert: string | null;
  natsTlsKey: string | null;
  /** Queue group of the request/reply subscription (every supervisor serving SUBJECT joins it). */
  natsQueue: string;
  jetstream: boolean;
  /** The JetStream job runner's settings (JOBS_* and RESULTS_* keys; used when jetstream is on). */
  jobs: JobsSettings;
}

/** Streams, subjects and limits of a worker's JetStream jobs (durations in ms; -1: no limit). */
export interface JobsSettings {
  /** JOBS_SUBJECT: where producers publish jobs. */
  subject: string;
  /** JOBS_STREAM: the work-queue stream over `subject`. */
  stream: string;
  /** JOBS_CONSUMER: the durable pull consumer every supervisor serving the worker shares. */
  consumer: string;
  maxDeliver: number;
  ackWaitMs: number;
  /** JOBS_MAX_AGE (0: none) and JOBS_MAX_MSGS (-1: none) of the work-queue stream. */
  maxAgeMs: number;
  maxMsgs: number;
  /** RESULTS_STREAM over `<resultsSubject>.>`; a job's result is `<resultsSubject>.<job id>`. */
  resultsStream: string;
  resultsSubject: string;
  resultsMaxAgeMs: number;
  resultsMaxBytes: number;
  resultsDuplicateWindowMs: number;
  /** JOBS_REPLICAS: copies of both streams (and the consumer) in a JetStream cluster. */
  replicas: number;
  /** WORKER_CONCURRENCY × REPLICAS and MAX_QUEUE: how many jobs the worker can hold. */
  slots: number;
  maxQueue: number;
}

export interface TransportWorker {
  readonly name: string;
  readonly backend: ModelBackend;
  readonly requests: RequestPath;
  readonly settings: TransportSettings;
  /** The worker's audit trail (null when AUDIT=off). */
  readonly records: WorkerRecords | null;
  /** The worker's metrics (null when METRICS=off). */
  readonly metrics: MetricsSource | null;
  /** The service's grammar library (the same for every worker; null while it is not open). */
  readonly grammars: GrammarLibraryApi | null;
  /** Publishes a lifecycle event of this worker (a NATS connection change, a dead-lettered job...). */
  event(code: EventCode, msg: string, data?: Record<string, unknown>, level?: LogLevel): void;
  /**
   * Reports this transport's state for the worker (shown in /readyz, /admin/workers and the
   * metrics); null removes it (the transport no longer serves the worker).
   */
  setStatus(transport: string, status: TransportStatus | null): void;
  /** Every transport's reported state for this worker, by transport name. */
  transportStatus(): Record<string, TransportStatus>;
}

/** A transport's state for one worker, e.g. `{ connected: false, server: null, pending: 3 }`. */
export interface TransportStatus {
  /** Whether the transport can reach its clients now (NATS: connected to a server). */
  connected: boolean;
  [key: string]: unknown;
}

/** Where a transport serves a worker (shown in /admin/workers and the services.init event). */
export interface TransportEndpoint {
  transport: string;
  address: string;
  port: number | null;
}

export interface Transport {
  readonly name: string;
  /**
   * Serves the worker, or re-serves it when its settings changed (idempotent otherwise).
   * Resolves with where it serves it (null: this transport is off for the worker); rejects
   * with an LmError whose message names the setting at fault.
   */
  bind(worker: TransportWorker): Promise<TransportEndpoint | null>;
  /** Stops serving the worker. */
  unbind(name: string): Promise<void>;
  /** Stops accepting new work everywhere; resolves when the exchanges in flight have ended. */
  close(): Promise<void>;
  /** Drops whatever exchanges are still open (after close() had its chance). */
  terminate(): void;
}
