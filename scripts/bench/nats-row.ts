/**
 * The NATS row: one supervisor serving the bench model over HTTP and over NATS (a real
 * nats-server started here), the same workload driven through both in ABBA rounds:
 *
 * - HTTP: POST /v1/completions with `stream: true` (SSE), as in the main table;
 * - NATS: request/reply on the worker's SUBJECT with `params.stream: true`: `Lm-Event: token`
 *   messages on the requester's inbox, then `Lm-Event: done` with the usage.
 *
 * Then JetStream: jobs published to `inference.jobs.bench` (JETSTREAM=on) by `concurrency`
 * producers at once, each waiting for its result on `inference.results.bench.<id>`; end-to-end
 * latency = publish to result arrival, printed as p50/p95 next to the same requests' HTTP
 * latency. Same model, slots, threads, context and sampling as the main table.
 */
import { randomUUID } from 'node:crypto';
import { connect, createInbox, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { NatsServer, natsServerAvailable } from '../lib/nats-server.js';
import { processCpuSeconds, threadCpuSeconds } from '../lib/service-harness.js';
import { HttpStreamClient } from './http-stream.js';
import { overheadRows, markdownTable } from './report.js';
import { WARM_UP_REQUESTS, runLevel, runRounds, settle, summarize, warmUp, type LevelRun } from './runner.js';
import { ServiceProcess } from './service.js';
import { benchWorkerEnv, serviceCompletionProtocol } from './service-target.js';
import { percentile } from './stats.js';
import type { BenchRequest, BenchTarget, RequestOutcome } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

export interface NatsRowConfig {
  root: string;
  modelPath: string;
  slots: number;
  ctxPerSlot: number;
  batchSize: number;
  threads: number;
  concurrency: readonly number[];
  rounds: number;
  requestsPerClient: number;
  minRequests?: number;
  /** JetStream jobs per level of the latency table. */
  jobs: number;
  /** Streaming on both sides (token messages / SSE), or one reply per request on both. */
  stream: boolean;
  workload: WorkloadSpec;
  log: (line: string) => void;
  register: (running: { stop(): Promise<void> }) => void;
}

export interface NatsRowLevel {
  concurrency: number;
  httpTps: number | null;
  natsTps: number | null;
  /** NATS / HTTP from the medians over rounds. */
  ratio: number | null;
  ratioRounds: number[];
  httpTtftP50: number | null;
  natsTtftP50: number | null;
  /**
   * CPU seconds per 1,000 generated tokens of everything that serves them: the supervisor, the
   * model host and nats-server (idle but for JetStream's pulls on the HTTP side), pooled over rounds.
   */
  httpCpuPer1k: number | null;
  natsCpuPer1k: number | null;
  /** The supervisor's part of it. */
  httpSupervisorCpuPer1k: number | null;
  natsSupervisorCpuPer1k: number | null;
  /** Failed requests or wrong token counts on either side. */
  failures: string[];
}

export interface JetStreamLevel {
  concurrency: number;
  jobs: number;
  /** Publish to result arrival, milliseconds. */
  latencyP50: number | null;
  latencyP95: number | null;
  /** The same requests over HTTP (non-streaming view: send to end of stream). */
  httpLatencyP50: number | null;
  httpLatencyP95: number | null;
  failures: string[];
}

export interface NatsRowResult {
  stream: boolean;
  levels: NatsRowLevel[];
  jetstream: JetStreamLevel[];
  runs: LevelRun[];
}

const SUBJECT = 'inference.request.bench';
const JOBS_SUBJECT = 'inference.jobs.bench';
const RESULTS_PREFIX = 'inference.results.bench';

/** The original API's body for a bench request (the same JSON the HTTP target sends). */
function requestBody(request: BenchRequest): Record<string, unknown> {
  return serviceCompletionProtocol.body(request) as Record<string, unknown>;
}

/** Request/reply with streaming over one shared connection; one inbox subscription per request. */
class NatsStreamTarget implements BenchTarget {
  readonly label = 'nats';
  readonly transport = 'NATS request/reply on inference.request.bench, params.stream true (token messages on an inbox)';
  readonly #nc: NatsConnection;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
  }

  async start(): Promise<void> {}

  async run(request: BenchRequest): Promise<RequestOutcome> {
    const inbox = createInbox();
    const sub = this.#nc.subscribe(inbox);
    const started = performance.now();
    let ttftMs: number | null = null;
    let events = 0;
    const text: string[] = [];
    this.#nc.publish(SUBJECT, JSON.stringify(requestBody(request)), { reply: inbox });
    const timeout = setTimeout(() => sub.unsubscribe(), 300_000);
    try {
      for await (const msg of sub) {
        const event = msg.headers?.get('Lm-Event') ?? '';
        if (event === 'ping') continue;
        if (event === 'token') {
          ttftMs ??= performance.now() - started;
          events++;
          text.push((msg.json() as { text: string }).text);
          continue;
        }
        const body = msg.json() as {
          error?: { code: string; message: string };
          usage?: { tokens_in: number; tokens_out: number };
          finish_reason?: string;
        };
        const totalMs = performance.now() - started;
        if (event === 'error' || body.error) {
          return { ok: false, error: `${body.error?.code}: ${body.error?.message}`, ttftMs, totalMs, tokensOut: null, tokensIn: null, cachedTokens: null, streamedEvents: events, finishReason: null };
        }
        return {
          ok: true,
          ttftMs,
          totalMs,
          tokensOut: body.usage?.tokens_out ?? null,
          tokensIn: body.usage?.tokens_in ?? null,
          cachedTokens: null,
          streamedEvents: events,
          finishReason: body.finish_reason ?? null,
          output: text.join(''),
        };
      }
      return { ok: false, error: 'no answer within 300 s', ttftMs, totalMs: performance.now() - started, tokensOut: null, tokensIn: null, cachedTokens: null, streamedEvents: events, finishReason: null };
    } finally {
      clearTimeout(timeout);
      sub.unsubscribe();
    }
  }

  describe(): Record<string, unknown> {
    return { transport: this.transport };
  }

  async stop(): Promise<void> {}
}

