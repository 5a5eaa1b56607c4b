/**
 * The runner's JetStream resources, created or updated at every start so that several
 * supervisors may start at once: the work-queue stream over JOBS_SUBJECT, the results stream
 * over `<RESULTS_SUBJECT>.>` and the durable pull consumer they all share. File storage, so
 * jobs and results survive a nats-server restart.
 */
import type { JobsSettings } from '@lmserve/core';
import { LmError } from '@lmserve/protocol';
import { nanos } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type ConsumerInfo,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';

/** A stream's configuration as the runner sets it. */
export type StreamSettings = Partial<StreamConfig> & { name: string };

/** JetStream's "stream name already in use" (a stream of that name exists with another configuration). */
const STREAM_NAME_EXISTS = 10058;

/** The work queue: a job is removed once acked (or terminated); a full queue refuses new jobs. */
export function jobsStreamConfig(s: JobsSettings): StreamSettings {
  return {
    name: s.stream,
    subjects: [s.subject],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    num_replicas: s.replicas,
    discard: DiscardPolicy.New,
    max_msgs: s.maxMsgs,
    max_age: nanos(s.maxAgeMs),
    // JetStream's default window (2 min), never longer than the jobs may live.
    duplicate_window: nanos(s.maxAgeMs > 0 ? Math.min(s.maxAgeMs, 120_000) : 120_000),
  };
}

/** The results: one message per job id, kept for RESULTS_MAX_AGE, deduplicated by job id. */
export function resultsStreamConfig(s: JobsSettings): StreamSettings {
  return {
    name: s.resultsStream,
    subjects: [`${s.resultsSubject}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    num_replicas: s.replicas,
    discard: DiscardPolicy.Old,
    max_age: nanos(s.resultsMaxAgeMs),
    max_bytes: s.resultsMaxBytes,
    max_msgs_per_subject: 1,
    duplicate_window: nanos(s.resultsDuplicateWindowMs),
  };
}

export function consumerConfig(s: JobsSettings): Partial<ConsumerConfig> {
  return {
    durable_name: s.consumer,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(s.ackWaitMs),
    max_deliver: s.maxDeliver,
    filter_subject: s.subject,
  };
}

function apiCode(err: unknown): number | null {
  return err instanceof JetStreamApiError ? err.code : null;
}

/** Creates the stream, or brings an existing one to this configuration (a concurrent creator is fine). */
export async function ensureStream(jsm: JetStreamManager, config: StreamSettings, key: string): Promise<void> {
  const { name } = config;
  try {
    await jsm.streams.add(config);
    return;
  } catch (err) {
    if (apiCode(err) !== STREAM_NAME_EXISTS) throw setupError(`stream ${name}`, key, err);
  }
  try {
    const { name: _ignored, ...update } = config;
    await jsm.streams.update(name, update);
  } catch (err) {
    throw setupError(`stream ${name} exists with another configuration and cannot be updated`, key, err);
  }
}

/** Creates the durable consumer, or updates the settings an existing one may change. */
export async function ensureConsumer(jsm: JetStreamManager, stream: string, config: Partial<ConsumerConfig>): Promise<ConsumerInfo> {
  const durable = config.durable_name as string;
  try {
    return await jsm.consumers.add(stream, config);
  } catch (err) {
    let existing: ConsumerInfo;
    try {
      existing = await jsm.consumers.info(stream, durable);
    } catch {
      throw setupError(`consumer ${durable} on ${stream}`, 'JOBS_CONSUMER', err);
    }
    if (existing.config.filter_subject !== config.filter_subject) {
      throw new LmError(
        'INTERNAL',
        `consumer ${durable} on ${stream} filters ${existing.config.filter_subject ?? '(nothing)'}, not ${config.filter_subject}: ` +
          'delete it or set another JOBS_CONSUMER',
        { field: 'JOBS_CONSUMER' },
      );
    }
    const { ack_wait, max_deliver } = config;
    try {
      return await jsm.consumers.update(stream, durable, { ack_wait, max_deliver });
    } catch (updateErr) {
      throw setupError(`consumer ${durable} on ${stream} cannot be updated`, 'JOBS_CONSUMER', updateErr);
    }
  }
}

function setupError(what: string, key: string, err: unknown): LmError {
  const reason = err instanceof Error ? err.message : String(err);
  return new LmError('INTERNAL', `${what}: ${reason} (see ${key})`, { cause: err, field: key });
}
