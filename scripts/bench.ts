/**
 * `npm run bench`: our service (through its per-model HTTP port; `--ours engine` drives the engine
 * in-process instead) against llama.cpp's llama-server on the same model, build, threads, context
 * per slot, batch size, sampling and workload. With the service, a third target runs in the same
 * rounds: the service with AUDIT=off and METRICS=off (`ours-bare`), and a second table gives what
 * the audit trail and metrics cost (throughput, TTFT, supervisor CPU per 1,000 tokens). Then the
 * grammar row (the built-in json grammar on ours and llama-server, same servers), then the
 * two-model row (model B's TTFT while model A is idle and while A is saturated), then the
 * scenarios (shared prefix by default; mixed lengths and multi-model on request), each on fresh
 * servers. Prints the tables and saves the figures as JSON under bench/results/. See
 * docs/benchmarks.md for what is compared and why.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLlamaTool } from './build-addon.mjs';
import { generateModel } from './gen-model.mjs';
import { EngineTarget } from './bench/engine-target.js';
import { formatGrammarTable, measureGrammarRow, type GrammarRowResult } from './bench/grammar-row.js';
import { formatIsolation, measureIsolation, type IsolationResult } from './bench/isolation.js';
import { LlamaServerTarget } from './bench/llama-server-target.js';
import { formatNatsRow, measureNatsRow, type NatsRowResult } from './bench/nats-row.js';
import { machineInfo } from './bench/machine.js';
import { parseOptions, USAGE, type BenchOptions } from './bench/options.js';
import { batchingGain, comparisonRows, formatOverheadTable, formatTable, markdownTable, overheadRows, overheadWorst, supervisorUsPerTokenOverall } from './bench/report.js';
import { runRounds, settle, summarize, warmUp, type LevelRun, type RunPlan } from './bench/runner.js';
import { runScenarios, type ScenarioOutcome, type ScenarioTexts } from './bench/scenarios.js';
import { BARE_SUPERVISOR_ENV, RouteTarget, ServiceTarget } from './bench/service-target.js';
import type { BenchTarget } from './bench/target.js';
import { BANNED_SPM_IDS, fitBaseText, fitText, requestTag, SAMPLING } from './bench/workload.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Everything that must be stopped on exit, errors and signals (targets, the two-model service). */
const running: Array<{ stop(): Promise<void> }> = [];
let stopping = false;

async function stopTargets(): Promise<void> {
  await Promise.allSettled(running.map((t) => t.stop()));
}

/** The model's own tokenizer (llama.cpp's, as on both servers), to size the prompt. */
async function withTokenizer<T>(modelPath: string, use: (count: (text: string) => number) => T): Promise<T> {
  const { loadModel } = await import('@lmserve/engine');
  const model = await loadModel(modelPath, { gpuLayers: 0 });
  try {
    return use((text) => model.tokenize(text, { addSpecial: true }).length);
  } finally {
    model.dispose();
  }
}

/** The main workload's text, and the scenarios' shared system prompt and long prompt, fitted to their lengths. */
function fitPrompts(options: BenchOptions, count: (text: string) => number): { baseText: string; promptTokens: number; scenarios: ScenarioTexts } {
  const baseText = fitBaseText(options.promptTokens, count);
  const prefix = fitText(options.prefixTokens, count);
  const tagged = (text: string) => `${requestTag(1000)} ${text}`;
  const longText = fitText(options.longPromptTokens, count, tagged);
  return {
    baseText,
    promptTokens: count(tagged(baseText)),
    scenarios: { prefix, prefixTokens: count(prefix), longText, longTokens: count(tagged(longText)) },
  };
}

function onSignal(signal: NodeJS.Signals): void {
  if (stopping) return;
  stopping = true;
  log(`${signal}: stopping llama-server and our side`);
  const code = signal === 'SIGINT' ? 130 : 143;
  // The service drains within its SHUTDOWN_GRACE_MS (2 s) and is SIGKILLed 8 s later; process exit
  // SIGKILLs whatever is still there.
  const force = setTimeout(() => process.exit(code), 15_000);
  force.unref();
  void stopTargets().finally(() => process.exit(code));
}