/** Request/reply without streaming: one reply message per request (the original API's default). */
class NatsPlainTarget implements BenchTarget {
  readonly label = 'nats';
  readonly transport = 'NATS request/reply on inference.request.bench, one reply per request';
  readonly #nc: NatsConnection;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
  }

  async start(): Promise<void> {}

  async run(request: BenchRequest): Promise<RequestOutcome> {
    const body = requestBody(request);
    const started = performance.now();
    try {
      const msg = await this.#nc.request(SUBJECT, JSON.stringify({ ...body, params: { ...(body.params as object), stream: false } }), { timeout: 300_000 });
      return plainOutcome(msg.json(), performance.now() - started);
    } catch (err) {
      return { ok: false, error: String(err), ttftMs: null, totalMs: performance.now() - started, tokensOut: null, tokensIn: null, cachedTokens: null, streamedEvents: 0, finishReason: null };
    }
  }

  describe(): Record<string, unknown> {
    return { transport: this.transport };
  }

  async stop(): Promise<void> {}
}

/** POST /v1/completions without streaming (fetch, keep-alive). */
function httpPlainTarget(port: number): BenchTarget {
  return {
    label: 'http',
    transport: 'HTTP POST /v1/completions, one JSON answer per request (keep-alive)',
    start: async () => undefined,
    async run(request) {
      const body = requestBody(request);
      const started = performance.now();
      try {
        const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ ...body, params: { ...(body.params as object), stream: false } }),
        });
        return plainOutcome(await res.json(), performance.now() - started);
      } catch (err) {
        return { ok: false, error: String(err), ttftMs: null, totalMs: performance.now() - started, tokensOut: null, tokensIn: null, cachedTokens: null, streamedEvents: 0, finishReason: null };
      }
    },
    describe: () => ({}),
    stop: async () => undefined,
  };
}

/**
 * `target` with the CPU figures of what serves it: cpuSeconds() the service's processes (the
 * supervisor and its model hosts) and nats-server, supervisorCpuSeconds() the supervisor alone.
 */
function measured(target: BenchTarget, service: ServiceProcess, broker: NatsServer): BenchTarget {
  return {
    label: target.label,
    transport: target.transport,
    start: () => target.start(),
    run: (request) => target.run(request),
    describe: () => target.describe(),
    stop: () => target.stop(),
    cpuSeconds: () => {
      const own = service.cpuSeconds();
      const pid = broker.pid;
      const brokerCpu = pid === undefined ? null : processCpuSeconds(pid);
      return own === null || brokerCpu === null ? null : own + brokerCpu;
    },
    supervisorCpuSeconds: () => {
      const pid = service.supervisorPid;
      return pid === undefined ? null : threadCpuSeconds(pid);
    },
  };
}

