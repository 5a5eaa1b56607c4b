/**
 * Every metric the service exports, in one table: its name, type, labels and meaning. The
 * registry is built from it, the README's table is generated from it (`metricsTableMarkdown`)
 * and the tests read it. Each name has the `lmserve_` prefix; every series carries the `model`
 * label (MODEL_NAME of the worker) and, except `lmserve_audit_write_errors_total` when the
 * caller does not know it, the `worker` label (the worker's name, envs/worker.<name>.env): two
 * workers may serve the same model, and their gauges must stay distinct series.
 */
import type { WorkerState } from '@lmserve/protocol';

export type MetricType = 'counter' | 'gauge' | 'histogram';

/** Where a metric's values come from. */
export type MetricSource = 'request' | 'event' | 'workers' | 'host' | 'call';

export interface MetricDefinition {
  name: string;
  type: MetricType;
  labels: readonly string[];
  help: string;
  source: MetricSource;
  /** Histograms only: the upper bounds of the buckets, seconds. */
  buckets?: readonly number[];
}

/**
 * Time to first token, request duration and queue wait: from 5 ms (a cached prompt on a GPU)
 * to 10 minutes (a long generation on a CPU), about three buckets per decade.
 */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120,
  180, 300, 600,
]);

/** Gaps between tokens: 1 ms (a small model on a GPU) to 5 s (a loaded CPU host). */
export const INTER_TOKEN_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5,
  5,
]);

/** Every WorkerState, for `lmserve_worker_state` (one series per state, 1 for the current one). */
export const WORKER_STATES = [
  'stopped',
  'starting',
  'ready',
  'stopping',
  'restarting',
  'failed',
  'model-missing',
  'downloading',
  'invalid-config',
] as const satisfies readonly WorkerState[];

// Fails to compile when protocol adds a state this list lacks.
type MissingState = Exclude<WorkerState, (typeof WORKER_STATES)[number]>;
const allStatesListed: [MissingState] extends [never] ? true : MissingState = true;
void allStatesListed;

const MW = ['model', 'worker'] as const;

