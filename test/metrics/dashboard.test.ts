/**
 * dashboards/lmserve.json: a Grafana dashboard importable as is (a Prometheus datasource
 * variable, a `model` variable, panels on a 24-column grid that do not overlap), and every metric
 * any panel queries is one ServiceMetrics exports: each target's PromQL is reduced to its metric
 * names (labels matchers, ranges, grouping clauses, functions and keywords removed; histogram
 * _bucket/_sum/_count read as their histogram) and each must have samples in allText() after one
 * request of each status and one of each event.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ServiceObserver } from '@lmserve/core';
import { METRICS, ServiceMetrics } from '@lmserve/metrics';
import { parseExposition } from './exposition.js';
import { STATUSES, requestEnd, snapshot } from './fixtures.js';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');

interface Target {
  expr?: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown; definition?: string; datasource?: { uid?: string } }> };
}

const dashboard = JSON.parse(readFileSync(join(root, 'dashboards', 'lmserve.json'), 'utf8')) as Dashboard;

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** The metric names a PromQL expression selects. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // string literals (matcher values, "$model")
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries ([$__rate_interval], [1h:5m])
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // grouping labels
  const names: string[] = [];
  for (const m of stripped.matchAll(/(\$?)([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, dollar, name, call] = m as unknown as [string, string, string, string | undefined];
    if (dollar || call || KEYWORDS.has(name.toLowerCase())) continue;
    const before = stripped[(m.index ?? 0) - 1];
    if (before !== undefined && /[0-9.]/.test(before)) continue; // the exponent of a number (1e3)
    names.push(name);
  }
  return names;
}

const histograms = new Set(METRICS.filter((m) => m.type === 'histogram').map((m) => m.name as string));

function baseName(name: string): string {
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  return m && histograms.has(m[1] as string) ? (m[1] as string) : name;
}

test('the metric-name extraction reads PromQL as intended', () => {
  assert.deepEqual(
    metricNames('histogram_quantile(0.95, sum by (model, le) (rate(lmserve_ttft_bucket{model=~"$model", x="a{b}"}[$__rate_interval])))'),
    ['lmserve_ttft_bucket'],
  );
  assert.deepEqual(metricNames('a / on (x) group_left (y) b * 1e3 > bool 0'), ['a', 'b']);
  assert.deepEqual(metricNames('sum(increase(x_total[$__range])) / clamp_min(sum(y), 1)'), ['x_total', 'y']);
});

test('the dashboard is importable as is: schema, datasource variable, model variable, grid', () => {
  assert.equal(dashboard.title, 'lmserve');
  assert.ok(dashboard.uid);
  assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
  const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  const datasource = vars.get('datasource');
  assert.ok(datasource && datasource.type === 'datasource' && datasource.query === 'prometheus', 'a Prometheus datasource variable');
  const model = vars.get('model');
  assert.ok(model && model.type === 'query', 'a model query variable');
  assert.equal(model.definition, 'label_values(lmserve_worker_up, model)');
  assert.equal((model.query as { query?: string }).query, 'label_values(lmserve_worker_up, model)');
  assert.equal(model.datasource?.uid, '${datasource}');

  const panels = allPanels(dashboard.panels);
  const ids = panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const cells = new Map<string, string>();
  for (const p of panels) {
    const { h, w, x, y } = p.gridPos;
    assert.ok(Number.isInteger(h) && Number.isInteger(w) && x >= 0 && y >= 0 && x + w <= 24 && h > 0 && w > 0, `${p.title}: gridPos`);
    for (let cy = y; cy < y + h; cy++) {
      for (let cx = x; cx < x + w; cx++) {
        const other = cells.get(`${cx},${cy}`);
        assert.ok(!other, `${p.title} overlaps ${other}`);
        cells.set(`${cx},${cy}`, p.title);
      }
    }
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: datasource`);
    assert.ok((p.targets ?? []).length > 0, `${p.title}: targets`);
    for (const t of p.targets ?? []) {
      assert.equal(t.datasource?.uid, '${datasource}', `${p.title} ${t.refId}: datasource`);
      assert.ok(t.expr && t.expr.trim() !== '', `${p.title} ${t.refId}: expr`);
    }
  }
});

test('every metric a panel queries is exported by ServiceMetrics; model panels filter on $model', async () => {
  const observer = new ServiceObserver();
  const workers = [snapshot({ name: 'demo', model: 'demo-model', slotsBusy: 1, queued: 1, inFlight: 2, kvUsedRatio: 0.5 })];
  const metrics = new ServiceMetrics({ observer, workers: () => workers });
  for (const status of STATUSES) observer.publishRequest(requestEnd({ worker: 'demo', model: 'demo-model', status }));
  observer.event('model.loaded', 'demo', 'loaded', { loadSeconds: 2 });
  observer.event('restart', 'demo', 'restarting');
  metrics.auditWriteError('demo-model', 'demo');
  observer.event('model.download.completed', 'demo', 'downloaded');
  const exposed = parseExposition(await metrics.allText());
  const withSamples = new Set([...exposed.families.values()].filter((f) => f.samples.length > 0).map((f) => f.name));

  const used = new Set<string>();
  for (const panel of allPanels(dashboard.panels)) {
    for (const t of panel.targets ?? []) {
      const names = metricNames(t.expr ?? '');
      assert.ok(names.length > 0, `${panel.title} ${t.refId}: no metric in ${t.expr}`);
      for (const name of names) {
        const base = baseName(name);
        used.add(base);
        assert.ok(name.startsWith('lmserve_'), `${panel.title}: ${name} is not an lmserve metric`);
        assert.ok(withSamples.has(base), `${panel.title}: ${name} (${base}) is not in allText()`);
        if (!base.startsWith('lmserve_supervisor_')) {
          assert.ok(t.expr?.includes(`${name}{`) && t.expr.includes('model=~"$model"'), `${panel.title}: ${name} is not filtered on $model`);
        }
      }
    }
  }
  // The dashboard shows every metric of the package.
  for (const m of METRICS) assert.ok(used.has(m.name), `no panel shows ${m.name}`);
  metrics.close();
});