function plainOutcome(value: unknown, totalMs: number): RequestOutcome {
  const body = value as { error?: { code: string; message: string }; usage?: { tokens_in: number; tokens_out: number }; finish_reason?: string; output?: string };
  if (body.error) return { ok: false, error: `${body.error.code}: ${body.error.message}`, ttftMs: null, totalMs, tokensOut: null, tokensIn: null, cachedTokens: null, streamedEvents: 0, finishReason: null };
  return { ok: true, ttftMs: null, totalMs, tokensOut: body.usage?.tokens_out ?? null, tokensIn: body.usage?.tokens_in ?? null, cachedTokens: null, streamedEvents: 0, finishReason: body.finish_reason ?? null, ...(body.output !== undefined ? { output: body.output } : {}) };
}

/** One JetStream job, from publish to its result on the results subject. */
async function runJob(nc: NatsConnection, request: BenchRequest): Promise<{ ms: number; error?: string }> {
  const id = `bench-${randomUUID()}`;
  const sub = nc.subscribe(`${RESULTS_PREFIX}.${id}`, { max: 1 });
  const js = jetstream(nc);
  const body = requestBody(request);
  const params = { ...(body.params as Record<string, unknown>), stream: false };
  const started = performance.now();
  await js.publish(JOBS_SUBJECT, JSON.stringify({ id, input: body.input, params }), { msgID: id });
  const timer = setTimeout(() => sub.unsubscribe(), 300_000);
  try {
    for await (const msg of sub) {
      const result = msg.json() as { status?: string; error?: { code: string; message: string } };
      const ms = performance.now() - started;
      return result.error ? { ms, error: `${result.error.code}: ${result.error.message}` } : { ms };
    }
    return { ms: performance.now() - started, error: 'no result within 300 s' };
  } finally {
    clearTimeout(timer);
  }
}

