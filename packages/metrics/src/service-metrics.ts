/**
 * The service's Prometheus metrics. Subscribes to the ServiceObserver (request ends, lifecycle
 * events), reads the workers at scrape time, and writes the exposition text of one model (a
 * model port's GET /metrics) or of the whole service (the gateway's GET /metrics).
 *
 * One prom-client Registry holds every model-labelled metric; a model's text is that registry's
 * samples whose `model` label matches. The supervisor's own process metrics (prom-client's
 * default metrics, prefix `lmserve_supervisor_`) live in a second registry, created once per
 * process, and only appear in `allText`. Both outputs are written by `renderFamilies` from the
 * registries' JSON, so a model's lines are exactly its lines in `allText` (and NaN is written
 * `NaN`, where prom-client's own writer says `Nan`).
 *
 * A subscriber never throws into the observer: every handler catches and reports through the
 * optional logger. Nothing here throws for an unknown worker or model.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { MetricsSource, RequestEnd, ServiceEvent, ServiceObserver, TransportStatus } from '@lmserve/core';
import type { HostProcessStats, Logger, WorkerState } from '@lmserve/protocol';
import { LOOP_LAG_SAMPLE_MS } from '@lmserve/protocol';
import { METRICS, SUPERVISOR_PREFIX, WORKER_STATES, type MetricDefinition, type MetricName } from './definitions.js';
import { filterFamily, renderFamilies, type MetricFamily } from './exposition.js';
import { BucketHistogram, type HistogramSeries } from './histogram.js';

/** What the metrics read from one worker at scrape time. */
export interface WorkerSnapshot {
  /** Worker name (envs/worker.<name>.env): the `worker` label. */
  name: string;
  /** MODEL_NAME: the `model` label. */
  model: string;
  state: WorkerState;
  /** Ready to serve (`lmserve_worker_up`). */
  up: boolean;
  slotsBusy: number;
  slotsTotal: number;
  /** Requests waiting in the engines' queues. */
  queued: number;
  /** Requests the supervisor sent to the worker and has not seen end. */
  inFlight: number;
  kvUsedRatio: number;
  /** Host memory the worker's prompt caches hold (`lmserve_prompt_cache_bytes`); absent or null: no report. */
  promptCacheBytes?: number | null;
  restarts: number;
  /** The host process's last report (HostStats.process); null when there is no host or no report yet. */
  host: HostProcessStats | null;
  /**
   * What the transports report for the worker, by transport name (`nats`: `connected`; `jobs`:
   * `pending`); absent or {}: none reports anything.
   */
  transports?: Record<string, TransportStatus>;
  /** The model file's download while one runs (`lmserve_model_download_*`); absent or null: none. */
  download?: { bytes: number; totalBytes: number | null; bytesPerSecond: number } | null;
}

export interface ServiceMetricsOptions {
  observer: ServiceObserver;
  /** Read once per scrape (and on an event for a worker not seen yet). */
  workers: () => WorkerSnapshot[];
  /** Where handler failures are reported (they never reach the observer). */
  log?: Logger;
}

export const METRICS_CONTENT_TYPE: string = Registry.PROMETHEUS_CONTENT_TYPE;

let supervisorRegistry: Registry | undefined;


/**
 * The supervisor process's metrics (prom-client's default metrics with the `lmserve_supervisor_`
 * prefix), registered once per process whatever the number of ServiceMetrics.
 */
export function supervisorProcessRegistry(): Registry {
  if (!supervisorRegistry) {
    const registry = new Registry();
    // The event-loop lag sampler once a second instead of prom-client's 10 ms (LOOP_LAG_SAMPLE_MS
    // says why); the scrape's own `lag_seconds` probe is unaffected.
    collectDefaultMetrics({ prefix: SUPERVISOR_PREFIX, register: registry, eventLoopMonitoringPrecision: LOOP_LAG_SAMPLE_MS });
    supervisorRegistry = registry;
  }
  return supervisorRegistry;
}

