/**
 * NATS as a transport, beside HTTP: request/reply on each worker's SUBJECT in a queue group, and
 * the worker's JetStream job runner when JETSTREAM is on. Off for a worker whose NATS_URL is
 * empty. Workers with the same connection settings share one connection. bind() never waits for
 * NATS: an unreachable server is retried in the background while HTTP serves, and its state
 * shows in /readyz, /admin/workers, the events and the metrics.
 */
import type { Transport, TransportEndpoint, TransportWorker } from '@lmserve/core';
import type { Logger } from '@lmserve/protocol';
import { ConnectionPool } from './connection.js';
import { NATS_TRANSPORT } from './request-reply.js';
import { connectionKey, connectionSettings } from './settings.js';
import { WorkerBinding } from './worker-binding.js';

export class NatsTransport implements Transport {
  readonly name = NATS_TRANSPORT;
  readonly #log: Logger;
  readonly #pool: ConnectionPool;
  readonly #bindings = new Map<string, WorkerBinding>();
  /** Bindings being closed (unbound, or all of them at close()), until they are. */
  readonly #closing = new Map<WorkerBinding, Promise<void>>();
  #closed = false;

  constructor(options: { log: Logger }) {
    this.#log = options.log.child({ transport: NATS_TRANSPORT });
    this.#pool = new ConnectionPool(this.#log);
  }

  /** Distinct connections open now (workers with the same settings share one). */
  get connections(): number {
    return this.#pool.size;
  }

  async bind(worker: TransportWorker): Promise<TransportEndpoint | null> {
    const settings = connectionSettings(worker.settings);
    const current = this.#bindings.get(worker.name);
    if (!settings || this.#closed) {
      if (current) await this.unbind(worker.name);
      return null;
    }
    const { subject, natsQueue, jetstream } = worker.settings;
    const signature = JSON.stringify([connectionKey(settings), subject, natsQueue, jetstream]);
    if (current?.signature === signature) return endpoint(settings.servers, subject);
    if (current) await this.unbind(worker.name);
    const binding = new WorkerBinding(worker, this.#pool.acquire(settings), signature, this.#log);
    this.#bindings.set(worker.name, binding);
    return endpoint(settings.servers, subject);
  }

  async unbind(name: string): Promise<void> {
    const binding = this.#bindings.get(name);
    if (!binding) return;
    this.#bindings.delete(name);
    await this.#closeBinding(binding);
  }

  close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#bindings.values()];
    this.#bindings.clear();
    for (const binding of all) void this.#closeBinding(binding);
    return Promise.all(this.#closing.values()).then(() => undefined);
  }

  terminate(): void {
    for (const binding of [...this.#bindings.values(), ...this.#closing.keys()]) binding.terminate();
  }

  #closeBinding(binding: WorkerBinding): Promise<void> {
    let closing = this.#closing.get(binding);
    if (!closing) {
      closing = binding.close().finally(() => this.#closing.delete(binding));
      this.#closing.set(binding, closing);
    }
    return closing;
  }
}

/** Where a worker is served: its subject on the first server (credentials never appear). */
function endpoint(servers: string[], subject: string): TransportEndpoint {
  const first = servers[0] ?? '';
  const port = Number(/:(\d+)$/.exec(first)?.[1] ?? 0) || null;
  return { transport: NATS_TRANSPORT, address: `${servers.join(',')} ${subject}`, port };
}
