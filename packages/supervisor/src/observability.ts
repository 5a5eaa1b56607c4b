/**
 * The observer's sinks in the supervisor: one SQLite audit trail per worker (AUDIT) and the
 * Prometheus metrics (METRICS). Both only subscribe to the observer; writes happen in the
 * store's worker thread, so the relay loop only appends to a batch.
 */
import {
  ServiceObserver,
  type EventQuery,
  type MetricsSource,
  type RequestQuery,
  type WorkerRecords,
} from '@lmserve/core';
import { ServiceMetrics, type WorkerSnapshot } from '@lmserve/metrics';
import { LmError, toLmError, type Logger } from '@lmserve/protocol';
import { AuditStore } from '@lmserve/store';
import type { SupervisorConfig } from './supervisor-config.js';
import type { WorkerConfig } from './worker-config.js';

interface WorkerSinks {
  store: AuditStore | null;
  model: string;
  /** Rows the store had dropped when last counted into the metrics. */
  dropped: number;
  records: WorkerRecords;
}

/** How often dropped audit rows are counted into lmserve_audit_write_errors_total. */

export class Observability {
  readonly #config: SupervisorConfig;
  readonly #observer: ServiceObserver;
  readonly #log: Logger;
  readonly #sinks = new Map<string, WorkerSinks>();
  readonly #metrics: ServiceMetrics | null;
  #closed = false;

  constructor(options: { config: SupervisorConfig; observer: ServiceObserver; log: Logger; workers: () => WorkerSnapshot[] }) {
    this.#config = options.config;
    this.#observer = options.observer;
    this.#log = options.log;
    this.#metrics = options.config.metrics ? new ServiceMetrics({ observer: options.observer, workers: options.workers, log: options.log }) : null;
    this.#observer.onRequest((end) => this.#sinks.get(end.worker)?.store?.recordRequest(end));
    this.#observer.onEvent((event) => {
      if (event.worker === null) {
        for (const sinks of this.#sinks.values()) sinks.store?.recordEvent(event);
      } else {
        this.#sinks.get(event.worker)?.store?.recordEvent(event);
      }
    });
  }

  /** Opens (or reopens, when DB_PATH changed) the worker's audit trail. */
  attach(name: string, config: WorkerConfig | null): void {
    let sinks = this.#sinks.get(name);
    if (!sinks) {
      const created: WorkerSinks = { store: null, model: config?.modelName ?? name, dropped: 0, records: this.#recordsOf(name) };
      this.#sinks.set(name, created);
      sinks = created;
    }
    if (!config || !this.#config.audit || this.#closed) return;
    sinks.model = config.modelName;
    if (sinks.store && sinks.store.path === config.dbPath) return;
    const previous = sinks.store;
    if (previous) void previous.close().catch(() => undefined);
    sinks.dropped = 0;
    sinks.store = AuditStore.open({
      path: config.dbPath,
      model: config.modelName,
      logBodies: config.logBodies,
      retentionDays: this.#config.logRetentionDays,
      maxRows: this.#config.logMaxRows,
      onError: (error) => {
        this.#log.error('audit trail not recorded', { worker: name, path: config.dbPath, reason: error.message });
        this.#observer.event('audit.failed', name, `the audit trail cannot be written: ${error.message}`, { path: config.dbPath }, 'error');
        this.#countDropped();
      },
    });
  }

  /** The worker's audit trail as transports read it (stable across reopenings). */
  records(name: string): WorkerRecords | null {
    if (!this.#config.audit) return null;
    return this.#sinks.get(name)?.records ?? null;
  }

  /** The worker's model's metrics (GET /metrics on its port). */
  workerMetrics(name: string): MetricsSource | null {
    const metrics = this.#metrics;
    if (!metrics) return null;
    const sinks = this.#sinks;
    return {
      contentType: metrics.contentType,
      text: () => {
        this.#countDropped();
        return metrics.modelText(sinks.get(name)?.model ?? name);
      },
    };
  }

  /** Every model plus the supervisor (GET /metrics on the gateway). */
  serviceMetrics(): MetricsSource | null {
    const source = this.#metrics?.serviceSource();
    if (!source) return null;
    return {
      ...source,
      text: () => {
        this.#countDropped();
        return source.text();
      },
    };
  }

  /** Commits every recorded row and closes the files (after the workers have stopped). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#countDropped();
    await Promise.all(
      [...this.#sinks.values()].map((s) =>
        s.store?.close().catch((err: unknown) => this.#log.error('audit trail close failed', { reason: toLmError(err).message })),
      ),
    );
    this.#metrics?.close();
  }

  #recordsOf(name: string): WorkerRecords {
    const current = () => {
      const store = this.#sinks.get(name)?.store;
      if (!store) throw new LmError('STORE_UNAVAILABLE', `the audit trail of ${name} is not open`);
      return store;
    };
    const unavailable = (err: unknown) => {
      const error = toLmError(err);
      throw error.code === 'INTERNAL' ? new LmError('STORE_UNAVAILABLE', `the audit trail of ${name} cannot be read: ${error.message}`, { cause: err }) : error;
    };
    return {
      requests: async (query: RequestQuery) => current().requests(query).catch(unavailable),
      events: async (query: EventQuery) => current().events(query).catch(unavailable),
    };
  }

  #countDropped(): void {
    const metrics = this.#metrics;
    for (const [name, sinks] of this.#sinks) {
      const dropped = sinks.store?.stats().dropped ?? 0;
      const fresh = dropped - sinks.dropped;
      if (fresh <= 0) continue;
      sinks.dropped = dropped;
      for (let i = 0; i < fresh; i++) metrics?.auditWriteError(sinks.model, name);
    }
  }
}
