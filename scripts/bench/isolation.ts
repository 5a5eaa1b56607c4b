/**
 * The two-model row: one supervisor with two workers, A (the bench model, configured as in the
 * comparison: 16 slots, 2 threads, 512 cells per slot, batch 512) and B (the 4M-parameter `tiny`
 * model, its own host process and engine). B's time to first token is measured for N sequential
 * short requests while A is idle, then again while A is saturated by `slots` closed-loop clients
 * sending long requests (EOS ignored). A's own throughput in that window (every token A streamed
 * while B's requests ran) is reported next to it: isolation is only worth having if A keeps
 * serving at full speed meanwhile.
 *
 * Why tiny for B: its own compute is a few milliseconds per step, so B's TTFT shows what B waits
 * for; if B were queued behind A (one engine or one thread for both), its TTFT would jump by whole
 * A decode steps. A second copy of the bench model would add B's own CPU-bound prefill to the same
 * two cores and blur that signal. On a machine with few cores A's threads still take CPU time from
 * B (and B from A), so B gets slower under load: that is CPU sharing, not queueing. The admin
 * API's per-worker `queue` is sampled throughout to show that B never waits for a slot.
 */
import { setMaxListeners } from 'node:events';
import type { WorkerInfo } from '@lmserve/protocol';
import { sleep } from '../lib/service-harness.js';
import { HttpStreamClient } from './http-stream.js';
import { ServiceProcess } from './service.js';
import { benchWorkerEnv, serviceCompletionProtocol } from './service-target.js';
import { median, percentile } from './stats.js';
import type { BenchRequest, RequestOutcome } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

export interface IsolationConfig {
  root: string;
  modelA: string;
  modelB: string;
  slots: number;
  ctxPerSlot: number;
  batchSize: number;
  threads: number;
  /** B's MODEL_THREADS. */
  bThreads: number;
  /** Sequential B requests per phase. */
  requests: number;
  bMaxTokens: number;
  /** Tokens of each of A's requests (EOS ignored). */
  aMaxTokens: number;
  workload: WorkloadSpec;
  log: (line: string) => void;
  /** Lets the caller stop the service on a signal. */
  register: (service: ServiceProcess) => void;
}

interface PhaseResult {
  ttftMs: number[];
  serverTtftMs: number[];
  totalMs: number[];
  ttftP50: number | null;
  ttftP95: number | null;
  serverTtftP50: number | null;
  serverTtftP95: number | null;
  failures: string[];
  /** Admin samples of A's busy slots while B's requests ran. */
  aSlotsBusy: number[];
  /** Admin samples of B's queue (requests waiting for a slot) while B's requests ran. */
  bQueue: number[];
}

export interface IsolationResult {
  modelA: string;
  modelB: string;
  workerEnv: Record<string, Record<string, string>>;
  requests: number;
  bMaxTokens: number;
  aConcurrency: number;
  aMaxTokens: number;
  idle: PhaseResult;
  saturated: PhaseResult & {
    aRequestsCompleted: number;
    aTokensOut: number;
    /** Tokens A streamed while B's saturated-phase requests ran, the window's length, and their quotient. */
    aTokensDuringB: number;
    aWindowMs: number;
    aTokensPerSecondDuringB: number | null;
  };
  ttftP50Ratio: number | null;
  ttftP95Ratio: number | null;
  bQueueMax: number | null;
  aSlotsBusyMinWhileSaturated: number | null;
  flagged: boolean;
  notes: string[];
}

/** Polls /admin/workers every `everyMs` until stopped. */
class AdminSampler {
  readonly aBusy: number[] = [];
  readonly bQueue: number[] = [];
  #active = false;
  #loop: Promise<void> | undefined;

  constructor(readonly service: ServiceProcess, readonly everyMs = 200) {}

