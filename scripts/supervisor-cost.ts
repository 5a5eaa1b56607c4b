/**
 * What one streamed request costs the supervisor, thread by thread: a supervisor with one worker
 * set up as in the bench (16 slots, 2 threads), closed-loop clients sending the bench's request
 * body over new connections, and each supervisor thread's CPU (schedstat, ns) and voluntary
 * context switches (each one a sleep, so a wake-up) per request, plus the worker's counters (how
 * many streams were handed to the host, `direct`). The bench prints the total per token; this
 * says which thread and how many wake-ups, which is what found the relayed streams at c=8.
 *
 *   npm run supervisor-cost -- [--concurrency 1] [--requests 24] [--warm-up 64] [--max-tokens 128]
 *                              [--model-preset bench] [--json FILE]
 *   npm run supervisor-cost -- --levels 1,4,8,16 [--rounds 3] [--pause-ms 2000] ...
 *
 * With --levels, the bench's sequence instead: each round runs every level (max(8, 3 x c) requests,
 * as the bench does), a line per level with the main thread's CPU apart from the rest (V8's helper
 * threads, where a major collection's marking runs), then the figure over everything.
 *
 * Process variables (LMSERVE_DIRECT_QUEUE, LMSERVE_RELAY_INTERVAL_MS, ...) reach the supervisor.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { generateModel } from './gen-model.mjs';
import { HttpStreamClient } from './bench/http-stream.js';
import { ServiceProcess } from './bench/service.js';
import { benchWorkerEnv, serviceCompletionProtocol } from './bench/service-target.js';
import { BANNED_SPM_IDS, SAMPLING, fitBaseText, requestTag } from './bench/workload.js';
import type { BenchRequest } from './bench/target.js';
import { repoRoot, sleep, threadSamples, type ThreadSample } from './lib/service-harness.js';

const { values } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '1' },
    requests: { type: 'string', default: '24' },
    'warm-up': { type: 'string', default: '64' },
    'max-tokens': { type: 'string', default: '128' },
    'model-preset': { type: 'string', default: 'bench' },
    json: { type: 'string' },
    levels: { type: 'string' },
    rounds: { type: 'string', default: '1' },
    'pause-ms': { type: 'string', default: '2000' },
  },
});

function count(name: string, min: number): number {
  const value = Number(values[name as keyof typeof values]);
  if (!Number.isInteger(value) || value < min) throw new Error(`--${name} must be a whole number >= ${min}`);
  return value;
}

const concurrency = count('concurrency', 1);
const requests = Math.max(concurrency, count('requests', 1));
const warmUp = count('warm-up', 0);
const maxTokens = count('max-tokens', 1);
const log = (line: string) => process.stderr.write(`[supervisor-cost] ${line}\n`);

const modelPath: string = await generateModel({ preset: values['model-preset'] as string, log });
const service = new ServiceProcess({
  root: repoRoot,
  workers: [{ name: 'bench', env: benchWorkerEnv({ modelPath, slots: 16, ctxPerSlot: 512, batchSize: 512, threads: 2 }, 1024) }],
  shutdownGraceMs: 2000,
  log,
});
process.once('SIGINT', () => void service.stop().finally(() => process.exit(130)));

try {
  await service.start();
  const client = new HttpStreamClient({ host: '127.0.0.1', port: service.port('bench'), protocol: serviceCompletionProtocol });
  // About 64 prompt tokens, as in the bench; a tag up front so no two prompts share a prefix.
  const text = fitBaseText(64, (t) => Math.ceil(t.length / 4));
  let sequence = 0;
  const request = (tokens: number): BenchRequest => {
    const index = sequence++;
    return { index, prompt: `${requestTag(index)} ${text}`, maxTokens: tokens, seed: index, sampling: SAMPLING, ignoreEos: true, bannedTokenIds: BANNED_SPM_IDS };
  };
  log(`warming up: ${warmUp} requests of 8 tokens`);
  for (let i = 0; i < warmUp; i++) await client.run(request(8));
  await sleep(3000);

  const pid = service.supervisorPid;
  if (pid === undefined) throw new Error('the supervisor is not running');

  /** One level: `clients` closed-loop clients until `total` requests are done, each supervisor thread's CPU around it. */
  const measure = async (clients: number, total: number) => {
    const before = threadSamples(pid) ?? new Map<string, ThreadSample>();
    const workersBefore = (await service.workers()).find((w) => w.name === 'bench');
    const started = performance.now();
    let tokens = 0;
    let failed = 0;
    const ttft: number[] = [];
    let left = total;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (left > 0) {
          left--;
          const outcome = await client.run(request(maxTokens));
          if (!outcome.ok) failed++;
          tokens += outcome.tokensOut ?? 0;
          if (outcome.ttftMs !== null) ttft.push(outcome.ttftMs);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const after = threadSamples(pid) ?? new Map<string, ThreadSample>();
    const workersAfter = (await service.workers()).find((w) => w.name === 'bench');
    const threads = [...after.entries()].map(([tid, t]) => {
      const b = before.get(tid);
      return { tid, main: tid === String(pid), name: tid === String(pid) ? `${t.name} (main)` : t.name, cpuMs: (t.cpuNs - (b?.cpuNs ?? 0)) / 1e6, switches: t.voluntarySwitches - (b?.voluntarySwitches ?? 0) };
    });
    const totalMs = threads.reduce((sum, t) => sum + t.cpuMs, 0);
    const mainMs = threads.find((t) => t.main)?.cpuMs ?? 0;
    ttft.sort((x, y) => x - y);
    const direct = (workersAfter?.requests.direct ?? 0) - (workersBefore?.requests.direct ?? 0);
    return {
      concurrency: clients,
      requests: total,
      maxTokens,
      failed,
      tokens,
      tokensPerSecond: tokens / seconds,
      ttftP50Ms: ttft[ttft.length >> 1] ?? null,
      handedOver: direct,
      supervisorMs: totalMs,
      mainThreadMs: mainMs,
      supervisorMsPerRequest: totalMs / total,
      supervisorUsPerToken: tokens > 0 ? (totalMs * 1000) / tokens : null,
      threads: threads
        .filter((t) => t.cpuMs >= 0.01 * total || t.switches > 0)
        .sort((x, y) => y.cpuMs - x.cpuMs)
        .map(({ main: _main, ...t }) => ({ ...t, msPerRequest: t.cpuMs / total, switchesPerRequest: t.switches / total })),
    };
  };

  if (values.levels !== undefined) {
    const levels = values.levels.split(',').map((v) => Number(v.trim()));
    if (levels.length === 0 || levels.some((c) => !Number.isInteger(c) || c < 1)) throw new Error('--levels must be whole numbers >= 1, comma-separated (e.g. 1,4,8,16)');
    const rounds = count('rounds', 1);
    const pauseMs = count('pause-ms', 0);
    const results = [];
    const lines = ['| round | concurrency | requests | tok/s | supervisor µs/token | main thread ms | other threads ms |', '|---|---|---|---|---|---|---|'];
    for (let round = 0; round < rounds; round++) {
      for (const c of levels) {
        const r = await measure(c, Math.max(8, 3 * c));
        results.push({ round, ...r });
        const line = `| ${round} | ${c} | ${r.requests} | ${r.tokensPerSecond.toFixed(1)} | ${r.supervisorUsPerToken?.toFixed(1) ?? '-'} | ${r.mainThreadMs.toFixed(1)} | ${(r.supervisorMs - r.mainThreadMs).toFixed(1)} |${r.failed ? ` ${r.failed} FAILED` : ''}`;
        lines.push(line);
        log(line);
        // Where the bench runs llama-server's level, the service is idle.
        await sleep(pauseMs);
      }
    }
    const tokens = results.reduce((n, r) => n + r.tokens, 0);
    const ms = results.reduce((n, r) => n + r.supervisorMs, 0);
    lines.push(`over every level and round: ${tokens > 0 ? ((ms * 1000) / tokens).toFixed(1) : '-'} µs of supervisor CPU per token (${tokens} tokens)`);
    process.stdout.write(`${lines.join('\n')}\n`);
    if (values.json) writeFileSync(values.json, `${JSON.stringify({ levels, rounds, maxTokens, results }, null, 2)}\n`);
    if (results.some((r) => r.failed > 0)) process.exitCode = 1;
  } else {
    log(`measuring: ${requests} requests of ${maxTokens} tokens from ${concurrency} clients`);
    const report = await measure(concurrency, requests);
    const lines = [
      `supervisor pid ${pid}: ${requests} requests of ${maxTokens} tokens, ${concurrency} clients, ${report.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${report.ttftP50Ms?.toFixed(0) ?? '-'} ms, ${report.handedOver} of ${requests} streams handed to the host${report.failed ? `, ${report.failed} FAILED` : ''}`,
      '| thread | name | CPU ms / request | sleeps / request |',
      '|---|---|---|---|',
      ...report.threads.map((t) => `| ${t.tid} | ${t.name} | ${t.msPerRequest.toFixed(2)} | ${t.switchesPerRequest.toFixed(1)} |`),
      `total: ${report.supervisorMsPerRequest.toFixed(2)} ms of supervisor CPU per request, ${report.supervisorUsPerToken?.toFixed(1) ?? '-'} µs per token`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
    if (report.failed > 0) process.exitCode = 1;
  }
  client.close();
} finally {
  await service.stop();
}
