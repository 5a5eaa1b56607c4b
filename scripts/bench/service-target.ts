/**
 * Our service as a benchmark target: the supervisor (started by ServiceProcess over a temporary
 * envs/ folder) with one worker for the bench model, driven through its per-model HTTP port with
 * POST /v1/completions, "stream": true, "raw": true (no prompt template: the prompt goes to the
 * model as is, as llama-server's /completion does). Token counts come from the service's own
 * `usage.tokens_out` in the final `done` event.
 */
import { HttpStreamClient, type StreamEventInfo, type StreamProtocol } from './http-stream.js';
import { ServiceProcess } from './service.js';
import type { BenchRequest, BenchTarget, RequestOutcome } from './target.js';

export interface ServiceTargetConfig {
  root: string;
  modelPath: string;
  slots: number;
  ctxPerSlot: number;
  batchSize: number;
  threads: number;
  /** Label in tables and JSON (default "ours"). */
  label?: string;
  /** Extra supervisor.env keys: `ours-bare` runs with AUDIT=off and METRICS=off. */
  supervisorEnv?: Record<string, string>;
  /** The API spoken: the original `{input, params}` (default) or OpenAI's completions. */
  route?: 'original' | 'openai';
  /** false: one JSON answer per request (`--stream off`). */
  stream?: boolean;
  /** Keep connections open between requests (`--keep-alive`). */
  keepAlive?: boolean;
  /**
   * The host-memory prompt cache at llama-server's default size (CACHE_RAM=8192) when llama-server
   * keeps its own (LlamaServerTarget's hostPromptCache); else CACHE_RAM=0, as its --cache-ram 0.
   */
  hostPromptCache?: boolean;
  log?: (line: string) => void;
}

/** supervisor.env keys of the `ours-bare` target: the service without its audit trail and metrics. */
export const BARE_SUPERVISOR_ENV: Readonly<Record<string, string>> = { AUDIT: 'off', METRICS: 'off' };

/**
 * Our /v1/completions SSE format: `event: token` with `{id, text, tokens}`, then `event: done`
 * with `{id, model, output, finish_reason, usage: {tokens_in, tokens_out}, timings: {ttft_ms,
 * dur_ms}}`, or `event: error` with `{error: {code, message}}` (packages/http/src/model-app.ts).
 */
export const serviceCompletionProtocol: StreamProtocol = {
  path: '/v1/completions',
  body(request: BenchRequest) {
    const s = request.sampling;
    return {
      input: request.prompt,
      params: {
        max_tokens: request.maxTokens,
        temperature: s.temperature,
        top_k: s.topK,
        top_p: s.topP,
        min_p: s.minP,
        repeat_penalty: s.repeatPenalty,
        presence_penalty: s.presencePenalty,
        frequency_penalty: s.frequencyPenalty,
        seed: request.seed,
        ignore_eos: request.ignoreEos,
        // -100 bans a token (minus infinity), as llama-server's `false` does.
        logit_bias: Object.fromEntries(request.bannedTokenIds.map((id) => [String(id), -100])),
        stream: true,
        raw: true,
        // A library grammar by name (the service resolves it to its GBNF content).
        ...(request.grammar ? { grammar: request.grammar.name } : {}),
      },
    };
  },
  parseEvent(data: unknown): StreamEventInfo {
    const d = data as {
      error?: { code?: string; message?: string } | string;
      tokens?: number[];
      text?: string;
      output?: string;
      finish_reason?: string;
      usage?: { tokens_in?: number; tokens_out?: number };
      timings?: { ttft_ms?: number; dur_ms?: number };
    };
    if (d.error) {
      const e = d.error;
      return { tokens: 0, error: typeof e === 'string' ? e : `${e.code ?? 'ERROR'}: ${e.message ?? JSON.stringify(e)}` };
    }
    if (d.usage) {
      return {
        tokens: 0,
        final: {
          tokensOut: d.usage.tokens_out ?? null,
          tokensIn: d.usage.tokens_in ?? null,
          // Not part of the public response (the engine knows it; the HTTP API does not say).
          cachedTokens: null,
          finishReason: d.finish_reason ?? null,
          serverTtftMs: d.timings?.ttft_ms ?? null,
          ...(typeof d.output === 'string' ? { output: d.output } : {}),
        },
      };
    }
    return { tokens: Array.isArray(d.tokens) ? d.tokens.length : 0, ...(typeof d.text === 'string' ? { text: d.text } : {}) };
  },
  plain: {
    body(request: BenchRequest) {
      const b = serviceCompletionProtocol.body(request) as { params: Record<string, unknown> };
      return { ...b, params: { ...b.params, stream: false } };
    },
  },
};

