/**
 * `npm run bench`: our engine against llama.cpp's llama-server on the same model, build, threads,
 * context per slot, batch size, sampling and workload. Prints a comparison table and saves the
 * figures as JSON under bench/results/. See docs/benchmarks.md for what is compared and why.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLlamaTool } from './build-addon.mjs';
import { generateModel } from './gen-model.mjs';
import { EngineTarget } from './bench/engine-target.js';
import { LlamaServerTarget } from './bench/llama-server-target.js';
import { machineInfo } from './bench/machine.js';
import { parseOptions, USAGE, type BenchOptions } from './bench/options.js';
import { batchingGain, comparisonRows, formatTable } from './bench/report.js';
import { runRounds, summarize, warmUp, type RunPlan } from './bench/runner.js';
import type { BenchTarget } from './bench/target.js';
import { BANNED_SPM_IDS, fitBaseText, requestTag, SAMPLING } from './bench/workload.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

const targets: BenchTarget[] = [];
let stopping = false;

async function stopTargets(): Promise<void> {
  await Promise.allSettled(targets.map((t) => t.stop()));
}

function onSignal(signal: NodeJS.Signals): void {
  if (stopping) return;
  stopping = true;
  log(`${signal}: stopping llama-server and the engine`);
  const code = signal === 'SIGINT' ? 130 : 143;
  const force = setTimeout(() => process.exit(code), 6000);
  force.unref();
  void stopTargets().finally(() => process.exit(code));
}

async function main(options: BenchOptions): Promise<void> {
  const startedAt = new Date();
  const loadAtStart = loadavg();
  const load = loadAtStart[0]!;
  if (load > cpus().length * 0.5) {
    log(`warning: load average ${load.toFixed(2)} on ${cpus().length} cores; other work skews both sides (see the JSON's loadAverage*)`);
  }
  const serverBin = options.serverBin ? resolve(options.serverBin) : buildLlamaTool('llama-server');
  const modelPath: string = await generateModel({ preset: 'bench', log });

  const shared = { modelPath, slots: options.slots, ctxPerSlot: options.ctxPerSlot, batchSize: options.batchSize, threads: options.threads, kvUnified: options.kvUnified };
  const ours = new EngineTarget(shared);
  const server = new LlamaServerTarget({ ...shared, binary: serverBin, extraArgs: options.serverArgs });
  targets.push(ours, server);
  log('loading the model in-process and starting llama-server');
  await ours.start();
  await server.start();

  const baseText = fitBaseText(options.promptTokens, (text) => ours.countTokens(text));
  const plan: RunPlan = {
    concurrency: options.concurrency,
    rounds: options.rounds,
    requestsPerClient: options.requestsPerClient,
    workload: { baseText, maxTokens: options.maxTokens, sampling: SAMPLING },
    log,
  };
  log(`prompt: about ${ours.countTokens(`${requestTag(1000)} ${baseText}`)} tokens; ${options.maxTokens} generated per request; ` +
    `levels ${options.concurrency.join(',')}; ${options.rounds} rounds; ${options.requestsPerClient} requests per client`);
  log('warming up both sides');
  await warmUp(targets, plan);
  const runs = await runRounds(targets, plan);

  const labels = targets.map((t) => t.label);
  const summaries = summarize(runs, labels, options.concurrency);
  const rows = comparisonRows(summaries, ours.label, server.label);
  const gain = batchingGain(rows);
  const idleServerCpu = runs.filter((r) => r.target === ours.label).map((r) => r.othersCpuSeconds[server.label] ?? 0);

  process.stdout.write(`\n${formatTable(rows)}\n`);
  if (gain) {
    process.stdout.write(
      `\nbatching gain (c${gain.to} / c${gain.from} aggregate tok/s): ours ${gain.ours?.toFixed(2) ?? '-'}x, ` +
        `llama-server ${gain.server?.toFixed(2) ?? '-'}x\n`,
    );
  }
  process.stdout.write(`ours: in-process engine (no HTTP); llama-server: HTTP + SSE over loopback\n`);

  const finishedAt = new Date();
  const out = options.out
    ? resolve(options.out)
    : join(root, 'bench', 'results', `${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  const report = {
    schema: 'lmserve-bench/1',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    options,
    machine: { ...machineInfo(root, modelPath), loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg() },
    workload: {
      promptExample: `${requestTag(0)} ${baseText}`,
      promptNote: 'each request gets a distinct leading tag (different first token), so no prompt prefix beyond BOS is reusable',
      maxTokens: options.maxTokens,
      ignoreEos: true,
      sampling: SAMPLING,
      seeds: '1000 + index of the request in its round (same on both sides)',
      logitBias: `ids ${BANNED_SPM_IDS[0]}..${BANNED_SPM_IDS[BANNED_SPM_IDS.length - 1]} banned on both sides`,
      clientsPerLevel: 'concurrency N = N closed-loop clients',
      requestsPerClient: options.requestsPerClient,
      tokensPerSecond: 'sum of server-reported generated tokens / wall time of the level (first send to last stream end)',
      ttft: 'client side: request sent to first streamed token',
    },
    targets: { ours: ours.describe(), 'llama-server': server.describe() },
    rows,
    batchingGain: gain,
    idleCheck: {
      note: 'CPU seconds llama-server used while our engine ran (it should be idle)',
      llamaServerCpuSecondsDuringOurs: idleServerCpu,
    },
    summaries,
    runs,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  log(`saved ${out}`);
}

const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let options: BenchOptions;
try {
  options = parseOptions(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
  process.exit(2);
}
if (options.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
for (const s of signals) process.on(s, onSignal);
let exitCode = 0;
try {
  await main(options);
} catch (err) {
  exitCode = stopping ? 130 : 1;
  if (!stopping) log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
} finally {
  await stopTargets();
}
process.exit(exitCode);
