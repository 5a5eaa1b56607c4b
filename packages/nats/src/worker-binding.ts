/**
 * One worker served over NATS: its SUBJECT subscribed in its queue group (so every supervisor
 * serving that subject shares the requests), a cancel subject for its running requests, its
 * JetStream job runner when JETSTREAM is on, and its NATS state reported as events and status.
 * Requests run concurrently: a message is handed to the request path at once, never behind the
 * previous one; the model's queue (MAX_QUEUE) bounds them as over HTTP.
 */
import type { TransportWorker } from '@lmserve/core';
import { toLmError, type Logger } from '@lmserve/protocol';
import { nuid, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { SharedConnection, ConnectionChange } from './connection.js';
import type { JobsService } from './jobs-contract.js';
import { startJobs } from './jobs/index.js';
import { NATS_TRANSPORT, natsStreamIntervalMs, serveRequest, type CancelRegistry, type RequestContext } from './request-reply.js';
import { describe } from './settings.js';

/** Cancel subjects: `lmserve.cancel.<binding>.<request id>`. */
export const CANCEL_PREFIX = 'lmserve.cancel';

/** How long draining the subscriptions may take (a server that stops answering must not hold a shutdown). */
const DRAIN_TIMEOUT_MS = 2000;

export class WorkerBinding implements CancelRegistry {
  /** Equal for settings this binding can keep serving (a reload that changes none of them keeps it). */
  readonly signature: string;
  readonly connection: SharedConnection;
  readonly #worker: TransportWorker;
  readonly #log: Logger;
  readonly #id = nuid.next();
  readonly #cancels = new Map<string, AbortController>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #unlisten: () => void;
  #nc: NatsConnection | null = null;
  #subscriptions: Subscription[] = [];
  #jobs: Promise<JobsService | null> | null = null;
  #closing = false;

  constructor(worker: TransportWorker, connection: SharedConnection, signature: string, log: Logger) {
    this.#worker = worker;
    this.connection = connection;
    this.signature = signature;
    this.#log = log.child({ worker: worker.name, subject: worker.settings.subject });
    this.#unlisten = connection.onChange((change) => this.#onChange(change));
    this.#report();
    const nc = connection.nc;
    if (nc && connection.connected) this.#onChange({ type: 'connected', server: connection.server ?? '', nc });
  }

  /** Requests being served now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  register(requestId: string, abort: AbortController): string {
    this.#cancels.set(requestId, abort);
    return `${CANCEL_PREFIX}.${this.#id}.${requestId}`;
  }

  unregister(requestId: string): void {
    this.#cancels.delete(requestId);
  }

  /**
   * Stops taking requests and jobs; resolves when the requests in flight have been answered and
   * the job runner has closed. The connection is released last, after every reply went out.
   */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    await this.#stopSubscriptions();
    const jobs = await this.#jobs;
    await Promise.all([jobs?.close().catch((err: unknown) => this.#log.error('the job runner did not close cleanly', { error: toLmError(err).message })), this.#settled()]);
    this.#detach();
    await this.connection.release();
  }

  /** Cancels what is still running (after close() had its chance); JetStream redelivers unfinished jobs. */
  terminate(): void {
    for (const abort of this.#cancels.values()) abort.abort();
    void this.#jobs?.then((jobs) => jobs?.terminate());
  }

  /** Drains the subscriptions (messages already received are still served); unsubscribes when NATS is away. */
  async #stopSubscriptions(): Promise<void> {
    const subs = this.#subscriptions;
    if (!this.connection.connected) {
      for (const sub of subs) if (!sub.isClosed()) sub.unsubscribe();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, DRAIN_TIMEOUT_MS);
    });
    await Promise.race([Promise.all(subs.map((sub) => sub.drain().catch(() => undefined))), timeout]);
    clearTimeout(timer);
    for (const sub of subs) if (!sub.isClosed()) sub.unsubscribe();
  }

  async #settled(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  #detach(): void {
    this.#unlisten();
    this.#worker.setStatus(NATS_TRANSPORT, null);
  }

  #onChange(change: ConnectionChange): void {
    if (this.#closing) return;
    const { settings } = this.#worker;
    const where = { subject: settings.subject, queue: settings.natsQueue };
    switch (change.type) {
      case 'connected':
        this.#serve(change.nc);
        this.#worker.event('nats.connected', `connected to NATS at ${change.server}; serving ${settings.subject}`, { server: change.server, ...where });
        break;
      case 'disconnected':
        this.#worker.event('nats.disconnected', `disconnected from NATS at ${change.server}; reconnecting`, { server: change.server, ...where }, 'warn');
        break;
      case 'reconnected':
        this.#worker.event('nats.reconnected', `reconnected to NATS at ${change.server}`, { server: change.server, ...where });
        break;
      case 'error':
        this.#worker.event('nats.error', `NATS: ${change.message}`, { reason: change.message, ...describe(this.connection.settings), ...where }, 'warn');
        break;
    }
    this.#report();
  }

  #report(): void {
    const { settings } = this.#worker;
    this.#worker.setStatus(NATS_TRANSPORT, {
      connected: this.connection.connected,
      server: this.connection.server,
      servers: this.connection.settings.servers,
      subject: settings.subject,
      queue: settings.natsQueue,
    });
  }

  /** Subscribes on a (new) client; the client itself restores subscriptions across reconnects. */
  #serve(nc: NatsConnection): void {
    if (this.#nc === nc) return;
    const previous = this.#nc;
    this.#nc = nc;
    for (const sub of this.#subscriptions) if (!sub.isClosed()) sub.unsubscribe();
    const { settings } = this.#worker;
    const ctx: RequestContext = { worker: this.#worker, nc, cancels: this, log: this.#log, streamIntervalMs: natsStreamIntervalMs() };
    try {
      this.#subscriptions = [
        nc.subscribe(settings.subject, {
          queue: settings.natsQueue,
          callback: (err, msg) => (err ? this.#subscriptionError(err) : this.#track(serveRequest(msg, ctx))),
        }),
        nc.subscribe(`${CANCEL_PREFIX}.${this.#id}.*`, {
          callback: (err, msg) => (err ? this.#subscriptionError(err) : this.#cancel(msg)),
        }),
      ];
    } catch (err) {
      this.#subscriptionError(err);
    }
    if (settings.jetstream) this.#startJobs(nc, previous !== null);
  }

  #startJobs(nc: NatsConnection, replacing: boolean): void {
    const previous = this.#jobs;
    if (replacing) void previous?.then((jobs) => jobs?.terminate());
    this.#jobs = (async () => {
      try {
        const jobs = startJobs({ nc, worker: this.#worker, log: this.#log });
        if (this.#closing) return jobs;
        await jobs.start();
        return jobs;
      } catch (err) {
        const reason = toLmError(err).message;
        this.#log.error('the job runner could not start', { reason });
        this.#worker.event('jobs.error', `the job runner could not start: ${reason}`, {}, 'error');
        return null;
      }
    })();
  }

  #track(work: Promise<void>): void {
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  #cancel(msg: Msg): void {
    const requestId = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    const abort = this.#cancels.get(requestId);
    if (abort) {
      this.#log.info('cancel requested', { reqId: requestId });
      abort.abort();
    }
    if (msg.reply) msg.respond(JSON.stringify({ id: requestId, cancelled: abort !== undefined }));
  }

  #subscriptionError(err: unknown): void {
    const reason = toLmError(err).message;
    this.#log.error('NATS subscription failed', { reason });
    this.#worker.event('nats.error', `NATS subscription on ${this.#worker.settings.subject} failed: ${reason}`, { reason }, 'error');
  }
}