/**
 * OpenAI's /v1/completions on the same port: `prompt` (sent as is, like `raw: true`), the same
 * sampling (top_k, min_p, repeat_penalty, ignore_eos and grammar are the extensions the service
 * shares with llama-server), SSE chunks of `choices[0].text`, the finish reason in the last
 * choice chunk, the usage in the chunk stream_options.include_usage adds, then `data: [DONE]`.
 */
export const openAiCompletionProtocol: StreamProtocol = {
  path: '/v1/completions',
  body(request: BenchRequest) {
    const original = serviceCompletionProtocol.body(request) as { params: Record<string, unknown> };
    const { stream: _stream, raw: _raw, ...params } = original.params;
    return { model: 'bench', prompt: request.prompt, ...params, stream: true, stream_options: { include_usage: true } };
  },
  parseEvent(data: unknown): StreamEventInfo {
    const d = data as {
      error?: { code?: string; message?: string };
      choices?: Array<{ text?: string; finish_reason?: string | null }>;
      usage?: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | null;
    };
    if (d.error) return { tokens: 0, error: `${d.error.code ?? 'ERROR'}: ${d.error.message ?? JSON.stringify(d.error)}` };
    if (d.usage) {
      return {
        tokens: 0,
        final: {
          tokensOut: d.usage.completion_tokens ?? null,
          tokensIn: d.usage.prompt_tokens ?? null,
          cachedTokens: d.usage.prompt_tokens_details?.cached_tokens ?? null,
          finishReason: null,
        },
      };
    }
    const choice = d.choices?.[0];
    const text = choice?.text ?? '';
    return {
      tokens: text === '' ? 0 : 1,
      ...(text !== '' ? { text } : {}),
      ...(choice?.finish_reason ? { partial: { finishReason: choice.finish_reason } } : {}),
    };
  },
  plain: {
    body(request: BenchRequest) {
      const { stream: _stream, stream_options: _options, ...rest } = openAiCompletionProtocol.body(request) as Record<string, unknown>;
      return { ...rest, stream: false };
    },
    parse(data: unknown): StreamEventInfo {
      // The error and the usage as in the stream's last chunk; the text and finish reason from the one choice.
      const info = openAiCompletionProtocol.parseEvent(data);
      if (info.error || !info.final) return info;
      const choice = (data as { choices?: Array<{ text?: string; finish_reason?: string | null }> }).choices?.[0];
      return { ...info, ...(choice?.text ? { text: choice.text } : {}), final: { ...info.final, finishReason: choice?.finish_reason ?? null } };
    },
  },
};

/** worker.<name>.env keys that give the service the engine settings llama-server gets on its command line. */
export function benchWorkerEnv(
  c: Pick<ServiceTargetConfig, 'modelPath' | 'slots' | 'ctxPerSlot' | 'batchSize' | 'threads' | 'hostPromptCache'>,
  maxQueue: number,
): Record<string, string> {
  return {
    MODEL_PATH: c.modelPath,
    WORKER_CONCURRENCY: String(c.slots), // -np
    REPLICAS: '1',
    MODEL_THREADS: String(c.threads), // -t and -tb (the engine uses one count for both)
    CTX_SIZE: String(c.ctxPerSlot), // per sequence; llama-server -c slots*ctxPerSlot with --no-kv-unified
    BATCH_SIZE: String(c.batchSize), // -b and -ub
    GPU_LAYERS: 'auto', // both sides' default (CPU build: nothing to offload)
    CACHE_RAM: c.hostPromptCache ? '8192' : '0', // --cache-ram
    MAX_QUEUE: String(maxQueue),
    JETSTREAM: 'off',
  };
}

/**
 * One worker's HTTP port on a supervisor started elsewhere (a ServiceTarget's, or a ServiceProcess
 * with several workers): the OpenAI route next to ours in --route-compare, each model of the
 * multi-model scenario. stop() closes the client only; whoever started the service stops it.
 */
export class WorkerPortTarget implements BenchTarget {
  readonly label: string;
  readonly transport: string;
  readonly #service: ServiceProcess;
  readonly #worker: string;
  readonly #protocol: StreamProtocol;
  #client: HttpStreamClient | undefined;

