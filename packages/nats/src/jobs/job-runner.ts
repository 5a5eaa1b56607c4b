/**
 * One worker's JetStream job runner: pulls jobs from its durable consumer (never more than the
 * worker can hold), runs each through the worker's RequestPath, stores its result once in the
 * results stream, and only then acks it. Whatever goes wrong — the model, the host, this
 * process, the NATS server — a job is either redelivered or ends with exactly one stored result.
 */
import type { JobsSettings, TransportWorker } from '@lmserve/core';
import { LmError, toLmError, type Logger } from '@lmserve/protocol';
import { backoff, delay, type NatsConnection } from '@nats-io/transport-node';
import {
  jetstream,
  jetstreamManager,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import type { JobsContext, JobsService } from '../jobs-contract.js';
import { DeadLetters } from './dead-letters.js';
import { readJob, type JobRequest, type ReadJob } from './job-message.js';
import { failureAction, jobCapacity, retryDelayMs } from './job-policy.js';
import { completedResult, failedResult, findResult, replyResult, storeResult, type JobResult } from './job-results.js';
import { consumerConfig, ensureConsumer, ensureStream, jobsStreamConfig, resultsStreamConfig } from './job-streams.js';

/** The transport name of job requests (request ids `jobs-<uuid>`, the audit trail's transport). */
const TRANSPORT = 'jobs';
/**
 * How long one pull waits for jobs before the next one (the server's minimum is 1 s). A pull is
 * never cut short while the connection lives: the server would still deliver to it, and a job it
 * delivered to a closed pull waits out JOBS_ACK_WAIT_MS. So this is also how long close() may wait.
 */
const FETCH_EXPIRES_MS = 2000;
/** How often the status (pending jobs, connection) is refreshed. */
const STATUS_INTERVAL_MS = 3000;
/** Timeout of one JetStream API call or publish. */
const API_TIMEOUT_MS = 5000;
/** How long a job that arrived while the model was not ready waits for it before it is nak'd. */
const READY_WAIT_MS = 60_000;
const NOT_READY = new LmError('MODEL_NOT_READY', 'the model is not ready');

/** A job this runner holds: every delivery of it that arrived while it ran is acked with it. */
interface HeldJob {
  id: string;
  msgs: JsMsg[];
  replyTo: string | null;
  abort: AbortController;
  done: Promise<void>;
}

export class JobRunner implements JobsService {
  readonly #nc: NatsConnection;
  readonly #worker: TransportWorker;
  readonly #settings: JobsSettings;
  readonly #log: Logger;
  readonly #js: JetStreamClient;
  #jsm: JetStreamManager | null = null;
  /** Every message being handled (the capacity they take), by the promise of its handling. */
  readonly #handling = new Set<Promise<void>>();
  readonly #held = new Map<string, HeldJob>();
  #batch: ConsumerMessages | null = null;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #statusTimer: NodeJS.Timeout | null = null;
  #deadLetters: DeadLetters | null = null;
  #connected = false;
  #pending: number | null = null;
  #closing = false;
  #terminated = false;
  #lastSetupError = '';

  constructor(ctx: JobsContext) {
    this.#nc = ctx.nc;
    this.#worker = ctx.worker;
    this.#settings = ctx.worker.settings.jobs;
    this.#log = ctx.log.child({ worker: ctx.worker.name, component: 'jobs' });
    this.#js = jetstream(ctx.nc, { timeout: API_TIMEOUT_MS });
  }

  /** Resolves after the first attempt to set up the streams and the consumer; failures are retried in the background. */
  async start(): Promise<void> {
    if (this.#loop) return;
    this.#publishStatus();
    let firstAttempt!: () => void;
    const attempted = new Promise<void>((resolve) => (firstAttempt = resolve));
    this.#loop = this.#run(firstAttempt).catch((err: unknown) => {
      this.#log.error('the job runner stopped', { error: toLmError(err).message });
      firstAttempt();
    });
    await attempted;
  }

  async close(): Promise<void> {
    this.#closing = true;
    // The open pull runs out by itself (jobs it still gets are nak'd for another runner).
    this.#wake?.();
    await this.#loop;
    await Promise.allSettled([...this.#handling]);
    this.#shutdown();
  }

  terminate(): void {
    this.#terminated = true;
    this.#closing = true;
    void this.#batch?.close();
    this.#wake?.();
    for (const job of this.#held.values()) {
      job.abort.abort();
      for (const msg of job.msgs) msg.nak();
    }
    this.#shutdown();
  }

  #shutdown(): void {
    if (this.#statusTimer) clearInterval(this.#statusTimer);
    this.#statusTimer = null;
    this.#deadLetters?.close();
    this.#worker.setStatus(TRANSPORT, null);
  }

  async #run(firstAttempt: () => void): Promise<void> {
    for (let attempt = 0; !this.#closing; attempt++) {
      try {
        await this.#setup();
        break;
      } catch (err) {
        this.#setupFailed(err);
        firstAttempt();
        await this.#sleep(backoff([500, 1000, 2000, 5000, 10_000, 30_000]).backoff(attempt));
      }
    }
    firstAttempt();
    if (this.#closing) return;
    const s = this.#settings;
    this.#worker.event('jobs.ready', `pulling jobs from ${s.subject} (stream ${s.stream}, consumer ${s.consumer})`, {
      subject: s.subject,
      stream: s.stream,
      consumer: s.consumer,
      resultsStream: s.resultsStream,
      resultsSubject: s.resultsSubject,
      capacity: jobCapacity(s),
    });
    this.#statusTimer = setInterval(() => void this.#refreshStatus(), STATUS_INTERVAL_MS);
    this.#statusTimer.unref();
    void this.#refreshStatus();
    await this.#pull();
  }

  /** The streams and the consumer, created or brought up to date. */
  async #setup(): Promise<void> {
    const s = this.#settings;
    this.#jsm ??= await jetstreamManager(this.#nc, { timeout: API_TIMEOUT_MS, checkAPI: false });
    await ensureStream(this.#jsm, jobsStreamConfig(s), 'JOBS_STREAM');
    await ensureStream(this.#jsm, resultsStreamConfig(s), 'RESULTS_STREAM');
    await ensureConsumer(this.#jsm, s.stream, consumerConfig(s));
    this.#deadLetters ??= new DeadLetters({
      nc: this.#nc,
      jsm: this.#jsm,
      settings: s,
      log: this.#log,
      store: (result) => this.#store(result),
      event: (code, msg, data) => this.#worker.event(code, msg, data, code === 'jobs.dead_letter' ? 'warn' : 'info'),
    });
    this.#lastSetupError = '';
  }

  #setupFailed(err: unknown): void {
    const message = toLmError(err).message;
    this.#log.warn('cannot set up the job streams; retrying', { error: message });
    // One event per distinct failure, not one per retry.
    if (message !== this.#lastSetupError) {
      this.#lastSetupError = message;
      this.#worker.event('jobs.error', `cannot set up the job streams: ${message}`, { stream: this.#settings.stream }, 'error');
    }
  }

  /** Pulls while open: a fetch of at most the free capacity at a time, only while the model is ready. */
  async #pull(): Promise<void> {
    const capacity = jobCapacity(this.#settings);
    let consumer: Consumer | null = null;
    for (let failures = 0; !this.#closing; ) {
      const free = capacity - this.#handling.size;
      if (free <= 0 || !this.#worker.backend.readiness().ready) {
        await this.#sleep(250);
        continue;
      }
      try {
        consumer ??= await this.#js.consumers.get(this.#settings.stream, this.#settings.consumer);
        await this.#fetch(consumer, free);
        failures = 0;
      } catch (err) {
        const message = toLmError(err).message;
        if (this.#closing) break;
        this.#log.warn('cannot pull jobs; retrying', { error: message });
        // A stream or consumer deleted under us is made again.
        if (/not found/i.test(message)) {
          consumer = null;
          await this.#setup().catch((setupErr: unknown) => this.#setupFailed(setupErr));
        }
        await this.#sleep(backoff([250, 1000, 2000, 5000]).backoff(failures++));
      }
    }
  }

  async #fetch(consumer: Consumer, max: number): Promise<void> {
    const batch = await consumer.fetch({ max_messages: max, expires: FETCH_EXPIRES_MS });
    this.#batch = batch;
    // A pull whose end never comes (a connection gone for good) is closed by us.
    const watchdog = setTimeout(() => void batch.close(), FETCH_EXPIRES_MS * 5);
    try {
      for await (const msg of batch) this.#accept(msg);
    } finally {
      clearTimeout(watchdog);
      this.#batch = null;
    }
  }

  #accept(msg: JsMsg): void {
    const handling: Promise<void> = this.#handle(msg)
      .catch((err: unknown) => this.#log.error('a job could not be handled; it will be redelivered', { error: toLmError(err).message }))
      .finally(() => {
        this.#handling.delete(handling);
        this.#wake?.();
      });
    this.#handling.add(handling);
  }

  async #handle(msg: JsMsg): Promise<void> {
    if (this.#closing) {
      msg.nak();
      return;
    }
    const read = readJob(msg.data, msg.headers);
    if (!read.ok) {
      await this.#malformed(msg, read);
      return;
    }
    const held = this.#held.get(read.job.id);
    if (held) {
      // Redelivered (an ack wait ran out, NATS restarted) while this runner still holds it.
      held.msgs.push(msg);
      await held.done;
      return;
    }
    let finished!: () => void;
    const job: HeldJob = {
      id: read.job.id,
      msgs: [msg],
      replyTo: read.replyTo,
      abort: new AbortController(),
      done: new Promise<void>((resolve) => (finished = resolve)),
    };
    this.#held.set(job.id, job);
    const heartbeat = setInterval(() => job.msgs.forEach((m) => m.working()), Math.max(1000, Math.floor(this.#settings.ackWaitMs / 3)));
    heartbeat.unref();
    try {
      await this.#process(job, read.job);
    } finally {
      clearInterval(heartbeat);
      this.#held.delete(job.id);
      finished();
    }
  }

  /** A job that already has a result is acked; any other runs, and ends acked, nak'd or terminated. */
  async #process(job: HeldJob, request: JobRequest): Promise<void> {
    const deliveries = () => Math.max(...job.msgs.map((m) => m.info.deliveryCount));
    const existing = await this.#lookup(job.id);
    if (existing === undefined) return; // Terminated while NATS was away: the job will be redelivered.
    if (existing) {
      if (job.replyTo) replyResult(this.#nc, job.replyTo, existing);
      this.#worker.event('jobs.duplicate', `job ${job.id} already has a result; acked without running it again`, {
        job_id: job.id,
        deliveries: deliveries(),
      });
      await this.#ackAll(job);
      return;
    }
    // A job that arrives while the model restarts waits for it (its ack wait kept alive) rather
    // than spending one of its deliveries on MODEL_NOT_READY.
    if (!(await this.#untilReady())) {
      if (!this.#terminated) for (const msg of job.msgs) msg.nak(this.#closing ? 0 : retryDelayMs(deliveries(), NOT_READY));
      return;
    }
    if (deliveries() > 1) {
      this.#worker.event('jobs.redelivered', `job ${job.id} runs again (delivery ${deliveries()})`, { job_id: job.id, deliveries: deliveries() });
    }
    const active = this.#worker.requests.begin(TRANSPORT, job.id);
    const { input, params, raw } = request.body;
    try {
      const result = await active.run({ input, params, raw }, null, job.abort.signal);
      if (result.finishReason === 'cancelled') throw new LmError('CANCELLED', 'the job was cancelled');
      await this.#finish(job, completedResult(job.id, active.id, this.#worker.backend.model, result), 'ack');
    } catch (err) {
      await this.#failed(job, toLmError(err), deliveries());
    }
  }

  /** True once the model is ready; false when the runner closes or READY_WAIT_MS pass first. */
  async #untilReady(): Promise<boolean> {
    const deadline = Date.now() + READY_WAIT_MS;
    while (!this.#worker.backend.readiness().ready) {
      if (this.#closing || Date.now() > deadline) return false;
      await delay(250);
    }
    return !this.#closing;
  }

  async #failed(job: HeldJob, error: LmError, deliveries: number): Promise<void> {
    if (this.#terminated) return;
    const action = failureAction(error, deliveries, this.#settings.maxDeliver);
    if (action === 'retry' || (this.#closing && action === 'dead' && error.code === 'CANCELLED')) {
      const wait = this.#closing ? 0 : retryDelayMs(deliveries, error);
      this.#log.info('job failed for now; redelivering it later', { jobId: job.id, code: error.code, deliveries, delayMs: wait });
      for (const msg of job.msgs) msg.nak(wait);
      return;
    }
    if (action === 'dead') {
      this.#worker.event(
        'jobs.dead_letter',
        `job ${job.id} failed on its last delivery (${deliveries} of ${this.#settings.maxDeliver}): ${error.code}`,
        { job_id: job.id, deliveries, code: error.code, error: error.message },
        'warn',
      );
    }
    await this.#finish(job, failedResult(job.id, error), 'term');
  }

  /** A job that cannot run: its error result where one can go, recorded as a failed request, terminated. */
  async #malformed(msg: JsMsg, read: Extract<ReadJob, { ok: false }>): Promise<void> {
    const { id, error } = read;
    this.#worker.requests.begin(TRANSPORT, id).fail(error);
    this.#worker.event('jobs.malformed', `malformed job${id ? ` ${id}` : ''} (stream sequence ${msg.seq}): ${error.message}`, {
      job_id: id,
      seq: msg.seq,
      code: error.code,
      error: error.message,
      ...(error.field === undefined ? {} : { field: error.field }),
    }, 'warn');
    const result = failedResult(id, error);
    if (id !== null && (await this.#store({ ...result, job_id: id })) === null) return;
    if (read.replyTo) replyResult(this.#nc, read.replyTo, result);
    msg.term();
  }

  /** Stores the result, sends it to the reply-to subject, then acks (or terminates) every delivery of the job. */
  async #finish(job: HeldJob, result: JobResult & { job_id: string }, disposition: 'ack' | 'term'): Promise<void> {
    const ack = await this.#store(result);
    if (ack === null) return;
    if (ack.duplicate) this.#log.info('the job already had a stored result', { jobId: job.id });
    if (job.replyTo) replyResult(this.#nc, job.replyTo, result);
    if (disposition === 'term') {
      for (const msg of job.msgs) msg.term();
      return;
    }
    await this.#ackAll(job);
  }

  async #ackAll(job: HeldJob): Promise<void> {
    await Promise.all(
      job.msgs.map((msg) =>
        msg.ackAck({ timeout: API_TIMEOUT_MS * 2 }).catch((err: unknown) => {
          // The result is stored: if the ack was lost, the redelivery finds it and is acked then.
          this.#log.warn('the ack of a job was not confirmed', { jobId: job.id, error: toLmError(err).message });
        }),
      ),
    );
  }

  /** Stores a result, retrying while NATS is away; null when the runner was terminated first. */
  #store(result: JobResult & { job_id: string }) {
    return this.#retrying('store a job result', () => storeResult(this.#js, this.#settings.resultsSubject, result, API_TIMEOUT_MS));
  }

  /** The job's stored result (null: none); undefined when the runner was terminated first. */
  async #lookup(jobId: string): Promise<JobResult | null | undefined> {
    const found = await this.#retrying('look up a job result', async () => ({
      result: await findResult(this.#manager(), this.#settings.resultsStream, this.#settings.resultsSubject, jobId),
    }));
    return found === null ? undefined : found.result;
  }

  async #retrying<T>(what: string, call: () => Promise<T>): Promise<T | null> {
    for (let attempt = 0; ; attempt++) {
      if (this.#terminated || this.#nc.isClosed()) return null;
      try {
        return await call();
      } catch (err) {
        if (attempt === 0 || attempt % 10 === 0) this.#log.warn(`cannot ${what}; retrying`, { error: toLmError(err).message, attempt });
        await delay(backoff([100, 500, 1000, 2000, 5000]).backoff(attempt));
      }
    }
  }

  #manager(): JetStreamManager {
    if (!this.#jsm) throw new LmError('INTERNAL', 'the job runner is not set up');
    return this.#jsm;
  }

  async #refreshStatus(): Promise<void> {
    try {
      const info = await this.#manager().consumers.info(this.#settings.stream, this.#settings.consumer);
      this.#connected = true;
      this.#pending = info.num_pending + info.num_ack_pending;
    } catch {
      this.#connected = false;
    }
    if (!this.#statusTimer) return;
    this.#publishStatus();
  }

  #publishStatus(): void {
    const s = this.#settings;
    this.#worker.setStatus(TRANSPORT, {
      connected: this.#connected,
      stream: s.stream,
      consumer: s.consumer,
      subject: s.subject,
      pending: this.#pending,
      in_flight: this.#handling.size,
    });
  }

  /** Waits `ms`, or less when a job ends or the runner closes. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }
}
