/**
 * A strict reader of the Prometheus text exposition format (0.0.4) for the metrics tests. It
 * throws, naming the line, on anything a Prometheus server would refuse or a careful reader
 * would flag:
 *   - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not __*),
 *     label values in double quotes with only \\, \" and \n escapes, no duplicate label names;
 *   - values as Go's ParseFloat reads them (NaN, +Inf, -Inf in any case), optional integer timestamp;
 *   - at most one HELP and one TYPE per family, both before its first sample, every sample in a
 *     family that has them, a family's samples in one group, no repeated series;
 *   - counters' samples carry the family name; histograms only _bucket (with le), _sum, _count;
 *   - for each histogram series: le strictly increasing, counts non-decreasing, a +Inf bucket
 *     equal to _count, and _sum and _count present.
 */

export type Labels = Record<string, string>;

export interface Sample {
  name: string;
  labels: Labels;
  value: number;
  line: number;
}

export interface Family {
  name: string;
  /** null until its TYPE line. */
  type: string | null;
  /** null until its HELP line. */
  help: string | null;
  samples: Sample[];
}

export interface Exposition {
  families: Map<string, Family>;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const FLOAT = /^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?(?:[pP][+-]?\d+)?|inf|infinity|nan)$/i;

export function parseValue(text: string, where: string): number {
  if (!FLOAT.test(text) || /^[+-]nan$/i.test(text)) throw new Error(`${where}: bad value ${JSON.stringify(text)}`);
  const lower = text.toLowerCase();
  if (lower.endsWith('nan')) return NaN;
  if (lower.endsWith('inf') || lower.endsWith('infinity')) return lower.startsWith('-') ? -Infinity : Infinity;
  const value = Number(text);
  if (Number.isNaN(value)) throw new Error(`${where}: bad value ${JSON.stringify(text)}`);
  return value;
}

/** Reads `{a="1",b="2"}` starting at text[start] === '{'; returns the labels and the index after '}'. */
function parseLabels(text: string, start: number, where: string): { labels: Labels; end: number } {
  const labels: Labels = {};
  let i = start + 1;
  for (;;) {
    if (text[i] === '}') return { labels, end: i + 1 };
    const nameMatch = /^[^=}]*/.exec(text.slice(i));
    const name = nameMatch ? nameMatch[0] : '';
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (name.startsWith('__')) throw new Error(`${where}: reserved label name ${name}`);
    if (Object.prototype.hasOwnProperty.call(labels, name)) throw new Error(`${where}: label ${name} twice`);
    i += name.length;
    if (text[i] !== '=' || text[i + 1] !== '"') throw new Error(`${where}: expected =" after label ${name}`);
    i += 2;
    let value = '';
    for (;;) {
      const c = text[i];
      if (c === undefined) throw new Error(`${where}: unterminated value of label ${name}`);
      if (c === '"') break;
      if (c === '\n') throw new Error(`${where}: raw newline in label ${name}`);
      if (c === '\\') {
        const next = text[i + 1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else throw new Error(`${where}: bad escape \\${next ?? ''} in label ${name}`);
        i += 2;
        continue;
      }
      value += c;
      i += 1;
    }
    labels[name] = value;
    i += 1; // closing quote
    if (text[i] === ',') {
      i += 1;
      continue;
    }
    if (text[i] !== '}') throw new Error(`${where}: expected , or } after label ${name}`);
  }
}

