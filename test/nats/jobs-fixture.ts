/**
 * What the JetStream job tests share: a producer written against the documented wire (README,
 * JetStream jobs) — publish a job with `Nats-Msg-Id`, read its result back from the results
 * stream — and readers of a supervisor's events, request ends and audit rows.
 */
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { waitFor, type ServiceFixture } from '../service/service-fixture.js';
import { natsConnect } from './nats-client.js';

/** The default names of worker `name`'s streams, consumer and subjects (README, JetStream jobs). */
export function jobNames(name: string) {
  const upper = name.toUpperCase().replace(/[^A-Z0-9_-]/g, '_');
  return {
    subject: `inference.jobs.${name}`,
    stream: `LMSERVE_JOBS_${upper}`,
    consumer: `lmserve-${name}`,
    resultsStream: `LMSERVE_RESULTS_${upper}`,
    resultsSubject: `inference.results.${name}`,
  };
}

export class JobsClient {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;

  private constructor(nc: NatsConnection, jsm: JetStreamManager) {
    this.nc = nc;
    this.js = jetstream(nc, { timeout: 10_000 });
    this.jsm = jsm;
  }

  static async connect(url: string): Promise<JobsClient> {
    const nc = await natsConnect(url);
    return new JobsClient(nc, await jetstreamManager(nc, { timeout: 10_000 }));
  }

  close(): Promise<void> {
    return this.nc.close();
  }

  /** Publishes a job (a string body as is) with `Nats-Msg-Id` and, optionally, `Lm-Reply-To`. */
  publish(worker: string, body: unknown, options: { msgId?: string; replyTo?: string } = {}): Promise<PubAck> {
    const h = headers();
    if (options.replyTo) h.set('Lm-Reply-To', options.replyTo);
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    return this.js.publish(jobNames(worker).subject, data, { headers: h, ...(options.msgId ? { msgID: options.msgId } : {}) });
  }

  /** The stored result of a job, or null. */
  async storedResult(worker: string, id: string): Promise<any | null> {
    const n = jobNames(worker);
    const stored = await this.jsm.streams.getMessage(n.resultsStream, { last_by_subj: `${n.resultsSubject}.${id}` });
    return stored ? stored.json() : null;
  }

  /** Waits for the stored result of a job. */
  result(worker: string, id: string, timeoutMs = 60_000): Promise<any> {
    return waitFor(`the result of job ${id}`, async () => (await this.storedResult(worker, id)) ?? undefined, timeoutMs);
  }

  /**
   * How many results the results stream ever stored (its last sequence): the stream keeps one
   * message per subject, so a second result for a job would replace the first and show only here.
   */
  async resultsStored(worker: string): Promise<number> {
    return (await this.jsm.streams.info(jobNames(worker).resultsStream)).state.last_seq;
  }

  /** Jobs still in the work queue (not acked or terminated). */
  async jobsQueued(worker: string): Promise<number> {
    return (await this.jsm.streams.info(jobNames(worker).stream)).state.messages;
  }

  /** The consumer's pending (never delivered) and ack-pending (delivered, not yet acked) jobs. */
  async consumer(worker: string): Promise<{ pending: number; ackPending: number; redelivered: number }> {
    const n = jobNames(worker);
    const info = await this.jsm.consumers.info(n.stream, n.consumer);
    return { pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered };
  }
}

/** The supervisor's recent events of `worker` with this code (data and all). */
export async function events(service: ServiceFixture, worker: string, code: string): Promise<Array<{ msg: string; level: string; data: any }>> {
  const { body } = await service.admin('GET', `/admin/events?worker=${worker}&limit=2000`);
  return (body.events as Array<{ event: any }>).map((e) => e.event).filter((e) => e.code === code);
}

/** Waits until an event with this code (and matching `where`) has been published. */
export function waitEvent(service: ServiceFixture, worker: string, code: string, where: (data: any) => boolean = () => true, timeoutMs = 30_000) {
  return waitFor(`event ${code} of ${worker}`, async () => (await events(service, worker, code)).find((e) => where(e.data)), timeoutMs);
}

/** The supervisor's recent request ends of `worker` over JetStream jobs. */
export async function jobRequests(service: ServiceFixture, worker: string): Promise<any[]> {
  const { body } = await service.admin('GET', `/admin/requests?worker=${worker}&limit=1000`);
  return (body.requests as Array<{ request: any }>).map((r) => r.request).filter((r) => r.transport === 'jobs');
}

/** The worker's audit rows of transport jobs (newest first). */
export async function auditRows(service: ServiceFixture, worker: string): Promise<any[]> {
  const res = await fetch(service.url(worker, '/logs?transport=jobs&limit=500'));
  if (res.status !== 200) throw new Error(`/logs answered ${res.status}`);
  return (await res.json()) as any[];
}

/** Waits until the worker's job runner is pulling (its jobs.ready event). */
export function waitJobsReady(service: ServiceFixture, worker: string, timeoutMs = 30_000) {
  return waitEvent(service, worker, 'jobs.ready', () => true, timeoutMs);
}
