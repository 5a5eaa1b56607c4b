/**
 * The Prometheus text format (version 0.0.4), for the outputs prom-client's Registry cannot
 * produce alone: one model's series out of a registry that holds every model's. Written to give
 * the same text as `Registry.metrics()` for the same samples.
 */

/** One sample as prom-client's `get()` / `getMetricsAsJSON()` return it. */
export interface MetricSample {
  /** `<name>_bucket`, `_sum`, `_count` for histograms; absent: the family name. */
  metricName?: string;
  labels: Record<string, string | number | undefined>;
  value: number;
}

/** One metric family as prom-client's `get()` / `getMetricsAsJSON()` return it (type as a string at run time). */
export interface MetricFamily {
  name: string;
  help: string;
  type: string;
  values: MetricSample[];
  aggregator?: string;
}

export function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function sampleLine(family: MetricFamily, sample: MetricSample): string {
  let labels = '';
  for (const name in sample.labels) {
    const value = sample.labels[name];
    if (value === undefined) continue;
    labels += `${labels === '' ? '' : ','}${name}="${escapeLabelValue(String(value))}"`;
  }
  return `${sample.metricName ?? family.name}${labels === '' ? '' : `{${labels}}`} ${formatValue(sample.value)}`;
}

/** HELP, TYPE and every sample of each family; families apart by a blank line, as prom-client writes them. */
export function renderFamilies(families: readonly MetricFamily[]): string {
  if (families.length === 0) return '';
  const blocks = families.map((family) => {
    const lines = [`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`];
    for (const sample of family.values) lines.push(sampleLine(family, sample));
    return lines.join('\n');
  });
  return `${blocks.join('\n\n')}\n`;
}

/** The family with only the samples whose `label` equals `value`. */
export function filterFamily(family: MetricFamily, label: string, value: string): MetricFamily {
  return { ...family, values: family.values.filter((s) => s.labels[label] === value) };
}