export async function measureNatsRow(c: NatsRowConfig): Promise<NatsRowResult> {
  if (!natsServerAvailable()) throw new Error('nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
  const server = await NatsServer.start();
  c.register({ stop: () => server.dispose() });
  const service = new ServiceProcess({
    root: c.root,
    workers: [{ name: 'bench', env: { ...benchWorkerEnv(c, 1024), NATS_URL: server.url, SUBJECT, JETSTREAM: 'on' } }],
    shutdownGraceMs: 2000,
    log: c.log,
  });
  c.register(service);
  c.log(`NATS row: nats-server on ${server.url}, a supervisor serving the bench model over HTTP and NATS (JETSTREAM=on)`);
  await service.start();
  const nc = await connect({ servers: server.url, name: 'lmserve-bench' });
  c.register({ stop: () => nc.close() });
  const http = new HttpStreamClient({ host: '127.0.0.1', port: service.port('bench'), protocol: serviceCompletionProtocol });
  const httpTarget: BenchTarget = {
    label: 'http',
    transport: 'HTTP POST /v1/completions, SSE',
    start: async () => undefined,
    run: (r) => http.run(r),
    describe: () => ({}),
    stop: async () => http.close(),
  };
  const natsTarget: BenchTarget = c.stream ? new NatsStreamTarget(nc) : new NatsPlainTarget(nc);
  const httpMain = c.stream ? httpTarget : httpPlainTarget(service.port('bench'));
  try {
    // Readiness of the NATS side: the transport connects in the background.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const warm = await natsTarget.run(roundRequests({ ...c.workload, maxTokens: 4 }, 1, 950_000)[0]!);
      if (warm.ok) break;
      if (Date.now() > deadline) throw new Error(`the NATS side never answered: ${warm.error}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    // Both sides are measured on the same processes: the service and the broker.
    const targets = [measured(httpMain, service, server), measured(natsTarget, service, server)];
    const plan = { concurrency: [...c.concurrency], rounds: c.rounds, requestsPerClient: c.requestsPerClient, minRequests: c.minRequests, workload: c.workload, log: c.log };
    // A fresh supervisor: warm its JIT on both paths, then wait for it to go quiet.
    await warmUp(targets, plan, WARM_UP_REQUESTS / 2);
    await settle(targets.slice(0, 1), { log: c.log });
    // The main table's rounds (ABBA, per-run figures), then its pairing (ratio per round).
    const runs = await runRounds(targets, plan);
    const summaries = summarize(runs, ['nats', 'http'], c.concurrency);
    const cpuOf = (concurrency: number, label: string) => summaries.find((s) => s.concurrency === concurrency)?.perTarget[label];
    const levels = overheadRows(summaries, 'nats', 'http').map((r): NatsRowLevel => ({
      concurrency: r.concurrency,
      httpCpuPer1k: cpuOf(r.concurrency, 'http')?.ownCpuSecondsPer1kTokens ?? null,
      natsCpuPer1k: cpuOf(r.concurrency, 'nats')?.ownCpuSecondsPer1kTokens ?? null,
      httpSupervisorCpuPer1k: cpuOf(r.concurrency, 'http')?.supervisorCpuSecondsPer1kTokens ?? null,
      natsSupervisorCpuPer1k: cpuOf(r.concurrency, 'nats')?.supervisorCpuSecondsPer1kTokens ?? null,
      httpTps: r.bareTps,
      natsTps: r.oursTps,
      ratio: r.ratio,
      ratioRounds: r.ratioRounds,
      httpTtftP50: r.bareTtftP50,
      natsTtftP50: r.oursTtftP50,
      failures: r.notes,
    }));
    let sequence = 600_000;
    // JetStream end to end: jobs by `concurrency` producers, each waiting for its result.
    const jetstreamLevels: JetStreamLevel[] = [];
    for (const concurrency of c.concurrency) {
      const requests = roundRequests(c.workload, Math.max(c.jobs, concurrency), sequence);
      sequence += requests.length;
      const jobMs: number[] = [];
      const jobFailures: string[] = [];
      await Promise.all(Array.from({ length: concurrency }, async (_, k) => {
        for (let i = k; i < requests.length; i += concurrency) {
          const r = await runJob(nc, requests[i]!);
          if (r.error) jobFailures.push(r.error);
          else jobMs.push(r.ms);
        }
      }));
      const { outcomes } = await runLevel(httpTarget, requests, concurrency);
      const httpMs = outcomes.filter((o) => o.ok).map((o) => o.totalMs);
      jetstreamLevels.push({
        concurrency,
        jobs: requests.length,
        latencyP50: percentile(jobMs, 50),
        latencyP95: percentile(jobMs, 95),
        httpLatencyP50: percentile(httpMs, 50),
        httpLatencyP95: percentile(httpMs, 95),
        failures: jobFailures,
      });
      c.log(`jetstream c=${concurrency}: ${jobMs.length}/${requests.length} jobs, p50 ${percentile(jobMs, 50)?.toFixed(0) ?? '-'} ms (HTTP p50 ${percentile(httpMs, 50)?.toFixed(0) ?? '-'} ms)`);
    }
    return { stream: c.stream, levels, jetstream: jetstreamLevels, runs };
  } finally {
    http.close();
    await nc.close().catch(() => undefined);
    await service.stop();
    await server.dispose();
  }
}

const fmt = (v: number | null, digits = 0) => (v === null ? '-' : v.toFixed(digits));

export function formatNatsRow(result: NatsRowResult): string {
  const out = [`NATS request/reply vs HTTP, same supervisor, same workload (${result.stream ? 'streaming on both' : 'no streaming: one answer per request on both'}; ratio = NATS / HTTP, median over rounds)`];
  const header = ['concurrency', 'HTTP tok/s', 'NATS tok/s', 'NATS/HTTP', 'per round', 'HTTP TTFT p50 ms', 'NATS TTFT p50 ms', 'CPU s/1k tok HTTP / NATS', 'of it supervisor HTTP / NATS', ''];
  const body = result.levels.map((l) => [
    String(l.concurrency), fmt(l.httpTps, 1), fmt(l.natsTps, 1), l.ratio === null ? '-' : `${l.ratio.toFixed(3)}x`,
    l.ratioRounds.map((x) => x.toFixed(3)).join(', ') || '-', fmt(l.httpTtftP50), fmt(l.natsTtftP50),
    `${fmt(l.httpCpuPer1k ?? null, 2)} / ${fmt(l.natsCpuPer1k ?? null, 2)}`, `${fmt(l.httpSupervisorCpuPer1k ?? null, 2)} / ${fmt(l.natsSupervisorCpuPer1k ?? null, 2)}`,
    l.failures.length ? `FAILED ${l.failures.length}` : '',
  ]);
  out.push(markdownTable(header, body));
  out.push('CPU: the supervisor, the model host and nats-server together (/proc/<pid>/stat around each level), seconds per 1,000 generated tokens');
  out.push('\nJetStream jobs end to end (publish to result on inference.results.bench.<id>; the same requests over HTTP for reference)');
  const jHeader = ['producers', 'jobs', 'job p50 ms', 'job p95 ms', 'HTTP p50 ms', 'HTTP p95 ms', ''];
  const jBody = result.jetstream.map((j) => [
    String(j.concurrency), String(j.jobs), fmt(j.latencyP50), fmt(j.latencyP95), fmt(j.httpLatencyP50), fmt(j.httpLatencyP95),
    j.failures.length ? `FAILED ${j.failures.length} (${j.failures[0]})` : '',
  ]);
  out.push(markdownTable(jHeader, jBody));
  return out.join('\n');
}
