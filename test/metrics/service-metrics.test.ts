/**
 * @lmserve/metrics through a real ServiceObserver: counters and histograms move by exactly what
 * was published, gauges follow workers() at each scrape, a model's text holds only that model,
 * the whole-service text holds every model and the supervisor's process metrics, and both parse
 * as strict Prometheus exposition (and pass `promtool check metrics` when promtool is installed).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ServiceObserver, type MetricsSource, type RequestEnd } from '@lmserve/core';
import {
  INTER_TOKEN_BUCKETS_SECONDS,
  LATENCY_BUCKETS_SECONDS,
  METRICS,
  METRICS_CONTENT_TYPE,
  ServiceMetrics,
  WORKER_STATES,
  metricsTableMarkdown,
  supervisorProcessRegistry,
  type WorkerSnapshot,
} from '@lmserve/metrics';
import type { Logger } from '@lmserve/protocol';
import { find, parseExposition, valueOf, type Exposition } from './exposition.js';
import { STATUSES, random, requestEnd, snapshot } from './fixtures.js';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');

function captureLog(): { log: Logger; lines: Array<{ level: string; msg: string; data?: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; data?: Record<string, unknown> }> = [];
  const log: Logger = {
    debug: (msg, data) => void lines.push({ level: 'debug', msg, data }),
    info: (msg, data) => void lines.push({ level: 'info', msg, data }),
    warn: (msg, data) => void lines.push({ level: 'warn', msg, data }),
    error: (msg, data) => void lines.push({ level: 'error', msg, data }),
    child: () => log,
  };
  return { log, lines };
}

/** An observer whose log records subscriber failures (there must be none from the metrics). */
function setup(workers: () => WorkerSnapshot[] = () => []) {
  const observerLog = captureLog();
  const metricsLog = captureLog();
  const observer = new ServiceObserver({ log: observerLog.log });
  const metrics = new ServiceMetrics({ observer, workers, log: metricsLog.log });
  const subscriberFailures = () => observerLog.lines.filter((l) => l.msg.includes('subscriber failed'));
  return { observer, metrics, subscriberFailures, metricsLog: metricsLog.lines };
}

async function scrapeModel(metrics: ServiceMetrics, model: string): Promise<Exposition> {
  return parseExposition(await metrics.modelText(model));
}

async function scrapeAll(metrics: ServiceMetrics): Promise<Exposition> {
  return parseExposition(await metrics.allText());
}

function close(actual: number | undefined, expected: number, what: string): void {
  assert.ok(actual !== undefined, `${what}: no sample`);
  assert.ok(Math.abs(actual - expected) <= 1e-9 * Math.max(1, Math.abs(expected)), `${what}: ${actual} != ${expected}`);
}

/** Checks one histogram series against the raw values (seconds) that were observed. */
function checkHistogram(exp: Exposition, name: string, labels: Record<string, string>, bounds: readonly number[], values: number[]): void {
  const what = `${name}${JSON.stringify(labels)}`;
  assert.equal(valueOf(exp, `${name}_count`, labels), values.length, `${what} count`);
  close(valueOf(exp, `${name}_sum`, labels), values.reduce((a, b) => a + b, 0), `${what} sum`);
  for (const bound of bounds) {
    const expected = values.filter((v) => v <= bound).length;
    assert.equal(valueOf(exp, `${name}_bucket`, { ...labels, le: String(bound) }), expected, `${what} le=${bound}`);
  }
  assert.equal(valueOf(exp, `${name}_bucket`, { ...labels, le: '+Inf' }), values.length, `${what} le=+Inf`);
}

function promtool(): string | null {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? 'promtool' : null;
}

