/**
 * The multi-model scenario: two models served at once, each driven by `clients` (8) closed-loop
 * clients with the main workload, at the same time. Ours: one supervisor with two workers (A and
 * B, each its own model host process and engine, each its own HTTP port). llama-server: two
 * processes, one per model. The figure is the aggregate throughput of the two models together.
 *
 * Both models are the bench model file: two workers (or two llama-servers) over one GGUF, so the
 * two sides hold the same weights twice in their engines and share the file's page cache alike;
 * a second generated model would add 143 MB and change nothing in the work. Each model gets
 * `clients` slots of the main table's context and batch, and half the main table's threads (at
 * least 1): two models with 2 threads each on a 2-core machine would have four OpenMP threads
 * spinning for two cores, on both sides, and measure the oversubscription more than the servers.
 *
 * Not the two-model isolation row (isolation.ts): that one measures B's TTFT while A is saturated;
 * this one loads both models fully and compares the total.
 */
import { LlamaServerTarget } from './llama-server-target.js';
import { cpuMeter, levelRun, runLevel, type CpuSource, type LevelRun } from './runner.js';
import { freshRounds, OURS, scenarioRows, SERVER, type ScenarioContext, type ScenarioResult, type ScenarioServers, type ScenarioSide } from './scenario.js';
import { ServiceProcess } from './service.js';
import { benchWorkerEnv, serviceCompletionProtocol, WorkerPortTarget } from './service-target.js';
import type { BenchTarget } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

export interface MultiModelConfig {
  servers: ScenarioServers;
  clients: number;
  ctxPerSlot: number;
  /** Threads of each model's engine (both sides). */
  threadsPerModel: number;
  requestsPerClient: number;
  workload: WorkloadSpec;
}

export const MULTI_MODEL_PHASES = ['model A', 'model B', 'both'] as const;
const MODELS = ['A', 'B'] as const;

/** One side of the scenario: something that serves both models, one target per model. */
interface TwoModelSide extends ScenarioSide, CpuSource {
  readonly models: readonly BenchTarget[];
}

/** Our side: one supervisor, workers A and B over the same model file. */
class OursTwoModels implements TwoModelSide {
  readonly label = OURS;
  readonly #service: ServiceProcess;
  readonly models: readonly WorkerPortTarget[];

  constructor(c: MultiModelConfig) {
    const env = benchWorkerEnv({ modelPath: c.servers.modelPath, slots: c.clients, ctxPerSlot: c.ctxPerSlot, batchSize: c.servers.batchSize, threads: c.threadsPerModel }, 1024);
    this.#service = new ServiceProcess({
      root: c.servers.root,
      workers: MODELS.map((name) => ({ name, env })),
      shutdownGraceMs: 2000,
      log: c.servers.log,
    });
    this.models = MODELS.map((worker) => new WorkerPortTarget({
      service: this.#service,
      worker,
      protocol: serviceCompletionProtocol,
      label: `${OURS} ${worker}`,
      transport: 'HTTP POST /v1/completions, "stream": true, "raw": true (SSE), to the worker\'s port on one supervisor',
    }));
  }

  async start(): Promise<void> {
    await this.#service.start();
    for (const m of this.models) await m.start();
  }

  cpuSeconds(): number | null {
    return this.#service.cpuSeconds();
  }

  supervisorCpuSeconds(): number | null {
    return this.#service.supervisorCpuSeconds();
  }

  describe(): Record<string, unknown> {
    return { service: this.#service.describe(), models: this.models.map((m) => m.describe()) };
  }

  async stop(): Promise<void> {
    for (const m of this.models) await m.stop();
    await this.#service.stop();
  }
}

/** llama-server's side: one process per model. */
class ServerTwoModels implements TwoModelSide {
  readonly label = SERVER;
  readonly models: readonly LlamaServerTarget[];

  constructor(c: MultiModelConfig) {
    this.models = MODELS.map(() => new LlamaServerTarget({
      binary: c.servers.serverBin,
      modelPath: c.servers.modelPath,
      slots: c.clients,
      ctxPerSlot: c.ctxPerSlot,
      batchSize: c.servers.batchSize,
      threads: c.threadsPerModel,
      kvUnified: false,
      extraArgs: c.servers.serverArgs,
    }));
  }

  async start(): Promise<void> {
    for (const m of this.models) await m.start();
  }

  /** Both processes together (null once either is gone). */
  cpuSeconds(): number | null {
    const each = this.models.map((m) => m.cpuSeconds());
    return each.some((v) => v === null) ? null : (each as number[]).reduce((a, b) => a + b, 0);
  }

  describe(): Record<string, unknown> {
    return { processes: this.models.map((m) => m.describe()) };
  }

  async stop(): Promise<void> {
    await Promise.all(this.models.map((m) => m.stop()));
  }
}

export async function measureMultiModel(c: MultiModelConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const measure = async (side: TwoModelSide, round: number): Promise<LevelRun[]> => {
    await Promise.all(side.models.map(async (m) => {
      const { outcomes } = await runLevel(m, roundRequests({ ...c.workload, maxTokens: 4 }, c.clients, 900_000), c.clients);
      const failed = outcomes.find((o) => !o.ok);
      if (failed) throw new Error(`multi-model warm-up request to ${side.label} failed: ${failed.error}`);
    }));
    const cpu = cpuMeter(side);
    const started = performance.now();
    // Model B's prompts are numbered after A's: the same two lists on both sides.
    const count = c.clients * c.requestsPerClient;
    const results = await Promise.all(side.models.map((m, i) => runLevel(m, roundRequests(c.workload, count, i * count), c.clients)));
    const wallMs = performance.now() - started;
    const used = cpu();
    const max = c.workload.maxTokens;
    const perModel = results.map((r, i) => ({ ...levelRun(side.label, round, c.clients, max, r), phase: MULTI_MODEL_PHASES[i]! }));
    const both = { ...levelRun(side.label, round, 2 * c.clients, max, { wallMs, outcomes: results.flatMap((r) => r.outcomes) }), ...used, phase: 'both' };
    return [...perModel, both];
  };
  const { runs, sides } = await freshRounds('multi-model', ctx, { ours: () => new OursTwoModels(c), server: () => new ServerTwoModels(c) }, measure);
  return {
    scenario: 'multi-model',
    note:
      `two models (both the bench model file) at once, ${c.clients} closed-loop clients each, ${c.requestsPerClient} requests per client, ` +
      `the main workload (~64-token prompt, ${c.workload.maxTokens} tokens, EOS ignored); ${c.clients} slots of ${c.ctxPerSlot} cells and ` +
      `${c.threadsPerModel} thread(s) per model on both sides. Ours: one supervisor with workers A and B; llama-server: one process per model. ` +
      'model A / model B = each model over its own wall time; both = all tokens over the wall time of the two together (the aggregate) and ' +
      "the side's CPU (ours: supervisor + both hosts; llama-server: both processes). Fresh servers each round, one side at a time, ABBA",
    config: { clients: c.clients, requestsPerClient: c.requestsPerClient, maxTokens: c.workload.maxTokens, ctxPerSlot: c.ctxPerSlot, threadsPerModel: c.threadsPerModel },
    rows: scenarioRows(runs, MULTI_MODEL_PHASES),
    sides,
    runs,
  };
}
