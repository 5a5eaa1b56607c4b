/**
 * Load and soak: one model driven at twice its capacity (clients = 2 × (slots + queue)) for a
 * while, streaming and not, through a real supervisor. It reports, and checks:
 *   - every accepted request completed (200, whole output), every refused one was a 429 with
 *     Retry-After, nothing else (no 5xx, no error event, no dropped connection);
 *   - busy slots and in-flight requests back to 0 once the load stops;
 *   - RSS of the supervisor and the model host flat (the last fifth of the run against the
 *     first fifth after warm-up);
 *   - the supervisor's and the host's event-loop lag (from their own metrics: the supervisor's
 *     p99 under 50 ms).
 *
 *   npm run soak -- [--minutes 3] [--model data/models/bench/model.gguf] [--slots 4] [--queue 4]
 *                   [--max-tokens 48] [--json out.json]
 *
 * Exit 0 when every check holds. test/scripts/soak.test.ts runs it for a few seconds.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ServiceHarness, freePort, readSse, repoRoot, waitFor } from './lib/service-harness.js';

interface Sample {
  t: number;
  supervisorRss: number;
  hostRss: number;
  busy: number;
  inFlight: number;
}

export interface SoakReport {
  seconds: number;
  clients: number;
  capacity: number;
  sent: number;
  completed: number;
  rejected: number;
  rejectedWithoutRetryAfter: number;
  other: Record<string, number>;
  tokensOut: number;
  tokensPerSecond: number;
  afterLoad: { busy: number; inFlight: number };
  rss: { supervisor: { startMiB: number; endMiB: number; growth: number }; host: { startMiB: number; endMiB: number; growth: number } };
  /** Event-loop lag beyond the 100 ms sampling interval: the supervisor's p99, the host's mean over its last stats interval. */
  lagP99Seconds: { supervisor: number | null; host: number | null };
  hostRestarts: number;
  checks: Record<string, boolean>;
}

function rssBytes(pid: number | null | undefined): number {
  if (!pid) return 0;
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function metric(text: string, name: string): number | null {
  let best: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const value = Number(line.split(' ').at(-1));
    if (Number.isFinite(value)) best = Math.max(best ?? 0, value);
  }
  return best;
}

const excess = (seconds: number | null) => (seconds === null ? null : Math.round(Math.max(0, seconds - 0.1) * 1e4) / 1e4);
const mean = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;