describe('request ends', () => {
  test('counters and histograms move by exactly the published numbers, by model, worker, transport and status', async () => {
    const { observer, metrics, subscriberFailures } = setup();
    const rnd = random(7);
    const workers = [
      { worker: 'alpha-a', model: 'alpha' },
      { worker: 'alpha-b', model: 'alpha' },
      { worker: 'beta', model: 'beta' },
    ];
    const transports = ['http', 'nats', 'openai'];
    const published: RequestEnd[] = [];
    for (let i = 0; i < 300; i++) {
      const w = workers[i % workers.length] as { worker: string; model: string };
      const status = STATUSES[Math.floor(rnd() * STATUSES.length)] as RequestEnd['status'];
      const reached = status !== 'rejected';
      const gaps = reached ? Array.from({ length: Math.floor(rnd() * 40) }, () => Math.round(rnd() * 3000) / 10) : [];
      const end = requestEnd({
        ...w,
        transport: transports[Math.floor(rnd() * transports.length)] as string,
        status,
        usage: ((tokensIn) => ({ tokensIn, tokensOut: reached ? Math.floor(rnd() * 300) : 0, cachedTokens: Math.floor(rnd() * tokensIn) }))(Math.floor(rnd() * 500)),
        timings: {
          queueMs: reached ? Math.round(rnd() * 20000) / 10 : null,
          ttftMs: reached && rnd() < 0.8 ? Math.round(rnd() * 900000) / 100 : null,
          totalMs: Math.round(rnd() * 1_000_000) / 10,
        },
        interTokenMs: gaps,
      });
      published.push(end);
      observer.publishRequest(end);
    }
    assert.deepEqual(subscriberFailures(), []);

    const all = await scrapeAll(metrics);
    for (const w of workers) {
      const mine = published.filter((e) => e.worker === w.worker);
      const labels = { model: w.model, worker: w.worker };
      for (const transport of transports) {
        for (const status of STATUSES) {
          const n = mine.filter((e) => e.transport === transport && e.status === status).length;
          assert.equal(valueOf(all, 'lmserve_requests_total', { ...labels, transport, status }) ?? 0, n, `${w.worker} ${transport} ${status}`);
        }
        checkHistogram(
          all,
          'lmserve_request_duration_seconds',
          { ...labels, transport },
          LATENCY_BUCKETS_SECONDS,
          mine.filter((e) => e.transport === transport).map((e) => e.timings.totalMs / 1000),
        );
      }
      assert.equal(valueOf(all, 'lmserve_prompt_tokens_total', labels), mine.reduce((a, e) => a + e.usage.tokensIn, 0));
      assert.equal(valueOf(all, 'lmserve_prompt_cached_tokens_total', labels) ?? 0, mine.reduce((a, e) => a + e.usage.cachedTokens, 0));
      assert.equal(valueOf(all, 'lmserve_generation_tokens_total', labels), mine.reduce((a, e) => a + e.usage.tokensOut, 0));
      checkHistogram(
        all,
        'lmserve_time_to_first_token_seconds',
        labels,
        LATENCY_BUCKETS_SECONDS,
        mine.filter((e) => e.timings.ttftMs !== null).map((e) => (e.timings.ttftMs as number) / 1000),
      );
      checkHistogram(
        all,
        'lmserve_queue_wait_seconds',
        labels,
        LATENCY_BUCKETS_SECONDS,
        mine.filter((e) => e.timings.queueMs !== null).map((e) => (e.timings.queueMs as number) / 1000),
      );
      checkHistogram(all, 'lmserve_inter_token_latency_seconds', labels, INTER_TOKEN_BUCKETS_SECONDS, mine.flatMap((e) => e.interTokenMs.map((g) => g / 1000)));
    }
    // Every request counted once, nothing else.
    const counted = find(all, 'lmserve_requests_total').reduce((a, s) => a + s.value, 0);
    assert.equal(counted, published.length);
  });

  test('generation tokens move by usage.tokensOut of each end, whatever the status; values that are not numbers are skipped', async () => {
    const { observer, metrics, subscriberFailures } = setup();
    const labels = { model: 'm', worker: 'w' };
    observer.publishRequest(requestEnd({ ...labels, status: 'cancelled', usage: { tokensIn: 10, tokensOut: 4, cachedTokens: 3 } }));
    let exp = await scrapeModel(metrics, 'm');
    assert.equal(valueOf(exp, 'lmserve_generation_tokens_total', labels), 4);
    assert.equal(valueOf(exp, 'lmserve_prompt_tokens_total', labels), 10);
    assert.equal(valueOf(exp, 'lmserve_prompt_cached_tokens_total', labels), 3);
    observer.publishRequest(requestEnd({ ...labels, status: 'completed', usage: { tokensIn: 1, tokensOut: 250, cachedTokens: 0 } }));
    // Hostile ends: no throw, nothing counted from the broken fields.
    observer.publishRequest(requestEnd({ ...labels, usage: { tokensIn: NaN, tokensOut: -3, cachedTokens: NaN }, timings: { queueMs: NaN, ttftMs: -1, totalMs: Infinity }, interTokenMs: [NaN, -5, Infinity] }));
    observer.publishRequest({ ...requestEnd(labels), usage: undefined, timings: undefined, interTokenMs: undefined } as unknown as RequestEnd);
    observer.publishRequest({ ...requestEnd(labels), worker: undefined, model: null, transport: 42, status: {} } as unknown as RequestEnd);
    observer.publishRequest(null as unknown as RequestEnd);
    assert.deepEqual(subscriberFailures(), [], 'the metrics never throw into the observer');
    exp = await scrapeModel(metrics, 'm');
    assert.equal(valueOf(exp, 'lmserve_generation_tokens_total', labels), 254);
    assert.equal(valueOf(exp, 'lmserve_prompt_tokens_total', labels), 11);
    assert.equal(valueOf(exp, 'lmserve_prompt_cached_tokens_total', labels), 3, 'ends with cachedTokens 0 or broken add nothing');
    assert.equal(valueOf(exp, 'lmserve_requests_total', { ...labels, status: 'completed' }), 3, 'the hostile completed ends are still requests');
    assert.equal(valueOf(exp, 'lmserve_time_to_first_token_seconds_count', labels), 2, 'ttft -1 is not observed');
    assert.equal(valueOf(exp, 'lmserve_inter_token_latency_seconds_count', labels), 4);
    // The end without a worker or model is counted under "unknown".
    const unknown = await scrapeModel(metrics, 'unknown');
    assert.equal(valueOf(unknown, 'lmserve_requests_total', { worker: 'unknown', transport: 'unknown', status: 'unknown' }), 1);
  });
});

