/**
 * Our engine driven in-process through @lmserve/engine: no HTTP, no JSON, the same Node process
 * as the benchmark client. TTFT is measured around submit() and the first yielded chunk.
 */
import type { Engine, Model } from '@lmserve/engine';
import type { BenchRequest, BenchTarget, RequestOutcome } from './target.js';

export interface EngineTargetConfig {
  modelPath: string;
  slots: number;
  ctxPerSlot: number;
  batchSize: number;
  threads: number;
  kvUnified: boolean;
}

type EngineModule = typeof import('@lmserve/engine');

async function importEngine(): Promise<EngineModule> {
  try {
    return await import('@lmserve/engine');
  } catch (err) {
    throw new Error('cannot load @lmserve/engine: run `npm run build` (builds the addon and the TypeScript packages)', {
      cause: err,
    });
  }
}

export class EngineTarget implements BenchTarget {
  readonly label = 'ours';
  readonly transport = 'in-process @lmserve/engine (no HTTP layer yet)';
  readonly #config: EngineTargetConfig;
  #model: Model | undefined;
  #engine: Engine | undefined;
  #countTokens: ((text: string) => number) | undefined;
  #addonPath: string | undefined;

  constructor(config: EngineTargetConfig) {
    this.#config = config;
  }

  async start(): Promise<void> {
    const { loadModel, addonPath } = await importEngine();
    this.#addonPath = addonPath();
    this.#model = await loadModel(this.#config.modelPath);
    const model = this.#model;
    this.#countTokens = (text) => model.tokenize(text, { addSpecial: true }).length;
    this.#engine = await this.#model.createEngine({
      slots: this.#config.slots,
      contextSize: this.#config.ctxPerSlot,
      batchSize: this.#config.batchSize,
      threads: this.#config.threads,
      maxQueue: 4 * this.#config.slots,
      kvUnified: this.#config.kvUnified,
      flashAttention: 'auto',
    });
  }

  /** The model's tokenizer (llama.cpp's, as on the server side): used to size the prompt. */
  countTokens(text: string): number {
    if (!this.#countTokens) throw new Error('EngineTarget.countTokens() before start()');
    return this.#countTokens(text);
  }

  async run(request: BenchRequest): Promise<RequestOutcome> {
    const engine = this.#engine;
    if (!engine) throw new Error('EngineTarget.run() before start()');
    const started = performance.now();
    let ttftMs: number | null = null;
    let streamedEvents = 0;
    try {
      const generation = engine.submit({
        prompt: request.prompt,
        params: {
          maxTokens: request.maxTokens,
          temperature: request.sampling.temperature,
          topK: request.sampling.topK,
          topP: request.sampling.topP,
          minP: request.sampling.minP,
          repeatPenalty: request.sampling.repeatPenalty,
          presencePenalty: request.sampling.presencePenalty,
          frequencyPenalty: request.sampling.frequencyPenalty,
          seed: request.seed,
          ignoreEos: request.ignoreEos,
          logitBias: request.bannedTokenIds.map((id) => [id, -100] as [number, number]),
        },
      });
      for await (const chunk of generation) {
        if (chunk.tokens.length === 0) continue;
        if (ttftMs === null) ttftMs = performance.now() - started;
        streamedEvents++;
      }
      const result = await generation.result;
      return {
        ok: true,
        ttftMs,
        totalMs: performance.now() - started,
        tokensOut: result.usage.tokensOut,
        tokensIn: result.usage.tokensIn,
        cachedTokens: result.usage.cachedTokens,
        streamedEvents,
        finishReason: result.finishReason,
      };
    } catch (err) {
      return {
        ok: false,
        error: err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err),
        ttftMs,
        totalMs: performance.now() - started,
        tokensOut: null,
        tokensIn: null,
        cachedTokens: null,
        streamedEvents,
        finishReason: null,
      };
    }
  }

  describe(): Record<string, unknown> {
    return {
      transport: this.transport,
      addon: this.#addonPath ?? null,
      engineOptions: this.#engine?.options ?? null,
      stats: this.#engine && !this.#engine.disposed ? this.#engine.stats() : null,
    };
  }

  async stop(): Promise<void> {
    this.#engine?.dispose();
    this.#model?.dispose();
    this.#engine = undefined;
    this.#model = undefined;
  }
}