const DEFINITIONS = [
  // --- from each RequestEnd ---
  {
    name: 'lmserve_requests_total',
    type: 'counter',
    labels: [...MW, 'transport', 'status'],
    help: 'Requests ended, by transport and status (completed, failed, cancelled, rejected).',
    source: 'request',
  },
  {
    name: 'lmserve_prompt_tokens_total',
    type: 'counter',
    labels: MW,
    help: 'Prompt tokens of ended requests (usage.tokensIn).',
    source: 'request',
  },
  {
    name: 'lmserve_prompt_cached_tokens_total',
    type: 'counter',
    labels: MW,
    help: "Prompt tokens of ended requests that came from a cache instead of a prefill (usage.cachedTokens): the slot's own cells, another slot's copy, or the host-memory prompt cache (CACHE_RAM).",
    source: 'request',
  },
  {
    name: 'lmserve_generation_tokens_total',
    type: 'counter',
    labels: MW,
    help: 'Tokens returned to clients (usage.tokensOut of each ended request).',
    source: 'request',
  },
  {
    name: 'lmserve_time_to_first_token_seconds',
    type: 'histogram',
    labels: MW,
    help: 'Time from the request reaching the core to its first token (requests that produced one).',
    source: 'request',
    buckets: LATENCY_BUCKETS_SECONDS,
  },
  {
    name: 'lmserve_inter_token_latency_seconds',
    type: 'histogram',
    labels: MW,
    help: 'Gaps between consecutive tokens as relayed to clients (every sample of each request).',
    source: 'request',
    buckets: INTER_TOKEN_BUCKETS_SECONDS,
  },
  {
    name: 'lmserve_request_duration_seconds',
    type: 'histogram',
    labels: [...MW, 'transport'],
    help: 'Total time of each ended request, whatever its status.',
    source: 'request',
    buckets: LATENCY_BUCKETS_SECONDS,
  },
  {
    name: 'lmserve_queue_wait_seconds',
    type: 'histogram',
    labels: MW,
    help: "Time a request waited in the engine's queue before a slot took it (requests that reached the engine).",
    source: 'request',
    buckets: LATENCY_BUCKETS_SECONDS,
  },
  // --- read from the workers at scrape time ---
  {
    name: 'lmserve_requests_in_flight',
    type: 'gauge',
    labels: MW,
    help: 'Requests the supervisor has sent to the worker and not yet ended (queued, running or in transit).',
    source: 'workers',
  },
  {
    name: 'lmserve_requests_running',
    type: 'gauge',
    labels: MW,
    help: "Requests in flight that are not waiting in the engine's queue (in_flight - queued, at least 0).",
    source: 'workers',
  },
  {
    name: 'lmserve_requests_waiting',
    type: 'gauge',
    labels: MW,
    help: "Requests waiting in the engines' queues for a slot.",
    source: 'workers',
  },
  {
    name: 'lmserve_slots_busy',
    type: 'gauge',
    labels: MW,
    help: 'Sequence slots decoding a request, all replicas added up.',
    source: 'workers',
  },
  {
    name: 'lmserve_slots_capacity',
    type: 'gauge',
    labels: MW,
    // Not `lmserve_slots_total`: a gauge must not end in _total (promtool's lint; Prometheus naming).
    help: 'Sequence slots, all replicas added up (WorkerSnapshot.slotsTotal).',
    source: 'workers',
  },
  {
    name: 'lmserve_kv_cache_usage_ratio',
    type: 'gauge',
    labels: MW,
    help: 'Share of the KV cache cells in use, 0 to 1.',
    source: 'workers',
  },
  {
    name: 'lmserve_prompt_cache_bytes',
    type: 'gauge',
    labels: MW,
    help: 'Host memory the worker\'s prompt caches hold (saved prompt states, CACHE_RAM), all replicas.',
    source: 'workers',
  },
  {
    name: 'lmserve_worker_up',
    type: 'gauge',
    labels: MW,
    help: '1 when the worker is ready to serve, else 0.',
    source: 'workers',
  },
  {
    name: 'lmserve_worker_state',
    type: 'gauge',
    labels: [...MW, 'state'],
    help: "The worker's lifecycle state: one series per state, 1 for the current one, 0 for the others.",
    source: 'workers',
  },
  {
    name: 'lmserve_nats_connected',
    type: 'gauge',
    labels: MW,
    help: "1 while the worker's NATS connection is up, 0 while it is down (no series when NATS_URL is empty).",
    source: 'workers',
  },
  {
    name: 'lmserve_jetstream_pending',
    type: 'gauge',
    labels: MW,
    help: "Jobs waiting in the worker's JetStream consumer, not yet delivered (no series when JETSTREAM=off).",
    source: 'workers',
  },
  {
    name: 'lmserve_model_download_bytes',
    type: 'gauge',
    labels: MW,
    help: "Bytes of the worker's model file on disk while it downloads, the resumed part included (no series when no download runs).",
    source: 'workers',
  },
  {
    name: 'lmserve_model_download_total_bytes',
    type: 'gauge',
    labels: MW,
    help: "Size of the model file being downloaded, as the server announced it (no series while unknown or when no download runs).",
    source: 'workers',
  },
  {
    name: 'lmserve_model_download_bytes_per_second',
    type: 'gauge',
    labels: MW,
    help: 'Download rate over the last few seconds (no series when no download runs).',
    source: 'workers',
  },
  // --- from lifecycle events ---
  {
    name: 'lmserve_model_load_seconds',
    type: 'gauge',
    labels: MW,
    help: "Seconds the worker's last successful model load took (the model.loaded event).",
    source: 'event',
  },
  {
    name: 'lmserve_model_downloads_total',
    type: 'counter',
    labels: [...MW, 'result'],
    help: 'Model downloads that ended, by result (completed, failed), per waiting worker (model.download.completed and .failed events).',
    source: 'event',
  },
  {
    name: 'lmserve_worker_restarts_total',
    type: 'counter',
    labels: MW,
    help: 'Restarts of the worker after a crash (restart events).',
    source: 'event',
  },
  // --- called by the supervisor ---
  {
    name: 'lmserve_audit_write_errors_total',
    type: 'counter',
    labels: MW,
    help: 'Request ends the audit store failed to write (the worker label is absent when the caller did not give it).',
    source: 'call',
  },
  // --- the model host processes, from each worker's last stats message ---
  {
    name: 'lmserve_host_cpu_seconds_total',
    type: 'counter',
    labels: MW,
    help: 'CPU time (user + system) of the model host process; starts again at 0 with a new host.',
    source: 'host',
  },
  {
    name: 'lmserve_host_resident_memory_bytes',
    type: 'gauge',
    labels: MW,
    help: 'Resident set size of the model host process.',
    source: 'host',
  },
  {
    name: 'lmserve_host_heap_used_bytes',
    type: 'gauge',
    labels: MW,
    help: 'V8 heap in use in the model host process.',
    source: 'host',
  },
  {
    name: 'lmserve_host_event_loop_lag_seconds',
    type: 'gauge',
    labels: MW,
    help: "Mean event-loop delay of the model host process since its previous report.",
    source: 'host',
  },
] as const satisfies readonly MetricDefinition[];

export type MetricName = (typeof DEFINITIONS)[number]['name'];

/** Every metric of the service (the supervisor's process metrics aside), in exposition order. */
export const METRICS: ReadonlyArray<MetricDefinition & { name: MetricName }> = DEFINITIONS;

/** Prefix of the supervisor's own process metrics (prom-client's default metrics). */
export const SUPERVISOR_PREFIX = 'lmserve_supervisor_';

/** The README's metrics table. */
export function metricsTableMarkdown(): string {
  const rows = METRICS.map((m) => {
    const labels = m.labels.map((l) => `\`${l}\``).join(', ');
    return `| \`${m.name}\` | ${m.type} | ${labels} | ${m.help.replace(/\|/g, '\\|')} |`;
  });
  return [
    '| name | type | labels | meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    `| \`${SUPERVISOR_PREFIX}*\` | prom-client's default metrics | theirs (no \`model\`) | The supervisor process: CPU, memory, heap, event-loop lag, GC, handles; in \`allText\` only. |`,
  ].join('\n');
}
