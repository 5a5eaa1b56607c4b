/**
 * Jobs whose last delivery died with its process (a supervisor killed mid-job at its
 * max_deliver-th delivery): JetStream will not deliver them again and says so only in its
 * max-deliveries advisory. This listens to it (one supervisor of the queue group handles each),
 * reads the job back by its stream sequence, stores an error result unless the job has one
 * already, records a `jobs.dead_letter` event and removes the job from the work queue.
 */
import type { EventCode, JobsSettings } from '@lmserve/core';
import { LmError, toLmError, type Logger } from '@lmserve/protocol';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { JetStreamManager, PubAck } from '@nats-io/jetstream';
import { readJob } from './job-message.js';
import { failedResult, findResult, replyResult, type JobResult } from './job-results.js';

export interface DeadLettersOptions {
  nc: NatsConnection;
  jsm: JetStreamManager;
  settings: JobsSettings;
  log: Logger;
  /** Stores a result (retrying while NATS is away); null when the runner is gone. */
  store: (result: JobResult & { job_id: string }) => Promise<PubAck | null>;
  event: (code: EventCode, msg: string, data: Record<string, unknown>) => void;
}

/** The advisory's fields this reads (io.nats.jetstream.advisory.v1.max_deliver). */
interface MaxDeliveriesAdvisory {
  stream_seq?: unknown;
  deliveries?: unknown;
}

export function maxDeliveriesSubject(stream: string, consumer: string): string {
  return `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.${consumer}`;
}

export class DeadLetters {
  readonly #o: DeadLettersOptions;
  readonly #sub: Subscription;

  constructor(options: DeadLettersOptions) {
    this.#o = options;
    const { stream, consumer } = options.settings;
    this.#sub = options.nc.subscribe(maxDeliveriesSubject(stream, consumer), {
      queue: `lmserve-dead-letters-${consumer}`,
      callback: (err, msg) => {
        if (err) return;
        let advisory: MaxDeliveriesAdvisory;
        try {
          advisory = msg.json<MaxDeliveriesAdvisory>();
        } catch {
          return;
        }
        const seq = advisory.stream_seq;
        if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) return;
        this.#handle(seq, typeof advisory.deliveries === 'number' ? advisory.deliveries : null).catch((e: unknown) =>
          options.log.error('cannot dead-letter a job', { seq, error: toLmError(e).message }),
        );
      },
    });
  }

  close(): void {
    this.#sub.unsubscribe();
  }

  async #handle(seq: number, deliveries: number | null): Promise<void> {
    const { jsm, settings: s, log } = this.#o;
    const stored = await jsm.streams.getMessage(s.stream, { seq });
    if (!stored) return; // Acked in the meantime.
    const read = readJob(stored.data, stored.header);
    const id = read.ok ? read.job.id : read.id;
    const replyTo = read.replyTo;
    const existing = id === null ? null : await findResult(jsm, s.resultsStream, s.resultsSubject, id);
    if (existing) {
      // It completed, but its ack was lost with its process.
      log.info('a job at max deliveries already has a result; removing it from the queue', { jobId: id, seq });
    } else {
      const error = new LmError(
        'INTERNAL',
        `the job was delivered ${deliveries ?? s.maxDeliver} times (JOBS_MAX_DELIVER=${s.maxDeliver}) and never completed`,
      );
      const result = failedResult(id, error);
      if (id !== null && (await this.#o.store({ ...result, job_id: id })) === null) return;
      if (replyTo) replyResult(this.#o.nc, replyTo, result);
      this.#o.event('jobs.dead_letter', `job ${id ?? `at stream sequence ${seq}`} exhausted its ${s.maxDeliver} deliveries`, {
        job_id: id,
        seq,
        deliveries,
        code: error.code,
      });
    }
    await jsm.streams.deleteMessage(s.stream, seq, false).catch(() => false);
  }
}