  constructor(options: { service: ServiceProcess; worker: string; protocol: StreamProtocol; label: string; transport: string }) {
    this.#service = options.service;
    this.#worker = options.worker;
    this.#protocol = options.protocol;
    this.label = options.label;
    this.transport = options.transport;
  }

  async start(): Promise<void> {
    this.#client = new HttpStreamClient({ host: '127.0.0.1', port: this.#service.port(this.#worker), protocol: this.#protocol });
  }

  run(request: BenchRequest): Promise<RequestOutcome> {
    if (!this.#client) throw new Error(`${this.label}: run() before start()`);
    return this.#client.run(request);
  }

  describe(): Record<string, unknown> {
    return { transport: this.transport, worker: this.#worker };
  }

  async stop(): Promise<void> {
    this.#client?.close();
    this.#client = undefined;
  }
}

/** OpenAI's /v1/completions on `base`'s supervisor, which speaks the original API: `--route-compare`. */
export class RouteTarget extends WorkerPortTarget {
  constructor(base: ServiceTarget) {
    super({
      service: base.service,
      worker: 'bench',
      protocol: openAiCompletionProtocol,
      label: 'ours-openai',
      transport: 'HTTP POST /v1/completions in OpenAI\'s shape ("prompt", "stream": true, include_usage; SSE chunks, [DONE]), same supervisor as ours',
    });
  }
}

export class ServiceTarget implements BenchTarget {
  readonly label: string;
  readonly transport: string;
  readonly #config: ServiceTargetConfig;
  readonly #service: ServiceProcess;
  #client: HttpStreamClient | undefined;
  #finalWorkers: unknown = null;

  constructor(config: ServiceTargetConfig) {
    this.#config = config;
    this.label = config.label ?? 'ours';
    const plain = config.stream === false;
    this.transport =
      (config.route === 'openai'
        ? plain
          ? 'HTTP POST /v1/completions in OpenAI\'s shape ("prompt", "stream": false; one JSON answer)'
          : 'HTTP POST /v1/completions in OpenAI\'s shape ("prompt", "stream": true, include_usage; SSE chunks, [DONE])'
        : plain
          ? 'HTTP POST /v1/completions, "stream": false, "raw": true (one JSON answer)'
          : 'HTTP POST /v1/completions, "stream": true, "raw": true (SSE)') +
      " to the supervisor's model port; engine in a host process (piscina worker thread); a new loopback connection per request";
    const { root, log, supervisorEnv } = config;
    this.#service = new ServiceProcess({
      root,
      workers: [{ name: 'bench', env: benchWorkerEnv(config, 1024) }],
      shutdownGraceMs: 2000,
      ...(supervisorEnv ? { supervisorEnv } : {}),
      ...(log ? { log } : {}),
    });
  }

  get service(): ServiceProcess {
    return this.#service;
  }

  async start(): Promise<void> {
    await this.#service.start();
    this.#client = new HttpStreamClient({
      host: '127.0.0.1',
      port: this.#service.port('bench'),
      protocol: this.#config.route === 'openai' ? openAiCompletionProtocol : serviceCompletionProtocol,
      stream: this.#config.stream !== false,
      keepAlive: this.#config.keepAlive === true,
    });
  }

  async run(request: BenchRequest): Promise<RequestOutcome> {
    if (!this.#client) throw new Error('ServiceTarget.run() before start()');
    return this.#client.run(request);
  }

  cpuSeconds(): number | null {
    return this.#service.cpuSeconds();
  }

  supervisorCpuSeconds(): number | null {
    return this.#service.supervisorCpuSeconds();
  }

  /** Reads the admin API's view of the worker (counters, restarts) for the JSON; call before stop(). */
  async snapshot(): Promise<void> {
    this.#finalWorkers = await this.#service.workers().catch((err: unknown) => `unavailable: ${String(err)}`);
  }

  describe(): Record<string, unknown> {
    return {
      transport: this.transport,
      supervisorEnvExtra: this.#config.supervisorEnv ?? {},
      addonPathEnv: process.env.LMSERVE_ADDON_PATH ?? null,
      service: this.#service.describe(),
      workersAtEnd: this.#finalWorkers,
    };
  }

  async stop(): Promise<void> {
    this.#client?.close();
    this.#client = undefined;
    await this.#service.stop();
  }
}