  start(): void {
    this.#active = true;
    this.#loop = (async () => {
      while (this.#active) {
        const workers: WorkerInfo[] | null = await this.service.workers().catch(() => null);
        const a = workers?.find((w) => w.name === 'A');
        const b = workers?.find((w) => w.name === 'B');
        if (this.#active && a && b) {
          this.aBusy.push(a.slots.busy);
          this.bQueue.push(b.queue);
        }
        await sleep(this.everyMs);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#active = false;
    await this.#loop;
  }
}

function phase(outcomes: RequestOutcome[], sampler: AdminSampler): PhaseResult {
  const ttftMs = outcomes.flatMap((o) => (o.ok && o.ttftMs !== null ? [o.ttftMs] : []));
  const serverTtftMs = outcomes.flatMap((o) => (o.ok && typeof o.serverTtftMs === 'number' ? [o.serverTtftMs] : []));
  return {
    ttftMs,
    serverTtftMs,
    totalMs: outcomes.map((o) => o.totalMs),
    ttftP50: percentile(ttftMs, 50),
    ttftP95: percentile(ttftMs, 95),
    serverTtftP50: percentile(serverTtftMs, 50),
    serverTtftP95: percentile(serverTtftMs, 95),
    failures: outcomes.filter((o) => !o.ok).map((o) => o.error ?? 'failed'),
    aSlotsBusy: [...sampler.aBusy],
    bQueue: [...sampler.bQueue],
  };
}

/** One request at a time, `gapMs` apart (so a phase spans a few of the hosts' 500 ms stats reports). */
async function sequential(client: HttpStreamClient, requests: BenchRequest[], gapMs = 0): Promise<RequestOutcome[]> {
  const outcomes: RequestOutcome[] = [];
  for (const [i, request] of requests.entries()) {
    if (i > 0 && gapMs > 0) await sleep(gapMs);
    outcomes.push(await client.run(request));
  }
  return outcomes;
}

/** Polls the admin API until `test` holds for worker A (host stats arrive every 500 ms). */
async function waitForA(service: ServiceProcess, what: string, test: (a: WorkerInfo) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const a = (await service.workers().catch(() => null))?.find((w) => w.name === 'A');
    if (a && test(a)) return;
    if (Date.now() > deadline) throw new Error(`A did not get ${what} within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

const GAP_MS = 100;

export async function measureIsolation(c: IsolationConfig): Promise<IsolationResult> {
  const aEnv = benchWorkerEnv({ modelPath: c.modelA, slots: c.slots, ctxPerSlot: c.ctxPerSlot, batchSize: c.batchSize, threads: c.threads }, 1024);
  const bEnv = {
    MODEL_PATH: c.modelB,
    WORKER_CONCURRENCY: '2',
    REPLICAS: '1',
    MODEL_THREADS: String(c.bThreads),
    CTX_SIZE: String(c.ctxPerSlot),
    GPU_LAYERS: 'auto',
    MAX_QUEUE: '64',
    JETSTREAM: 'off',
  };
  const service = new ServiceProcess({
    root: c.root,
    workers: [{ name: 'A', env: aEnv }, { name: 'B', env: bEnv }],
    shutdownGraceMs: 1000,
    log: c.log,
  });
  c.register(service);
  c.log(`two-model isolation: starting a supervisor with A (${c.slots} slots) and B (tiny, ${c.bThreads} thread)`);
  await service.start();
  const a = new HttpStreamClient({ host: '127.0.0.1', port: service.port('A'), protocol: serviceCompletionProtocol });
  const b = new HttpStreamClient({ host: '127.0.0.1', port: service.port('B'), protocol: serviceCompletionProtocol });
  let sequence = 2_000_000;
  const bSpec: WorkloadSpec = { ...c.workload, maxTokens: c.bMaxTokens };
  const aSpec: WorkloadSpec = { ...c.workload, maxTokens: c.aMaxTokens };
  const next = (spec: WorkloadSpec, count: number) => {
    const requests = roundRequests(spec, count, sequence);
    sequence += count;
    return requests;
  };
  const abort = new AbortController();
  // One listener per in-flight A request (`slots` of them), removed as each ends.
  setMaxListeners(4 * c.slots, abort.signal);
  try {
    // Warm-up: one short wave on A, two requests on B.
    const warmA = await Promise.all(next({ ...aSpec, maxTokens: 8 }, c.slots).map((r) => a.run(r)));
    const warmB = await sequential(b, next(bSpec, 2));
    const bad = [...warmA, ...warmB].find((o) => !o.ok);
    if (bad) throw new Error(`isolation warm-up failed: ${bad.error}`);

    // B alone (once the admin API no longer reports A's warm-up as busy).
    await waitForA(service, 'idle', (w) => w.slots.busy === 0 && w.in_flight === 0, 10_000);
    let sampler = new AdminSampler(service);
    sampler.start();
    const idleOutcomes = await sequential(b, next(bSpec, c.requests), GAP_MS);
    await sampler.stop();
    const idle = phase(idleOutcomes, sampler);

    // A saturated: `slots` closed-loop clients with long requests until B is done.
    let stop = false;
    let aRequestsCompleted = 0;
    let aTokensOut = 0;
    // Every token A streams, as it arrives: A's requests (128 tokens at 16 slots) outlast B's whole
    // phase, so completed requests would not say what A delivered while B ran.
    let aTokensStreamed = 0;
    const countA = (n: number) => (aTokensStreamed += n);
    const aFailures: string[] = [];
    const clients = Array.from({ length: c.slots }, async () => {
      while (!stop) {
        const [request] = next(aSpec, 1);
        const outcome = await a.run(request!, abort.signal, countA);
        if (outcome.ok) {
          aRequestsCompleted++;
          aTokensOut += outcome.tokensOut ?? 0;
        } else if (!stop) {
          aFailures.push(outcome.error ?? 'failed');
          await sleep(100);
        }
      }
    });
    // Saturated = every A slot busy (host stats reach the admin API every 500 ms), then one more
    // second so the prompts are in and A is decoding.
    await waitForA(service, `${c.slots} busy slots`, (w) => w.slots.busy === c.slots, 60_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message} (${aFailures[0] ?? 'no failed A requests'})`);
    });
    await sleep(1000);
    sampler = new AdminSampler(service);
    sampler.start();
    const windowStart = performance.now();
    const aTokensBefore = aTokensStreamed;
    const saturatedOutcomes = await sequential(b, next(bSpec, c.requests), GAP_MS);
    const aWindowMs = performance.now() - windowStart;
    const aTokensDuringB = aTokensStreamed - aTokensBefore;
    await sampler.stop();
    const saturated = {
      ...phase(saturatedOutcomes, sampler),
      aRequestsCompleted,
      aTokensOut,
      aTokensDuringB,
      aWindowMs,
      aTokensPerSecondDuringB: aWindowMs > 0 ? (aTokensDuringB * 1000) / aWindowMs : null,
    };
    stop = true;
    abort.abort();
    await Promise.all(clients);

    const notes: string[] = [];
    if (idle.failures.length) notes.push(`B idle: ${idle.failures.length} failed (${idle.failures[0]})`);
    if (saturated.failures.length) notes.push(`B with A saturated: ${saturated.failures.length} failed (${saturated.failures[0]})`);
    if (aFailures.length) notes.push(`A load: ${aFailures.length} failed requests (${aFailures[0]})`);
    const bQueue = [...idle.bQueue, ...saturated.bQueue];
    const bQueueMax = bQueue.length ? Math.max(...bQueue) : null;
    if (bQueueMax !== null && bQueueMax > 0) notes.push(`B had requests waiting for a slot (queue up to ${bQueueMax})`);
    const aBusyMin = saturated.aSlotsBusy.length ? Math.min(...saturated.aSlotsBusy) : null;
    if (aBusyMin !== null && median(saturated.aSlotsBusy)! < c.slots) {
      notes.push(`A was not saturated for most of B's requests (busy slots median ${median(saturated.aSlotsBusy)})`);
    }
    const ratio = (x: number | null, y: number | null) => (x !== null && y ? x / y : null);
    return {
      modelA: c.modelA,
      modelB: c.modelB,
      workerEnv: { A: aEnv, B: bEnv },
      requests: c.requests,
      bMaxTokens: c.bMaxTokens,
      aConcurrency: c.slots,
      aMaxTokens: c.aMaxTokens,
      idle,
      saturated,
      ttftP50Ratio: ratio(saturated.ttftP50, idle.ttftP50),
      ttftP95Ratio: ratio(saturated.ttftP95, idle.ttftP95),
      bQueueMax,
      aSlotsBusyMinWhileSaturated: aBusyMin,
      flagged: notes.length > 0,
      notes,
    };
  } finally {
    abort.abort();
    a.close();
    b.close();
    await service.stop();
  }
}