function seriesKey(name: string, labels: Labels, without?: string): string {
  const keys = Object.keys(labels).filter((k) => k !== without).sort();
  return `${name}{${keys.map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}

/** The family a sample belongs to, given the TYPEs declared so far. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = families.get(name.slice(0, -suffix.length));
    if (base && (base.type === 'histogram' || (base.type === 'summary' && suffix !== '_bucket'))) return base;
  }
  return undefined;
}

export function parseExposition(text: string): Exposition {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the text does not end with a newline');
  const families = new Map<string, Family>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  const closed = new Set<string>();
  let current: string | null = null;
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line.slice(0, 120))})`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      let family = families.get(name);
      if (!family) {
        if (closed.has(name) || samples.some((s) => s.name === name)) throw new Error(`${where}: ${kind} of ${name} after its samples`);
        family = { name, type: null, help: null, samples: [] };
        families.set(name, family);
      }
      if (family.samples.length > 0) throw new Error(`${where}: ${kind} of ${name} after its samples`);
      if (kind === 'HELP') {
        if (family.help !== null) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\(?![\\n])/.test(rest)) throw new Error(`${where}: bad escape in HELP`);
        family.help = rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      } else {
        if (family.type !== null) throw new Error(`${where}: second TYPE for ${name}`);
        if (!TYPES.has(rest.trim())) throw new Error(`${where}: bad type ${rest}`);
        family.type = rest.trim();
      }
      return;
    }
    const nameMatch = /^[^\s{]+/.exec(line);
    const name = nameMatch ? nameMatch[0] : '';
    if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${JSON.stringify(name)}`);
    let i = name.length;
    let labels: Labels = {};
    if (line[i] === '{') {
      const parsed = parseLabels(line, i, where);
      labels = parsed.labels;
      i = parsed.end;
    }
    const rest = line.slice(i);
    const m = /^ +(\S+)(?: +(-?\d+))?$/.exec(rest);
    if (!m) throw new Error(`${where}: expected " value [timestamp]" after the labels`);
    const value = parseValue(m[1] as string, where);
    const family = familyOf(name, families);
    if (!family) throw new Error(`${where}: sample ${name} before (or without) its family's TYPE`);
    if (family.type === null || family.help === null) throw new Error(`${where}: family ${family.name} lacks HELP or TYPE`);
    if (current !== family.name) {
      if (closed.has(family.name)) throw new Error(`${where}: samples of ${family.name} are not in one group`);
      if (current !== null) closed.add(current);
      current = family.name;
    }
    if (family.type === 'counter' || family.type === 'gauge' || family.type === 'untyped') {
      if (name !== family.name) throw new Error(`${where}: ${family.type} sample named ${name} in family ${family.name}`);
    }
    if (family.type === 'histogram') {
      if (name === family.name) throw new Error(`${where}: histogram sample without _bucket/_sum/_count`);
      if (name.endsWith('_bucket') !== Object.prototype.hasOwnProperty.call(labels, 'le')) {
        throw new Error(`${where}: le must be on _bucket samples and only there`);
      }
    }
    const key = seriesKey(name, labels);
    if (seen.has(key)) throw new Error(`${where}: series ${key} twice`);
    seen.add(key);
    const sample = { name, labels, value, line: index + 1 };
    family.samples.push(sample);
    samples.push(sample);
  });
  for (const family of families.values()) {
    if (family.type === null || family.help === null) throw new Error(`family ${family.name} lacks HELP or TYPE`);
    if (family.type === 'histogram') checkHistogram(family);
  }
  return { families, samples };
}

function checkHistogram(family: Family): void {
  const groups = new Map<string, { buckets: Sample[]; sum?: Sample; count?: Sample }>();
  const group = (s: Sample) => {
    const key = seriesKey('', s.labels, 'le');
    let g = groups.get(key);
    if (!g) {
      g = { buckets: [] };
      groups.set(key, g);
    }
    return g;
  };
  for (const s of family.samples) {
    if (s.name === `${family.name}_bucket`) group(s).buckets.push(s);
    else if (s.name === `${family.name}_sum`) group(s).sum = s;
    else if (s.name === `${family.name}_count`) group(s).count = s;
    else throw new Error(`line ${s.line}: ${s.name} in histogram ${family.name}`);
  }
  for (const [key, g] of groups) {
    const where = `histogram ${family.name}${key}`;
    if (g.buckets.length === 0) throw new Error(`${where}: no buckets`);
    if (!g.sum || !g.count) throw new Error(`${where}: _sum or _count missing`);
    let previousLe = -Infinity;
    let previousCount = 0;
    for (const b of g.buckets) {
      const le = parseValue(b.labels.le as string, `line ${b.line}`);
      if (!(le > previousLe)) throw new Error(`line ${b.line}: ${where}: le ${b.labels.le} not above ${previousLe}`);
      if (b.value < previousCount) throw new Error(`line ${b.line}: ${where}: bucket count decreases`);
      if (!Number.isInteger(b.value) || b.value < 0) throw new Error(`line ${b.line}: ${where}: bucket count ${b.value}`);
      previousLe = le;
      previousCount = b.value;
    }
    const last = g.buckets[g.buckets.length - 1] as Sample;
    if (last.labels.le !== '+Inf') throw new Error(`${where}: the last bucket is not le="+Inf"`);
    if (last.value !== g.count.value) throw new Error(`${where}: +Inf bucket ${last.value} != _count ${g.count.value}`);
  }
}

/** The value of the one sample `name` whose labels include `labels`; undefined when none; throws when several. */
export function valueOf(exposition: Exposition, name: string, labels: Labels = {}): number | undefined {
  const found = find(exposition, name, labels);
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

/** Every sample named `name` whose labels include `labels`. */
export function find(exposition: Exposition, name: string, labels: Labels = {}): Sample[] {
  return exposition.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}