/**
 * prom-client names three of its default gauges `nodejs_active_*_total`: Prometheus reserves
 * `_total` for counters (promtool flags them). Each is the sum of the same family without the
 * suffix (by type), which stays, so they are left out.
 */
function conventionalName(family: MetricFamily): boolean {
  return family.type === 'counter' || !family.name.endsWith('_total');
}

type Labels = Readonly<Record<string, string>>;

/** Everything the request-end path needs for one (worker, model), resolved once. */
interface WorkerSeries {
  model: string;
  labels: Labels;
  ttft: HistogramSeries;
  interToken: HistogramSeries;
  queueWait: HistogramSeries;
  /** By transport. */
  duration: Map<string, HistogramSeries>;
  /** By transport, then status: the label object of lmserve_requests_total. */
  requests: Map<string, Map<string, Labels>>;
}

function definition(name: MetricName): MetricDefinition {
  const found = METRICS.find((m) => m.name === name);
  if (!found) throw new Error(`no metric ${name}`);
  return found;
}

/** A finite number, else null. */
function finite(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** A transport's status in a snapshot, when it is a well-formed object. */
function transport(w: WorkerSnapshot, name: string): Record<string, unknown> | null {
  const status = (w.transports as Record<string, unknown> | undefined)?.[name];
  return typeof status === 'object' && status !== null ? (status as Record<string, unknown>) : null;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : 'unknown';
}

export class ServiceMetrics {
  readonly contentType: string = METRICS_CONTENT_TYPE;

  readonly #workers: () => WorkerSnapshot[];
  readonly #log: Logger | undefined;
  readonly #registry = new Registry();
  readonly #unsubscribe: Array<() => void>;

  readonly #requestsTotal: Counter<string>;
  readonly #promptTokens: Counter<string>;
  readonly #cachedTokens: Counter<string>;
  readonly #generationTokens: Counter<string>;
  readonly #ttft: BucketHistogram;
  readonly #interToken: BucketHistogram;
  readonly #duration: BucketHistogram;
  readonly #queueWait: BucketHistogram;
  readonly #loadSeconds: Gauge<string>;
  readonly #restarts: Counter<string>;
  readonly #downloads: Counter<string>;
  readonly #auditErrors: Counter<string>;

  /** `worker\0model` -> the request-end path's series. */
  readonly #series = new Map<string, WorkerSeries>();
  /** worker -> the series of its latest model (the one lookup of the usual request end). */
  readonly #latest = new Map<string, WorkerSeries>();
  /** worker -> model, from the snapshots and the request ends (events name only the worker). */
  readonly #modelOf = new Map<string, string>();
  /** `worker\0model` pairs whose counters have been created at 0. */
  readonly #initialized = new Set<string>();
  /** The snapshot of the scrape in progress (taken once, read by every gauge's collect). */
  #scrape: WorkerSnapshot[] | null = null;
  #failures = 0;

  constructor(options: ServiceMetricsOptions) {
    this.#workers = options.workers;
    this.#log = options.log;
    const registers = [this.#registry];
    const counter = (name: MetricName, collect?: (self: Counter<string>) => void): Counter<string> => {
      const d = definition(name);
      const metric: Counter<string> = new Counter({
        name: d.name,
        help: d.help,
        labelNames: d.labels,
        registers,
        ...(collect ? { collect: () => this.#guard(`collect ${d.name}`, () => collect(metric)) } : {}),
      });
      return metric;
    };
    const gauge = (name: MetricName, collect?: (self: Gauge<string>) => void): Gauge<string> => {
      const d = definition(name);
      const metric: Gauge<string> = new Gauge({
        name: d.name,
        help: d.help,
        labelNames: d.labels,
        registers,
        ...(collect ? { collect: () => this.#guard(`collect ${d.name}`, () => collect(metric)) } : {}),
      });
      return metric;
    };
    const histogram = (name: MetricName): BucketHistogram => {
      const d = definition(name);
      const metric = new BucketHistogram({ name: d.name, help: d.help, labelNames: d.labels, buckets: d.buckets ?? [] });
      // BucketHistogram has the shape a Registry reads (name, help, type, get, reset).
      this.#registry.registerMetric(metric as unknown as Counter<string>);
      return metric;
    };

    this.#requestsTotal = counter('lmserve_requests_total');
    this.#promptTokens = counter('lmserve_prompt_tokens_total');
    this.#cachedTokens = counter('lmserve_prompt_cached_tokens_total');
    this.#generationTokens = counter('lmserve_generation_tokens_total');
    this.#ttft = histogram('lmserve_time_to_first_token_seconds');
    this.#interToken = histogram('lmserve_inter_token_latency_seconds');
    this.#duration = histogram('lmserve_request_duration_seconds');
    this.#queueWait = histogram('lmserve_queue_wait_seconds');

    const perWorker = (name: MetricName, value: (w: WorkerSnapshot) => number | null) =>
      gauge(name, (self) => {
        self.reset();
        for (const w of this.#snapshot()) {
          const v = value(w);
          if (v !== null) self.set({ model: w.model, worker: w.name }, v);
        }
      });
    perWorker('lmserve_requests_in_flight', (w) => finite(w.inFlight));
    perWorker('lmserve_requests_running', (w) => {
      const inFlight = finite(w.inFlight);
      return inFlight === null ? null : Math.max(0, inFlight - (finite(w.queued) ?? 0));
    });
    perWorker('lmserve_requests_waiting', (w) => finite(w.queued));
    perWorker('lmserve_slots_busy', (w) => finite(w.slotsBusy));
    perWorker('lmserve_slots_capacity', (w) => finite(w.slotsTotal));
    perWorker('lmserve_kv_cache_usage_ratio', (w) => finite(w.kvUsedRatio));
    perWorker('lmserve_prompt_cache_bytes', (w) => finite(w.promptCacheBytes));
    perWorker('lmserve_worker_up', (w) => (w.up === true ? 1 : 0));
    perWorker('lmserve_nats_connected', (w) => {
      const nats = transport(w, 'nats');
      return nats ? (nats.connected === true ? 1 : 0) : null;
    });
    perWorker('lmserve_jetstream_pending', (w) => finite(transport(w, 'jobs')?.pending));
    perWorker('lmserve_model_download_bytes', (w) => finite(w.download?.bytes));
    perWorker('lmserve_model_download_total_bytes', (w) => finite(w.download?.totalBytes));
    perWorker('lmserve_model_download_bytes_per_second', (w) => finite(w.download?.bytesPerSecond));
    gauge('lmserve_worker_state', (self) => {
      self.reset();
      for (const w of this.#snapshot()) {
        const current = text(w.state);
        for (const state of WORKER_STATES) self.set({ model: w.model, worker: w.name, state }, state === current ? 1 : 0);
        if (!(WORKER_STATES as readonly string[]).includes(current)) self.set({ model: w.model, worker: w.name, state: current }, 1);
      }
    });

    this.#loadSeconds = gauge('lmserve_model_load_seconds');
    this.#downloads = counter('lmserve_model_downloads_total');
    this.#restarts = counter('lmserve_worker_restarts_total');
    this.#auditErrors = counter('lmserve_audit_write_errors_total');

    counter('lmserve_host_cpu_seconds_total', (self) => {
      self.reset();
      for (const w of this.#snapshot()) {
        const v = finite(w.host?.cpuSecondsTotal);
        if (v !== null && v >= 0) self.inc({ model: w.model, worker: w.name }, v);
      }
    });
    const perHost = (name: MetricName, value: (h: HostProcessStats) => unknown) =>
      perWorker(name, (w) => (w.host ? finite(value(w.host)) : null));
    perHost('lmserve_host_resident_memory_bytes', (h) => h.residentBytes);
    perHost('lmserve_host_heap_used_bytes', (h) => h.heapUsedBytes);
    perHost('lmserve_host_event_loop_lag_seconds', (h) => h.eventLoopLagSeconds);

    supervisorProcessRegistry();
    this.#unsubscribe = [
      options.observer.onRequest((end) => this.#guard('request end', () => this.#onRequest(end))),
      options.observer.onEvent((event) => this.#guard('event', () => this.#onEvent(event))),
    ];
  }

  /** One failed write of a request end to the audit store (`lmserve_audit_write_errors_total`). */
  auditWriteError(model: string, worker?: string): void {
    this.#guard('audit write error', () => {
      const labels: Record<string, string> = { model: text(model) };
      if (typeof worker === 'string') labels.worker = worker;
      this.#auditErrors.inc(labels, 1);
    });
  }

  /** The exposition text of one model: its series (every worker serving it) and its hosts' process metrics. */
  async modelText(model: string): Promise<string> {
    const families = (await this.#withSnapshot(() => this.#registry.getMetricsAsJSON())) as unknown as MetricFamily[];
    return renderFamilies(families.map((family) => filterFamily(family, 'model', model)));
  }

  /** Every model's series, then the supervisor process's metrics: the whole service in one scrape. */
  async allText(): Promise<string> {
    const [models, supervisor] = await Promise.all([
      this.#withSnapshot(() => this.#registry.getMetricsAsJSON()),
      supervisorProcessRegistry().getMetricsAsJSON(),
    ]);
    return renderFamilies([...(models as unknown as MetricFamily[]), ...(supervisor as unknown as MetricFamily[]).filter(conventionalName)]);
  }

  /** A model port's GET /metrics source (the core's MetricsSource): `modelText(model)`. */
  modelSource(model: string): MetricsSource {
    return { contentType: this.contentType, text: () => this.modelText(model) };
  }

  /** The gateway's GET /metrics source: `allText()`. */
  serviceSource(): MetricsSource {
    return { contentType: this.contentType, text: () => this.allText() };
  }

  /** Unsubscribes from the observer; the text methods keep working with what was counted. */
  close(): void {
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
  }

  // ---- request ends: O(inter-token samples), no allocation once a worker's series exist ----

  #onRequest(end: RequestEnd): void {
    const series = this.#seriesOf(text(end.worker), text(end.model));
    const transport = text(end.transport);
    this.#requestsTotal.inc(this.#requestLabels(series, transport, text(end.status)), 1);

    const tokensIn = finite(end.usage?.tokensIn);
    if (tokensIn !== null && tokensIn >= 0) this.#promptTokens.inc(series.labels, tokensIn);
    const cached = finite(end.usage?.cachedTokens);
    if (cached !== null && cached >= 0) this.#cachedTokens.inc(series.labels, cached);
    const tokensOut = finite(end.usage?.tokensOut);
    if (tokensOut !== null && tokensOut >= 0) this.#generationTokens.inc(series.labels, tokensOut);

    const timings = end.timings;
    if (timings) {
      const ttft = finite(timings.ttftMs);
      if (ttft !== null) series.ttft.observe(ttft / 1000);
      const queue = finite(timings.queueMs);
      if (queue !== null) series.queueWait.observe(queue / 1000);
      const total = finite(timings.totalMs);
      if (total !== null) {
        let duration = series.duration.get(transport);
        if (!duration) {
          duration = this.#duration.series({ ...series.labels, transport });
          series.duration.set(transport, duration);
        }
        duration.observe(total / 1000);
      }
    }

    const gaps: unknown = end.interTokenMs;
    if (Array.isArray(gaps)) series.interToken.observeAll(gaps, 1000);
  }

  #seriesOf(worker: string, model: string): WorkerSeries {
    let series = this.#latest.get(worker);
    if (series && series.model === model) return series;
    const key = `${worker}\u0000${model}`;
    series = this.#series.get(key);
    if (!series) {
      const labels: Labels = Object.freeze({ model, worker });
      series = {
        model,
        labels,
        ttft: this.#ttft.series(labels),
        interToken: this.#interToken.series(labels),
        queueWait: this.#queueWait.series(labels),
        duration: new Map(),
        requests: new Map(),
      };
      this.#series.set(key, series);
    }
    this.#latest.set(worker, series);
    this.#modelOf.set(worker, model);
    return series;
  }

  #requestLabels(series: WorkerSeries, transport: string, status: string): Labels {
    let byStatus = series.requests.get(transport);
    if (!byStatus) {
      byStatus = new Map();
      series.requests.set(transport, byStatus);
    }
    let labels = byStatus.get(status);
    if (!labels) {
      labels = Object.freeze({ ...series.labels, transport, status });
      byStatus.set(status, labels);
    }
    return labels;
  }

  // ---- lifecycle events ----

  #onEvent(event: ServiceEvent): void {
    const download = event.code === 'model.download.completed' || event.code === 'model.download.failed';
    if (event.code !== 'model.loaded' && event.code !== 'restart' && !download) return;
    if (typeof event.worker !== 'string') return;
    const labels = { model: this.#modelOfWorker(event.worker), worker: event.worker };
    if (download) {
      this.#downloads.inc({ ...labels, result: event.code === 'model.download.completed' ? 'completed' : 'failed' }, 1);
    } else if (event.code === 'model.loaded') {
      const seconds = finite(event.data?.loadSeconds);
      if (seconds !== null && seconds >= 0) this.#loadSeconds.set(labels, seconds);
    } else {
      this.#restarts.inc(labels, 1);
    }
  }

  /** The worker's model: known from a snapshot or a request end, else read now, else the worker's name. */
  #modelOfWorker(worker: string): string {
    let model = this.#modelOf.get(worker);
    if (model === undefined) {
      this.#readWorkers();
      model = this.#modelOf.get(worker);
    }
    return model ?? worker;
  }

  // ---- scrape-time reads ----

  /** Runs `read` (whose collects all start synchronously) with one snapshot of the workers. */
  #withSnapshot<T>(read: () => Promise<T>): Promise<T> {
    this.#scrape = this.#readWorkers();
    try {
      return read();
    } finally {
      this.#scrape = null;
    }
  }

  #snapshot(): WorkerSnapshot[] {
    return this.#scrape ?? this.#readWorkers();
  }

  /** workers(), keeping only well-formed entries; [] when it throws. */
  #readWorkers(): WorkerSnapshot[] {
    let list: unknown;
    try {
      list = this.#workers();
    } catch (err) {
      this.#report('workers()', err);
      return [];
    }
    if (!Array.isArray(list)) return [];
    const out: WorkerSnapshot[] = [];
    for (const w of list as unknown[]) {
      if (typeof w !== 'object' || w === null) continue;
      const { name, model } = w as { name?: unknown; model?: unknown };
      if (typeof name !== 'string' || typeof model !== 'string') continue;
      out.push(w as WorkerSnapshot);
      if (this.#modelOf.get(name) !== model) this.#modelOf.set(name, model);
      const key = `${name}\u0000${model}`;
      if (!this.#initialized.has(key)) {
        // Counters exist at 0 from the first scrape on, so the first increase shows in rate().
        this.#initialized.add(key);
        const labels = { model, worker: name };
        this.#promptTokens.inc(labels, 0);
        this.#generationTokens.inc(labels, 0);
        this.#restarts.inc(labels, 0);
        this.#auditErrors.inc(labels, 0);
      }
    }
    return out;
  }

  // ---- failures ----

  #guard(where: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#report(where, err);
    }
  }

  /** Reports the 1st, 2nd, 4th, 8th... failure: a broken input cannot flood the log. */
  #report(where: string, err: unknown): void {
    this.#failures += 1;
    if ((this.#failures & (this.#failures - 1)) !== 0) return;
    try {
      this.#log?.warn('metrics: a handler failed', {
        where,
        failures: this.#failures,
        error: err instanceof Error ? err.message : String(err),
      });
    } catch {
      // the log itself failed: nothing left to report to
    }
  }
}
