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
  const before = threadSamples(pid) ?? new Map<string, ThreadSample>();
  const workersBefore = (await service.workers()).find((w) => w.name === 'bench');
  const started = performance.now();
  let tokens = 0;
  let failed = 0;
  const ttft: number[] = [];
  let left = requests;
  log(`measuring: ${requests} requests of ${maxTokens} tokens from ${concurrency} clients`);
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
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
  client.close();

  const threads = [...after.entries()].map(([tid, t]) => {
    const b = before.get(tid);
    return { tid, name: tid === String(pid) ? `${t.name} (main)` : t.name, cpuMs: (t.cpuNs - (b?.cpuNs ?? 0)) / 1e6, switches: t.voluntarySwitches - (b?.voluntarySwitches ?? 0) };
  });
  const totalMs = threads.reduce((sum, t) => sum + t.cpuMs, 0);
  ttft.sort((x, y) => x - y);
  const direct = (workersAfter?.requests.direct ?? 0) - (workersBefore?.requests.direct ?? 0);
  const report = {
    concurrency,
    requests,
    maxTokens,
    failed,
    tokens,
    tokensPerSecond: tokens / seconds,
    ttftP50Ms: ttft[ttft.length >> 1] ?? null,
    handedOver: direct,
    supervisorMsPerRequest: totalMs / requests,
    supervisorUsPerToken: tokens > 0 ? (totalMs * 1000) / tokens : null,
    threads: threads
      .filter((t) => t.cpuMs >= 0.01 * requests || t.switches > 0)
      .sort((x, y) => y.cpuMs - x.cpuMs)
      .map((t) => ({ ...t, msPerRequest: t.cpuMs / requests, switchesPerRequest: t.switches / requests })),
  };
  const lines = [
    `supervisor pid ${pid}: ${requests} requests of ${maxTokens} tokens, ${concurrency} clients, ${report.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${report.ttftP50Ms?.toFixed(0) ?? '-'} ms, ${direct} of ${requests} streams handed to the host${failed ? `, ${failed} FAILED` : ''}`,
    '| thread | name | CPU ms / request | sleeps / request |',
    '|---|---|---|---|',
    ...report.threads.map((t) => `| ${t.tid} | ${t.name} | ${t.msPerRequest.toFixed(2)} | ${t.switchesPerRequest.toFixed(1)} |`),
    `total: ${report.supervisorMsPerRequest.toFixed(2)} ms of supervisor CPU per request, ${report.supervisorUsPerToken?.toFixed(1) ?? '-'} µs per token`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
  if (failed > 0) process.exitCode = 1;
} finally {
  await service.stop();
}