export async function soak(options: { seconds: number; model: string; slots: number; queue: number; maxTokens: number; log?: (line: string) => void }): Promise<SoakReport> {
  const log = options.log ?? (() => undefined);
  const service = new ServiceHarness({ tempPrefix: 'lmserve-soak-', outputLimit: 1 << 20 });
  const port = await freePort();
  await service.writeSupervisorEnv({ LOG_LEVEL: 'warn', SHUTDOWN_GRACE_MS: '10000' });
  service.writeWorkerEnv('soak', {
    MODEL_NAME: 'soak',
    MODEL_PATH: resolve(options.model),
    HTTP_ADDR: `127.0.0.1:${port}`,
    WORKER_CONCURRENCY: String(options.slots),
    MAX_QUEUE: String(options.queue),
    CTX_SIZE: '1024',
    GPU_LAYERS: '0',
    LOG_BODIES: 'off',
  });
  const capacity = options.slots + options.queue;
  const clients = 2 * capacity;
  const report: Partial<SoakReport> = { clients, capacity };
  try {
    await service.start(['--all'], { timeoutMs: 60_000 });
    await service.waitReady('soak', 120_000);
    const url = service.url('soak', '/v1/completions');
    const counts = { sent: 0, completed: 0, rejected: 0, rejectedWithoutRetryAfter: 0, tokensOut: 0 };
    const other: Record<string, number> = {};
    const fail = (what: string) => (other[what] = (other[what] ?? 0) + 1);
    const samples: Sample[] = [];
    const started = Date.now();
    const end = started + options.seconds * 1000;
    let hostPid = (await service.worker('soak')).pid;

    const sampler = setInterval(() => {
      void service.worker('soak').then((w) => {
        hostPid = w.pid ?? hostPid;
        samples.push({ t: (Date.now() - started) / 1000, supervisorRss: rssBytes(service.child?.pid), hostRss: rssBytes(hostPid), busy: w.slots?.busy ?? 0, inFlight: w.in_flight ?? 0 });
      }, () => undefined);
    }, 1000);

    const one = async (n: number): Promise<void> => {
      const stream = n % 2 === 1;
      const body = JSON.stringify({ input: `Request ${n}: tell me something`, params: { max_tokens: options.maxTokens, ignore_eos: true, stream } });
      counts.sent++;
      let res: Response;
      try {
        res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      } catch (err) {
        fail(`connection: ${(err as Error).message}`);
        return;
      }
      if (res.status === 429) {
        counts.rejected++;
        if (!/^\d+$/.test(res.headers.get('retry-after') ?? '')) counts.rejectedWithoutRetryAfter++;
        await res.text();
        await new Promise((r) => setTimeout(r, 50));
        return;
      }
      if (res.status !== 200) {
        fail(`status ${res.status}: ${(await res.text()).slice(0, 120)}`);
        return;
      }
      if (!stream) {
        const json = (await res.json()) as { usage?: { tokens_out?: number } };
        if (json.usage?.tokens_out === options.maxTokens) {
          counts.completed++;
          counts.tokensOut += options.maxTokens;
        } else fail(`short output: ${JSON.stringify(json).slice(0, 120)}`);
        return;
      }
      let tokens = 0;
      let done = false;
      try {
        for await (const e of readSse(res.body as unknown as AsyncIterable<Uint8Array>)) {
          if (e.event === 'token') tokens += (e.data as { tokens?: number[] }).tokens?.length ?? 0;
          else if (e.event === 'done') done = true;
          else if (e.event === 'error') fail(`error event: ${JSON.stringify(e.data).slice(0, 120)}`);
        }
      } catch (err) {
        fail(`stream broke: ${(err as Error).message}`);
        return;
      }
      if (done && tokens === options.maxTokens) {
        counts.completed++;
        counts.tokensOut += tokens;
      } else if (!done) fail('stream ended without done');
      else fail(`stream with ${tokens} tokens`);
    };

    let next = 0;
    const client = async () => {
      while (Date.now() < end) await one(next++);
    };
    log(`driving ${clients} clients (capacity ${capacity}: ${options.slots} slots + ${options.queue} queued) for ${options.seconds} s`);
    await Promise.all(Array.from({ length: clients }, client));
    const seconds = (Date.now() - started) / 1000;
    clearInterval(sampler);
    const after = await waitFor('the slots idle', async () => {
      const w = await service.worker('soak');
      return (w.slots?.busy ?? 0) === 0 && (w.in_flight ?? 0) === 0 ? w : undefined;
    }, 30_000).catch(async () => service.worker('soak'));
    const metrics = (await (await fetch(service.url('soak', '/metrics'))).text()) + (await (await fetch(service.adminUrl('/metrics'))).text().catch(() => ''));
    const worker = await service.worker('soak');
    // RSS: the first fifth after a warm-up of 10% against the last fifth.
    const steady = samples.filter((s) => s.t >= seconds * 0.1);
    const fifth = Math.max(1, Math.floor(steady.length / 5));
    const rssOf = (key: 'supervisorRss' | 'hostRss') => {
      const start = mean(steady.slice(0, fifth).map((s) => s[key]));
      const endRss = mean(steady.slice(-fifth).map((s) => s[key]));
      return { startMiB: mib(start), endMiB: mib(endRss), growth: start > 0 ? Math.round((endRss / start - 1) * 1000) / 1000 : 0 };
    };
    Object.assign(report, {
      seconds: Math.round(seconds * 10) / 10,
      ...counts,
      other,
      tokensPerSecond: Math.round((counts.tokensOut / seconds) * 10) / 10,
      afterLoad: { busy: after.slots?.busy ?? -1, inFlight: after.in_flight ?? -1 },
      rss: { supervisor: rssOf('supervisorRss'), host: rssOf('hostRss') },
      // Both processes sample their loop every 100 ms and report the whole interval: the lag is what exceeds it.
      lagP99Seconds: {
        supervisor: excess(metric(metrics, 'lmserve_supervisor_nodejs_eventloop_lag_p99_seconds')),
        host: excess(metric(metrics, 'lmserve_host_event_loop_lag_seconds')),
      },
      hostRestarts: worker.restarts ?? 0,
    });
  } finally {
    await service.stop();
    service.removeDir();
  }
  const r = report as SoakReport;
  r.checks = {
    'every accepted request completed': r.completed > 0 && Object.keys(r.other).length === 0,
    'refusals were 429 with Retry-After': r.rejectedWithoutRetryAfter === 0,
    'the load exceeded capacity (some 429)': r.rejected > 0,
    'slots and in-flight back to 0': r.afterLoad.busy === 0 && r.afterLoad.inFlight === 0,
    'no host restart': r.hostRestarts === 0,
    // Flat: under 25% growth and 64 MiB between the first and the last fifth of the run.
    'supervisor RSS flat': r.rss.supervisor.growth < 0.25 || r.rss.supervisor.endMiB - r.rss.supervisor.startMiB < 64,
    'host RSS flat': r.rss.host.growth < 0.25 || r.rss.host.endMiB - r.rss.host.startMiB < 64,
    'supervisor event-loop lag p99 under 50 ms': r.lagP99Seconds.supervisor !== null && r.lagP99Seconds.supervisor < 0.05,
  };
  return r;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' },
      seconds: { type: 'string' },
      model: { type: 'string', default: resolve(repoRoot, 'data/models/bench/model.gguf') },
      slots: { type: 'string', default: '4' },
      queue: { type: 'string', default: '4' },
      'max-tokens': { type: 'string', default: '48' },
      json: { type: 'string' },
    },
  });
  const seconds = values.seconds ? Number(values.seconds) : Number(values.minutes ?? 3) * 60;
  const report = await soak({
    seconds,
    model: values.model,
    slots: Number(values.slots),
    queue: Number(values.queue),
    maxTokens: Number(values['max-tokens']),
    log: (line) => console.log(line),
  });
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2));
  const r = report;
  console.log(`${r.seconds} s, ${r.clients} clients on a capacity of ${r.capacity}`);
  console.log(`sent ${r.sent}: completed ${r.completed}, refused 429 ${r.rejected}, other ${JSON.stringify(r.other)}`);
  console.log(`throughput ${r.tokensPerSecond} tok/s; after the load: busy ${r.afterLoad.busy}, in flight ${r.afterLoad.inFlight}; host restarts ${r.hostRestarts}`);
  console.log(`RSS supervisor ${r.rss.supervisor.startMiB} -> ${r.rss.supervisor.endMiB} MiB (${(r.rss.supervisor.growth * 100).toFixed(1)}%), host ${r.rss.host.startMiB} -> ${r.rss.host.endMiB} MiB (${(r.rss.host.growth * 100).toFixed(1)}%)`);
  console.log(`event-loop lag p99: supervisor ${r.lagP99Seconds.supervisor ?? '-'} s, host ${r.lagP99Seconds.host ?? '-'} s`);
  for (const [check, ok] of Object.entries(r.checks)) console.log(`${ok ? 'ok  ' : 'FAIL'} ${check}`);
  process.exitCode = Object.values(r.checks).every(Boolean) ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) void main();