describe('scrape-time gauges', () => {
  test('gauges reflect workers() at each scrape; a worker that leaves the list leaves the output', async () => {
    let list: WorkerSnapshot[] = [
      snapshot({ name: 'alpha-a', model: 'alpha', slotsBusy: 3, slotsTotal: 8, queued: 5, inFlight: 9, kvUsedRatio: 0.375 }),
      snapshot({ name: 'beta', model: 'beta', state: 'starting', up: false, slotsBusy: 0, slotsTotal: 2, host: null }),
    ];
    let calls = 0;
    const { metrics } = setup(() => {
      calls += 1;
      return list;
    });
    let exp = await scrapeAll(metrics);
    assert.equal(calls, 1, 'one workers() call per scrape');
    const a = { model: 'alpha', worker: 'alpha-a' };
    const b = { model: 'beta', worker: 'beta' };
    assert.equal(valueOf(exp, 'lmserve_slots_busy', a), 3);
    assert.equal(valueOf(exp, 'lmserve_slots_capacity', a), 8);
    assert.equal(valueOf(exp, 'lmserve_requests_waiting', a), 5);
    assert.equal(valueOf(exp, 'lmserve_requests_in_flight', a), 9);
    assert.equal(valueOf(exp, 'lmserve_requests_running', a), 4, 'in flight minus queued');
    assert.equal(valueOf(exp, 'lmserve_kv_cache_usage_ratio', a), 0.375);
    assert.equal(valueOf(exp, 'lmserve_worker_up', a), 1);
    assert.equal(valueOf(exp, 'lmserve_worker_up', b), 0);
    assert.equal(valueOf(exp, 'lmserve_slots_capacity', b), 2);
    for (const state of WORKER_STATES) {
      assert.equal(valueOf(exp, 'lmserve_worker_state', { ...a, state }), state === 'ready' ? 1 : 0, `alpha ${state}`);
      assert.equal(valueOf(exp, 'lmserve_worker_state', { ...b, state }), state === 'starting' ? 1 : 0, `beta ${state}`);
    }
    assert.equal(valueOf(exp, 'lmserve_host_cpu_seconds_total', a), 1.5);
    assert.equal(valueOf(exp, 'lmserve_host_resident_memory_bytes', a), 200_000_000);
    assert.equal(valueOf(exp, 'lmserve_host_heap_used_bytes', a), 30_000_000);
    assert.equal(valueOf(exp, 'lmserve_host_event_loop_lag_seconds', a), 0.002);
    assert.equal(find(exp, 'lmserve_host_cpu_seconds_total', b).length, 0, 'no host, no host series');
    // Counters of a worker exist at 0 from its first scrape on.
    for (const name of ['lmserve_worker_restarts_total', 'lmserve_audit_write_errors_total', 'lmserve_generation_tokens_total', 'lmserve_prompt_tokens_total']) {
      assert.equal(valueOf(exp, name, b), 0, name);
    }

    list = [snapshot({ name: 'alpha-a', model: 'alpha', state: 'restarting', up: false, slotsBusy: 0, queued: 0, inFlight: 0, host: null })];
    exp = await scrapeAll(metrics);
    assert.equal(valueOf(exp, 'lmserve_worker_up', a), 0);
    assert.equal(valueOf(exp, 'lmserve_worker_state', { ...a, state: 'restarting' }), 1);
    assert.equal(valueOf(exp, 'lmserve_worker_state', { ...a, state: 'ready' }), 0);
    assert.equal(find(exp, 'lmserve_slots_capacity', b).length, 0, 'beta left the list');
    assert.equal(find(exp, 'lmserve_worker_state', b).length, 0);
    assert.equal(find(exp, 'lmserve_host_resident_memory_bytes', a).length, 0, 'the host is gone');
  });

  test('a workers() that throws or returns garbage costs the gauges, never the scrape', async () => {
    let mode: 'throw' | 'garbage' | 'partial' = 'throw';
    const { metrics, metricsLog } = setup(() => {
      if (mode === 'throw') throw new Error('boom');
      if (mode === 'garbage') return 'nope' as unknown as WorkerSnapshot[];
      return [null, 7, { name: 1 }, snapshot({ name: 'ok', model: 'm', slotsTotal: NaN, kvUsedRatio: 'x' as unknown as number, state: 'weird' as WorkerSnapshot['state'] })] as unknown as WorkerSnapshot[];
    });
    let exp = await scrapeAll(metrics);
    assert.equal(find(exp, 'lmserve_worker_up').length, 0);
    assert.ok(metricsLog.some((l) => l.data?.where === 'workers()'), 'the failure is logged');
    mode = 'garbage';
    exp = await scrapeAll(metrics);
    assert.equal(find(exp, 'lmserve_worker_up').length, 0);
    mode = 'partial';
    exp = await scrapeAll(metrics);
    assert.equal(valueOf(exp, 'lmserve_worker_up', { worker: 'ok' }), 1);
    assert.equal(find(exp, 'lmserve_slots_capacity').length, 0, 'NaN is not exported');
    assert.equal(find(exp, 'lmserve_kv_cache_usage_ratio').length, 0);
    assert.equal(valueOf(exp, 'lmserve_worker_state', { worker: 'ok', state: 'weird' }), 1, 'a state this version does not know is still shown');
  });
});

