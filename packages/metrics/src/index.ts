export { ServiceMetrics, METRICS_CONTENT_TYPE, supervisorProcessRegistry } from './service-metrics.js';
export type { ServiceMetricsOptions, WorkerSnapshot } from './service-metrics.js';
/** Re-exported from the protocol (the host's stats message carries it). */
export type { HostProcessStats } from '@lmserve/protocol';
export {
  METRICS,
  LATENCY_BUCKETS_SECONDS,
  INTER_TOKEN_BUCKETS_SECONDS,
  WORKER_STATES,
  SUPERVISOR_PREFIX,
  metricsTableMarkdown,
} from './definitions.js';
export type { MetricDefinition, MetricName, MetricSource, MetricType } from './definitions.js';
export { renderFamilies, filterFamily, escapeHelp, escapeLabelValue, formatValue } from './exposition.js';
export type { MetricFamily, MetricSample } from './exposition.js';
export { BucketHistogram, HistogramSeries } from './histogram.js';