/**
 * --cost-only: every round a fresh ours and ours-bare, started in alternating order, warmed up,
 * measured at every level (in that order), then stopped. Neither side keeps a position, a
 * process's placement or its heap across rounds.
 */
async function costRounds(makeOurs: () => ServiceTarget, makeBare: () => ServiceTarget, plan: RunPlan): Promise<LevelRun[]> {
  const all: LevelRun[] = [];
  for (let round = 0; round < plan.rounds && !stopping; round++) {
    const pair = [makeOurs(), makeBare()];
    const order = round % 2 === 0 ? pair : [...pair].reverse();
    running.push(...pair);
    try {
      for (const t of order) await t.start();
      await warmUp(order, plan);
      await settle(order, plan);
      const runs = await runRounds(order, { ...plan, rounds: 1 });
      for (const r of runs) r.round = round;
      all.push(...runs);
      plan.log(`round ${round + 1}/${plan.rounds} done (started and run as ${order.map((t) => t.label).join(', ')})`);
    } finally {
      await Promise.all(pair.map((t) => t.stop()));
    }
  }
  return all;
}

async function main(options: BenchOptions): Promise<void> {
  const startedAt = new Date();
  const loadAtStart = loadavg();
  const load = loadAtStart[0]!;
  if (load > cpus().length * 0.5) {
    log(`warning: load average ${load.toFixed(2)} on ${cpus().length} cores; other work skews both sides (see the JSON's loadAverage*)`);
  }
  const serverBin = options.costOnly || options.natsOnly || options.routeCompare ? null : options.serverBin ? resolve(options.serverBin) : buildLlamaTool('llama-server');
  const modelPath: string = await generateModel({ preset: options.modelPreset, log });
  const tinyPath: string | null = options.isolationRequests > 0 ? await generateModel({ preset: 'tiny', log }) : null;

  const shared = { modelPath, slots: options.slots, ctxPerSlot: options.ctxPerSlot, batchSize: options.batchSize, threads: options.threads, kvUnified: options.kvUnified };
  // How our targets are driven: the same on ours and ours-bare (and the stream and connection
  // settings on llama-server).
  const client = { route: options.route, stream: options.stream, keepAlive: options.keepAlive };
  const makeOurs = () => new ServiceTarget({ ...shared, root, log, ...client, ...(options.costCalibrate ? { supervisorEnv: { ...BARE_SUPERVISOR_ENV } } : {}) });
  const makeBare = () => new ServiceTarget({ ...shared, root, log, ...client, label: 'ours-bare', supervisorEnv: { ...BARE_SUPERVISOR_ENV } });
  const ours: EngineTarget | ServiceTarget = options.ours === 'engine' ? new EngineTarget(shared) : makeOurs();
  const server = serverBin === null ? null : new LlamaServerTarget({ ...shared, binary: serverBin, extraArgs: options.serverArgs, stream: client.stream, keepAlive: client.keepAlive });
  // The same service without its audit trail and metrics, measured in the same rounds right after
  // llama-server (ours, llama-server, ours-bare per level): the main comparison keeps its A, B order.
  const bare = options.ours === 'http' && options.bareRow
    ? makeBare()
    : null;
  const openai = options.routeCompare && ours instanceof ServiceTarget ? new RouteTarget(ours) : null;
  const targets: BenchTarget[] = [ours, ...(server ? [server] : []), ...(bare ? [bare] : []), ...(openai ? [openai] : [])];
  running.push(...targets);
  if (!options.scenariosOnly) log(options.ours === 'engine'
    ? 'loading the model in-process and starting llama-server'
    : `starting our supervisor (one worker for the bench model)${server ? ' and llama-server' : ''}` +
        (bare ? `, then a second supervisor with ${Object.entries(BARE_SUPERVISOR_ENV).map(([k, v]) => `${k}=${v}`).join(' ')} (ours-bare)` : ''));
  // --cost-only starts a fresh pair of supervisors every round (costRounds); an A/A run showed the
  // first-started one of a long-lived pair slower by several percent with identical settings.
  // The scenarios start their own servers, fresh each round.
  if (!options.natsOnly && !options.costOnly && !options.scenariosOnly) await ours.start();
  if (!options.scenariosOnly) await server?.start();
  if (!options.costOnly) await bare?.start();
  await openai?.start();

  const { baseText, promptTokens, scenarios: scenarioTexts } = ours instanceof EngineTarget
    ? fitPrompts(options, (text) => ours.countTokens(text))
    : await withTokenizer(modelPath, (count) => fitPrompts(options, count));
  const plan: RunPlan = {
    concurrency: options.concurrency,
    rounds: options.rounds,
    requestsPerClient: options.requestsPerClient,
    minRequests: options.minRequests,
    workload: { baseText, maxTokens: options.maxTokens, sampling: { ...SAMPLING, repeatPenalty: options.repeatPenalty } },
    log,
  };
  log(`prompt: about ${promptTokens} tokens; ${options.maxTokens} generated per request; ` +
    `levels ${options.concurrency.join(',')}; ${options.rounds} rounds; ${options.requestsPerClient} requests per client, at least ${options.minRequests} per level`);
  if (!options.scenariosOnly) log(`warming up ${targets.map((t) => t.label).join(', ')}`);
  const runs = options.grammarOnly || options.natsOnly || options.scenariosOnly
    ? []
    : options.costOnly
      ? await costRounds(makeOurs, makeBare, plan)
      : (await warmUp(targets, plan), log(`settled after ${Object.entries(await settle(targets, plan)).map(([t, s]) => `${t} ${s.toFixed(0)} s`).join(', ')}`), await runRounds(targets, plan));

  let routeTable: unknown = null;
  const labels = targets.map((t) => t.label);
  const summaries = summarize(runs, labels, options.concurrency);
  // Each table's flags and notes come from its own two targets only.
  const rows = server ? comparisonRows(summarize(runs, [ours.label, server.label], options.concurrency), ours.label, server.label) : [];
  const overhead = bare ? overheadRows(summarize(runs, [ours.label, bare.label], options.concurrency), ours.label, bare.label) : null;
  const worst = overhead ? overheadWorst(overhead) : null;
  const gain = runs.length ? batchingGain(rows) : null;
  const supervisorOverall = supervisorUsPerTokenOverall(runs, ours.label);
  const idleServerCpu = server ? runs.filter((r) => r.target === ours.label).map((r) => r.othersCpuSeconds[server.label] ?? 0) : [];
  const idleOursCpu = server ? runs.filter((r) => r.target === server.label).map((r) => r.othersCpuSeconds[ours.label] ?? null) : [];

  if (server && runs.length) {
    process.stdout.write(`\n${formatTable(rows)}\n`);
    const one = rows.find((r) => r.concurrency === 1);
    if (one && one.supervisorUsPerToken !== null) {
      const rounds = one.supervisorUsPerTokenRounds;
      const perRound = rounds && rounds.length > 1 ? ` (rounds ${rounds.map((x) => x.toFixed(0)).join(' / ')}, median ${(one.supervisorUsPerTokenMedian as number).toFixed(0)} µs)` : '';
      process.stdout.write(`supervisor CPU per streamed token at 1 stream: ${one.supervisorUsPerToken.toFixed(0)} µs pooled${perRound} (goal: <= 50 µs); ` +
        (supervisorOverall === null ? '' : `over every level and round: ${supervisorOverall.toFixed(0)} µs; `) +
        `CPU columns: seconds per 1,000 generated tokens around each level, pooled over rounds (the supervisor from its threads' ` +
        `/proc/<pid>/task/*/schedstat, to the nanosecond; hosts and llama-server from /proc/<pid>/stat utime + stime)\n`);
    }
    const paired = rows.filter((r) => r.pairedRatio !== null);
    if (paired.length > 0) {
      const below = paired.filter((r) => (r.pairedRatio as number) < 1);
      process.stdout.write(`ratio = median ours / median llama-server over rounds; per round = each round's ours / llama-server (run back to back), ` +
        `their median in parentheses: ${below.length === 0 ? 'at least 1.0x at every level' : `below 1.0x at c=${below.map((r) => r.concurrency).join(', ')}`} (goal: >= 1.0x at every level)\n`);
    }
  }
  if (gain) {
    process.stdout.write(
      `\nbatching gain (c${gain.to} / c${gain.from} aggregate tok/s): ours ${gain.ours?.toFixed(2) ?? '-'}x, ` +
        `llama-server ${gain.server?.toFixed(2) ?? '-'}x\n`,
    );
  }
  if (server && runs.length) process.stdout.write(
    options.ours === 'engine'
      ? `ours: in-process engine (no HTTP); llama-server: HTTP + SSE over loopback\n`
      : `ours: the service's model port, POST /v1/completions + ${options.stream ? 'SSE' : 'one JSON answer ("stream": false)'} over loopback (supervisor -> host process -> engine); ` +
          `llama-server: POST /completion + ${options.stream ? 'SSE' : 'one JSON answer ("stream": false)'} over loopback; ` +
          `${options.keepAlive ? 'connections kept between requests (--keep-alive)' : 'a new connection per request'}\n`,
  );
  if (openai) {
    const routeRows = overheadRows(summarize(runs, [openai.label, ours.label], options.concurrency), openai.label, ours.label);
    routeTable = routeRows;
    process.stdout.write(`\nOpenAI route vs the original route, same supervisor, same requests (ratio = OpenAI / original, median over rounds)\n`);
    const f = (v: number | null, d = 0) => (v === null ? '-' : v.toFixed(d));
    process.stdout.write(`${markdownTable(
      ['concurrency', 'original tok/s', 'openai tok/s', 'openai/original', 'per round', 'original TTFT p50 ms', 'openai TTFT p50 ms'],
      routeRows.map((r) => [String(r.concurrency), f(r.bareTps, 1), f(r.oursTps, 1), r.ratio === null ? '-' : `${r.ratio.toFixed(3)}x`,
        r.ratioRounds.map((x) => x.toFixed(3)).join(', '), f(r.bareTtftP50), f(r.oursTtftP50)]),
    )}\n`);
    for (const r of routeRows) for (const n of r.notes) process.stdout.write(`  ! c=${r.concurrency}: ${n}\n`);
  }
  if (overhead) {
    process.stdout.write(
      `\naudit + metrics cost: ours (AUDIT=on, METRICS=on, the defaults) vs ours-bare (AUDIT=off, METRICS=off), same rounds; ` +
        `cost = 1 - ours/bare\n${formatOverheadTable(overhead)}\n`,
    );
    if (worst) {
      process.stdout.write(
        `largest cost ${worst.costPercent >= 0 ? '+' : ''}${worst.costPercent.toFixed(1)}% at c=${worst.costAt}; ` +
          `largest TTFT p50 increase ${worst.ttftP50DeltaMs === null ? '-' : `${worst.ttftP50DeltaMs >= 0 ? '+' : ''}${worst.ttftP50DeltaMs.toFixed(0)} ms`}` +
          `${worst.ttftAt === null ? '' : ` at c=${worst.ttftAt}`} ` +
          `(goal: under 2% at every level, no TTFT change; ${options.rounds} round${options.rounds === 1 ? '' : 's'})\n` +
          `paired: largest cost from the median of per-round ratios ${worst.pairedCostPercent === null ? '-' : `${worst.pairedCostPercent >= 0 ? '+' : ''}${worst.pairedCostPercent.toFixed(1)}%`}` +
          `${worst.pairedCostAt === null ? '' : ` at c=${worst.pairedCostAt}`}; ` +
          `largest supervisor CPU added by audit + metrics ${worst.cpuSharePercent === null ? '-' : `${worst.cpuSharePercent.toFixed(2)}%`} of all CPU per token\n`,
      );
    }
  }

  // The grammar row: same session, same two servers (ours and llama-server; ours-bare stays idle).
  let grammarRow: GrammarRowResult | { error: string } | null = null;
  if (options.grammarRow && server && ours instanceof ServiceTarget && !stopping) {
    try {
      grammarRow = await measureGrammarRow(ours, server, ours.service.port('bench'), {
        grammarName: 'json',
        concurrency: options.grammarConcurrency,
        rounds: options.rounds,
        requestsPerClient: Math.max(2, options.requestsPerClient),
        maxTokens: options.grammarMaxTokens,
        workload: plan.workload,
        log,
      });
      process.stdout.write(`\n${formatGrammarTable(grammarRow, options.grammarMaxTokens)}\n`);
    } catch (err) {
      if (stopping) throw err;
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      grammarRow = { error: message };
      log(`grammar row failed: ${message}`);
      process.stdout.write(`\ngrammar row: FAILED (${message.split('\n')[0]})\n`);
    }
  }

  // The comparison's processes go first: the two-model row gets the machine to itself.
  if (ours instanceof ServiceTarget && !options.natsOnly && !options.scenariosOnly) await ours.snapshot();
  await bare?.snapshot();
  const targetInfo: Record<string, Record<string, unknown>> = { ours: ours.describe() };
  if (server) targetInfo['llama-server'] = server.describe();
  if (bare) targetInfo[bare.label] = bare.describe();
  await stopTargets();
  let natsRow: NatsRowResult | { error: string } | null = null;
  if (options.natsRow && !stopping) {
    try {
      natsRow = await measureNatsRow({
        root,
        modelPath,
        slots: options.slots,
        ctxPerSlot: options.ctxPerSlot,
        batchSize: options.batchSize,
        threads: options.threads,
        concurrency: options.natsConcurrency,
        rounds: options.rounds,
        requestsPerClient: options.requestsPerClient,
        minRequests: options.minRequests,
        jobs: options.natsJobs,
        stream: options.natsStream,
        workload: plan.workload,
        log,
        register: (r) => running.push(r),
      });
      process.stdout.write(`\n${formatNatsRow(natsRow)}\n`);
    } catch (err) {
      if (stopping) throw err;
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      natsRow = { error: message };
      log(`NATS row failed: ${message}`);
      process.stdout.write(`\nNATS row: FAILED (${message.split('\n')[0]})\n`);
    }
  }
  let isolation: IsolationResult | { error: string } | null = null;
  if (tinyPath && !stopping) {
    try {
      isolation = await measureIsolation({
        root,
        modelA: modelPath,
        modelB: tinyPath,
        slots: options.slots,
        ctxPerSlot: options.ctxPerSlot,
        batchSize: options.batchSize,
        threads: options.threads,
        bThreads: 1,
        requests: options.isolationRequests,
        bMaxTokens: options.isolationMaxTokens,
        aMaxTokens: options.maxTokens,
        workload: plan.workload,
        log,
        register: (service) => running.push(service),
      });
      process.stdout.write(`\n${formatIsolation(isolation)}\n`);
    } catch (err) {
      if (stopping) throw err;
      // The comparison above still gets saved.
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      isolation = { error: message };
      log(`two-model isolation failed: ${message}`);
      process.stdout.write(`\ntwo-model isolation: FAILED (${message.split('\n')[0]})\n`);
    }
  }

  let scenarios: Record<string, ScenarioOutcome> = {};
  if ((options.sharedPrefixRow || options.repeatRow || options.mixedRow || options.multiModelRow) && serverBin !== null && !stopping) {
    scenarios = await runScenarios(
      options,
      { root, serverBin, modelPath, threads: options.threads, batchSize: options.batchSize, serverArgs: options.serverArgs, log },
      scenarioTexts,
      plan.workload,
      { log, register: (side) => running.push(side), stopping: () => stopping },
    );
  }

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
      sampling: plan.workload.sampling,
      seeds: '1000 + index of the request in its round (same on both sides)',
      logitBias: `ids ${BANNED_SPM_IDS[0]}..${BANNED_SPM_IDS[BANNED_SPM_IDS.length - 1]} banned on both sides`,
      clientsPerLevel: 'concurrency N = N closed-loop clients',
      requestsPerClient: options.requestsPerClient,
      tokensPerSecond: 'sum of server-reported generated tokens / wall time of the level (first send to last stream end)',
      ttft: 'client side: request sent to first streamed token',
    },
    targets: targetInfo,
    rows,
    supervisorUsPerTokenOverall: supervisorOverall,
    batchingGain: gain,
    idleCheck: {
      note: 'CPU seconds each side used while the other ran (both should be idle); ours = supervisor + host (null in-process)',
      llamaServerCpuSecondsDuringOurs: idleServerCpu,
      oursCpuSecondsDuringLlamaServer: idleOursCpu,
      ...(bare
        ? {
            oursBareCpuSecondsDuringOthers: runs.filter((r) => r.target !== bare.label).map((r) => r.othersCpuSeconds[bare.label] ?? null),
            oursCpuSecondsDuringOursBare: runs.filter((r) => r.target === bare.label).map((r) => r.othersCpuSeconds[ours.label] ?? null),
          }
        : {}),
    },
    overhead: overhead
      ? {
          note:
            'ours (supervisor.env defaults: AUDIT=on, METRICS=on) vs ours-bare (same service, AUDIT=off, METRICS=off), ' +
            (options.costOnly
              ? 'a fresh pair of supervisors every round, started and run as ours, ours-bare in even rounds and the reverse in odd rounds; '
              : `each level run as ${targets.map((t) => t.label).join(', ')} in even rounds and in reverse in odd rounds (ABBA); `) +
            'ratio = median tok/s ours / ours-bare, ratioRoundsMedian = median of the per-round ratios, ' +
            'supervisorCpuSharePercent = (ours - bare supervisor CPU per 1k tokens) / (bare supervisor + host CPU per 1k tokens), ' +
            'costPercent = (1 - ratio) * 100; CPU per 1k tokens in seconds, pooled over rounds',
          bareSupervisorEnv: BARE_SUPERVISOR_ENV,
          rows: overhead,
          worst,
        }
      : null,
    grammarRow: grammarRow
      ? {
          note:
            'built-in json grammar on both sides after the main table, same servers: ours gets params.grammar "json" (its grammar ' +
            'library), llama-server gets grammar = the GBNF content of our GET /grammars/json; same prompts, sampling and seeds ' +
            `as the workload; ignore_eos false and EOS (id 2) not banned, the other banned ids as in the workload; ` +
            `max ${options.grammarMaxTokens} tokens; at least 2 requests per client and 32 per level; ABBA order over rounds; tok/s = server-reported generated tokens / ` +
            'wall time of the level (median over rounds); parsed = outputs JSON.parse accepted',
          ...grammarRow,
        }
      : null,
    routeCompare: routeTable,
    natsRow: natsRow
      ? {
          note:
            'one supervisor (AUDIT and METRICS on) serving the bench model over HTTP and NATS with a nats-server started for the row; ' +
            'the same requests over HTTP (SSE) and NATS request/reply (params.stream true, token messages on an inbox), ABBA rounds; ' +
            'ratio = median tok/s NATS / HTTP; JetStream: jobs on inference.jobs.bench by N producers, latency = publish to result message',
          ...natsRow,
        }
      : null,
    isolation,
    scenarios,
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