describe('events and calls', () => {
  test('model.loaded sets the load seconds, each restart counts once, audit write errors count per call', async () => {
    const { observer, metrics, subscriberFailures } = setup(() => [snapshot({ name: 'alpha-a', model: 'alpha' })]);
    const a = { model: 'alpha', worker: 'alpha-a' };
    observer.event('model.loaded', 'alpha-a', 'model loaded in 2.50 s', { loadSeconds: 2.5, backend: 'cpu', devices: [] });
    observer.event('restart', 'alpha-a', 'restarting (attempt 1)', { attempt: 1, restarts: 1 }, 'warn');
    observer.event('restart', 'alpha-a', 'restarting (attempt 2)', { attempt: 2, restarts: 2 }, 'warn');
    observer.event('model.loaded', 'alpha-a', 'model loaded in 1.25 s', { loadSeconds: 1.25 });
    // Not for the metrics, or broken: ignored without a throw.
    observer.event('shutdown', null, 'shutting down');
    observer.event('restart', null, 'no worker');
    observer.event('model.loaded', 'alpha-a', 'broken', { loadSeconds: 'soon' });
    observer.event('model.loaded', 'alpha-a', 'broken', null as unknown as Record<string, unknown>);
    // A worker no snapshot knows: its name stands for the model.
    observer.event('restart', 'ghost', 'restarting', {});
    metrics.auditWriteError('alpha', 'alpha-a');
    metrics.auditWriteError('alpha', 'alpha-a');
    metrics.auditWriteError('gamma');
    metrics.auditWriteError(undefined as unknown as string);
    assert.deepEqual(subscriberFailures(), []);

    const exp = await scrapeAll(metrics);
    assert.equal(valueOf(exp, 'lmserve_model_load_seconds', a), 1.25, 'the last load');
    assert.equal(valueOf(exp, 'lmserve_worker_restarts_total', a), 2);
    assert.equal(valueOf(exp, 'lmserve_worker_restarts_total', { model: 'ghost', worker: 'ghost' }), 1);
    assert.equal(valueOf(exp, 'lmserve_audit_write_errors_total', a), 2);
    assert.equal(find(exp, 'lmserve_audit_write_errors_total', { model: 'gamma' })[0]?.value, 1);
    assert.equal(find(exp, 'lmserve_audit_write_errors_total', { model: 'gamma' })[0]?.labels.worker, undefined, 'no worker given, no worker label');
    assert.equal(valueOf(exp, 'lmserve_audit_write_errors_total', { model: 'unknown' }), 1);
  });

  test('an event before any snapshot reads workers() to find the model', async () => {
    const { observer, metrics } = setup(() => [snapshot({ name: 'w1', model: 'late-model' })]);
    observer.event('model.loaded', 'w1', 'loaded', { loadSeconds: 3 });
    const exp = await scrapeModel(metrics, 'late-model');
    assert.equal(valueOf(exp, 'lmserve_model_load_seconds', { worker: 'w1' }), 3);
  });

  test('close() unsubscribes', async () => {
    const { observer, metrics } = setup();
    observer.publishRequest(requestEnd({ worker: 'w', model: 'm' }));
    metrics.close();
    observer.publishRequest(requestEnd({ worker: 'w', model: 'm' }));
    observer.event('restart', 'w', 'restart');
    const exp = await scrapeModel(metrics, 'm');
    assert.equal(valueOf(exp, 'lmserve_requests_total', { worker: 'w' }), 1);
    assert.equal(find(exp, 'lmserve_worker_restarts_total').length, 0);
  });
});

