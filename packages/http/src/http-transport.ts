/**
 * HTTP as a transport: one listening socket per worker (its HTTP_ADDR), serving the
 * per-model API over that worker's RequestPath.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatAddress, type Transport, type TransportEndpoint, type TransportWorker } from '@lmserve/core';
import { LmError, type Logger } from '@lmserve/protocol';
import { createModelApp, HTTP_TRANSPORT } from './model-app.js';
import { closeServer, listen } from './serve.js';

interface Binding {
  server: Server;
  /** HTTP_ADDR as configured; a port of 0 binds once and keeps its port across reloads. */
  key: string;
  endpoint: TransportEndpoint;
}

export class HttpTransport implements Transport {
  readonly name = HTTP_TRANSPORT;
  readonly #log: Logger;
  readonly #bindings = new Map<string, Binding>();
  readonly #closing: Array<Promise<void>> = [];

  constructor(options: { log: Logger }) {
    this.#log = options.log;
  }

  async bind(worker: TransportWorker): Promise<TransportEndpoint> {
    const { httpAddr, file, maxBodyBytes } = worker.settings;
    const key = `${formatAddress(httpAddr)} ${maxBodyBytes}`;
    const current = this.#bindings.get(worker.name);
    if (current && (current.key === key || httpAddr.port === 0)) return current.endpoint;
    if (current) await this.unbind(worker.name);
    const app = createModelApp({
      requests: worker.requests,
      records: worker.records,
      metrics: worker.metrics,
      grammars: worker.grammars,
      transportStatus: () => worker.transportStatus(),
      log: this.#log.child({ worker: worker.name }),
      bodyLimit: maxBodyBytes,
    });
    let server: Server;
    try {
      server = await listen(app, httpAddr);
    } catch (err) {
      throw new LmError('INTERNAL', `cannot listen on HTTP_ADDR=${key} (${file}): ${(err as Error).message}`, { cause: err, field: 'HTTP_ADDR' });
    }
    const address = server.address() as AddressInfo;
    const endpoint = { transport: this.name, address: formatAddress({ host: address.address, port: address.port }), port: address.port };
    this.#bindings.set(worker.name, { server, key, endpoint });
    this.#log.info('model port listening', { worker: worker.name, address: endpoint.address });
    return endpoint;
  }

  async unbind(name: string): Promise<void> {
    const binding = this.#bindings.get(name);
    if (!binding) return;
    this.#bindings.delete(name);
    await closeServer(binding.server);
  }

  close(): Promise<void> {
    const servers = [...this.#bindings.values()].map((b) => b.server);
    this.#closing.push(...servers.map((server) => closeServer(server)));
    return Promise.all(this.#closing).then(() => undefined);
  }

  terminate(): void {
    for (const { server } of this.#bindings.values()) server.closeAllConnections();
  }
}