/** The goal for B's TTFT with A saturated over B's TTFT with A idle. */
export const ISOLATION_TTFT_RATIO_GOAL = 1.5;

export function formatIsolation(r: IsolationResult): string {
  const f = (v: number | null) => (v === null ? '-' : v.toFixed(0));
  const x = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)}x`);
  const lines = [
    `two-model isolation: A ${r.saturated.aTokensPerSecondDuringB?.toFixed(1) ?? '-'} tok/s while saturated ` +
      `(${r.saturated.aTokensDuringB} tokens streamed in ${(r.saturated.aWindowMs / 1000).toFixed(1)} s, ${r.aConcurrency} clients); ` +
      `B TTFT idle p50/p95 ${f(r.idle.ttftP50)} / ${f(r.idle.ttftP95)} ms ` +
      `vs with A saturated p50/p95 ${f(r.saturated.ttftP50)} / ${f(r.saturated.ttftP95)} ms ` +
      `(ratio ${x(r.ttftP50Ratio)} / ${x(r.ttftP95Ratio)}; goal <= ${ISOLATION_TTFT_RATIO_GOAL}x)${r.flagged ? '  FLAGGED' : ''}`,
    `  B: tiny model, ${r.requests} sequential requests of ${r.bMaxTokens} tokens per phase; A: ${r.aConcurrency} clients x ${r.aMaxTokens} tokens, EOS ignored`,
    `  B server-side ttft_ms (submit to first token, includes any wait for a slot) p50/p95 ` +
      `${f(r.idle.serverTtftP50)} / ${f(r.idle.serverTtftP95)} ms idle vs ${f(r.saturated.serverTtftP50)} / ${f(r.saturated.serverTtftP95)} ms with A saturated; ` +
      `B queue max ${r.bQueueMax ?? '-'} over ${r.idle.bQueue.length + r.saturated.bQueue.length} admin samples; ` +
      `A busy slots min ${r.aSlotsBusyMinWhileSaturated ?? '-'}/${r.aConcurrency} while B ran`,
  ];
  for (const n of r.notes) lines.push(`  ! ${n}`);
  return lines.join('\n');
}