describe('exposition', () => {
  /** A service with every kind of series: two models (one on two workers), every status and event. */
  function populated() {
    const list = [
      snapshot({ name: 'alpha-a', model: 'alpha', slotsBusy: 1, inFlight: 2, queued: 1 }),
      snapshot({ name: 'alpha-b', model: 'alpha', state: 'failed', up: false, host: null }),
      snapshot({
        name: 'beta',
        model: 'beta',
        host: { pid: 7, cpuSecondsTotal: 0.25, residentBytes: 1, heapUsedBytes: 2, eventLoopLagSeconds: 0 },
        download: { bytes: 1000, totalBytes: 4000, bytesPerSecond: 500 },
      }),
    ];
    const s = setup(() => list);
    for (const w of list) {
      for (const status of STATUSES) s.observer.publishRequest(requestEnd({ worker: w.name, model: w.model, status }));
      s.observer.event('model.loaded', w.name, 'loaded', { loadSeconds: 1 });
      s.observer.event('restart', w.name, 'restart');
      s.metrics.auditWriteError(w.model, w.name);
      s.observer.event('model.download.completed', w.name, 'downloaded');
    }
    return s;
  }

  test('modelText holds only that model (every worker of it, its hosts) and is a subset of allText', async () => {
    const { metrics } = populated();
    const alphaText = await metrics.modelText('alpha');
    const alpha = parseExposition(alphaText);
    assert.ok(alpha.samples.length > 0);
    for (const s of alpha.samples) assert.equal(s.labels.model, 'alpha', `line ${s.line}: ${s.name}`);
    assert.deepEqual(new Set(alpha.samples.map((s) => s.labels.worker)), new Set(['alpha-a', 'alpha-b']));
    assert.equal(valueOf(alpha, 'lmserve_host_resident_memory_bytes', { worker: 'alpha-a' }), 200_000_000, "the model's host metrics");
    assert.ok(!alphaText.includes('lmserve_supervisor_'), 'no supervisor process metrics in a model text');
    const beta = await scrapeModel(metrics, 'beta');
    assert.ok(beta.samples.every((s) => s.labels.model === 'beta'));
    assert.equal(valueOf(beta, 'lmserve_host_cpu_seconds_total'), 0.25);

    const allLines = new Set((await metrics.allText()).split('\n'));
    for (const line of alphaText.split('\n')) assert.ok(allLines.has(line), `allText lacks ${line}`);

    const nobody = await scrapeModel(metrics, 'no-such-model');
    assert.equal(nobody.samples.length, 0, 'an unknown model is an empty (valid) text');
  });

  test('allText holds every model, every metric of the table and the supervisor process metrics', async () => {
    const { metrics } = populated();
    const all = await scrapeAll(metrics);
    assert.deepEqual(new Set(all.samples.filter((s) => s.name.startsWith('lmserve_') && !s.name.startsWith('lmserve_supervisor_')).map((s) => s.labels.model)), new Set(['alpha', 'beta']));
    for (const m of METRICS) {
      const family = all.families.get(m.name);
      assert.ok(family, `${m.name} is exported`);
      assert.equal(family.type, m.type, m.name);
      assert.ok(family.samples.length > 0, `${m.name} has samples`);
      for (const s of family.samples) {
        for (const label of Object.keys(s.labels)) assert.ok(label === 'le' || m.labels.includes(label), `${m.name}: label ${label} not declared`);
        assert.ok(s.labels.model, `${m.name}: every series has a model`);
      }
    }
    for (const name of ['lmserve_supervisor_process_cpu_seconds_total', 'lmserve_supervisor_process_resident_memory_bytes', 'lmserve_supervisor_nodejs_heap_size_used_bytes', 'lmserve_supervisor_nodejs_eventloop_lag_p99_seconds']) {
      assert.ok(find(all, name).length === 1, `${name} in allText`);
    }
    // Every name has the prefix.
    for (const name of all.families.keys()) assert.ok(name.startsWith('lmserve_'), name);
  });

  test('label values with quotes, backslashes and newlines are escaped and read back', async () => {
    const { observer, metrics } = setup();
    const model = 'we"ird\\mo\ndel';
    observer.publishRequest(requestEnd({ worker: 'w{1}', model, transport: 'http' }));
    const text = await metrics.modelText(model);
    const exp = parseExposition(text);
    assert.equal(valueOf(exp, 'lmserve_requests_total', { model, worker: 'w{1}' }), 1);
    assert.ok(text.includes('model="we\\"ird\\\\mo\\ndel"'));
    parseExposition(await metrics.allText());
  });

  test('the strict parser refuses what it must', () => {
    const bad: Array<[string, string]> = [
      ['x 1\n', 'sample without TYPE'],
      ['# HELP x h\n# TYPE x gauge\nx{a="1} 1\n', 'unterminated label'],
      ['# HELP x h\n# TYPE x gauge\nx{1a="1"} 1\n', 'bad label name'],
      ['# HELP x h\n# TYPE x gauge\nx{a="\\t"} 1\n', 'bad escape'],
      ['# HELP x h\n# TYPE x gauge\nx{a="1",a="2"} 1\n', 'duplicate label'],
      ['# HELP x h\n# TYPE x gauge\nx one\n', 'bad value'],
      ['# HELP 1x h\n# TYPE 1x gauge\n1x 1\n', 'bad metric name'],
      ['# HELP x h\n# TYPE x gauge\nx 1\n# HELP x h\n', 'HELP after samples'],
      ['# HELP x h\n# TYPE x gauge\nx 1\nx 2\n', 'repeated series'],
      ['# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\nx{a="1"} 1\ny 1\nx{a="2"} 1\n', 'family not in one group'],
      ['# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="0.5"} 2\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n', 'le order'],
      ['# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 3\nh_sum 1\nh_count 2\n', '+Inf != count'],
      ['# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n', 'decreasing bucket'],
      ['# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n', 'no +Inf'],
      ['# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 2\nh_sum 1\n', 'no _count'],
      ['# HELP x h\n# TYPE x gauge\nx 1', 'no final newline'],
    ];
    for (const [text, why] of bad) assert.throws(() => parseExposition(text), Error, why);
    const good = parseExposition('# HELP x h\n# TYPE x gauge\nx{a="q\\"\\\\\\n"} NaN\n\n# HELP c c\n# TYPE c counter\nc +Inf 1700000000000\n');
    assert.equal(good.samples[0]?.labels.a, 'q"\\\n');
  });

  test('promtool check metrics accepts both texts (skipped when promtool is not installed)', async (t) => {
    const tool = promtool();
    if (!tool) {
      t.skip('promtool is not installed (Debian: apt-get install prometheus)');
      return;
    }
    const { metrics } = populated();
    const check = (text: string) => spawnSync(tool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const model = check(await metrics.modelText('alpha'));
    assert.equal(model.status, 0, `modelText: ${model.stdout}${model.stderr}`);
    assert.equal(`${model.stdout}${model.stderr}`.trim(), '', 'no lint finding in a model text');
    const all = check(await metrics.allText());
    // prom-client's default gauges named *_total are left out, so the whole scrape is lint-clean too.
    assert.equal(all.status, 0, `allText: ${all.stdout}${all.stderr}`);
    assert.equal(`${all.stdout}${all.stderr}`.trim(), '', 'no lint finding in the whole scrape');
  });
});

describe('the package', () => {
  test('the supervisor process metrics are registered once per process, whatever the number of ServiceMetrics', () => {
    const registry = supervisorProcessRegistry();
    setup();
    setup();
    assert.equal(supervisorProcessRegistry(), registry);
  });

  test("modelSource and serviceSource are the core's MetricsSource over modelText and allText", async () => {
    const { observer, metrics } = setup(() => [snapshot({ name: 'w', model: 'm' })]);
    observer.publishRequest(requestEnd({ worker: 'w', model: 'm' }));
    const model: MetricsSource = metrics.modelSource('m');
    const service: MetricsSource = metrics.serviceSource();
    assert.equal(model.contentType, METRICS_CONTENT_TYPE);
    assert.equal(service.contentType, METRICS_CONTENT_TYPE);
    const modelText = await model.text();
    assert.equal(valueOf(parseExposition(modelText), 'lmserve_requests_total', { worker: 'w' }), 1);
    assert.ok(!modelText.includes('lmserve_supervisor_'));
    assert.ok((await service.text()).includes('lmserve_supervisor_process_cpu_seconds_total'));
  });

  test('contentType, buckets and the README table', () => {
    const { metrics } = setup();
    assert.equal(metrics.contentType, METRICS_CONTENT_TYPE);
    assert.match(metrics.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(LATENCY_BUCKETS_SECONDS[0], 0.005);
    assert.equal(LATENCY_BUCKETS_SECONDS[LATENCY_BUCKETS_SECONDS.length - 1], 600);
    assert.equal(INTER_TOKEN_BUCKETS_SECONDS[0], 0.001);
    assert.equal(INTER_TOKEN_BUCKETS_SECONDS[INTER_TOKEN_BUCKETS_SECONDS.length - 1], 5);
    const table = metricsTableMarkdown();
    for (const m of METRICS) assert.ok(table.includes(`\`${m.name}\``), m.name);
    const readme = readFileSync(join(root, 'packages', 'metrics', 'README.md'), 'utf8');
    assert.ok(readme.includes(table), "packages/metrics/README.md's table is metricsTableMarkdown()'s");
  });

  test('cost: one RequestEnd with 128 inter-token samples', (t) => {
    const { observer } = setup(() => []);
    const gaps = Array.from({ length: 128 }, (_, i) => 8 + (i % 50) * 0.7);
    const ends = ['http', 'nats'].map((transport) => requestEnd({ worker: 'w', model: 'm', transport, interTokenMs: gaps }));
    for (let i = 0; i < 2000; i++) observer.publishRequest(ends[i & 1] as RequestEnd); // warm up (JIT, series)
    const rounds = 20_000;
    let best = Infinity;
    for (let r = 0; r < 5; r++) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) observer.publishRequest(ends[i & 1] as RequestEnd);
      best = Math.min(best, Number(process.hrtime.bigint() - start) / 1000 / rounds);
    }
    t.diagnostic(`${best.toFixed(2)} µs per RequestEnd with 128 inter-token samples (best of 5 × ${rounds})`);
    // Generous: about 3 µs on a 2-core CI machine; prom-client's Histogram would take ~150 µs.
    assert.ok(best < 50, `${best} µs per RequestEnd`);
  });
});
