/**
 * llama.cpp's own llama-server as a benchmark target: started as a child process on a free
 * loopback port, driven through POST /completion with "stream": true. The child is killed when
 * the target stops and, as a last resort, when this process exits.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { hostEnvironment } from '@lmserve/supervisor';
import { HttpStreamClient, type StreamEventInfo, type StreamProtocol } from './http-stream.js';
import { OutputTail, freePort, processCpuSeconds, sleep } from '../lib/service-harness.js';
import type { BenchRequest, BenchTarget, RequestOutcome } from './target.js';

export interface LlamaServerConfig {
  binary: string;
  modelPath: string;
  slots: number;
  ctxPerSlot: number;
  batchSize: number;
  threads: number;
  kvUnified: boolean;
  extraArgs: readonly string[];
  /** false: one JSON answer per request ("stream": false), as load tools send (`--stream off`). */
  stream?: boolean;
  /** Keep connections open between requests (`--keep-alive`). */
  keepAlive?: boolean;
  /**
   * Keep llama-server's host-memory prompt cache at its default (--cache-ram 8192 MiB, idle slots
   * saved on a new task) instead of --cache-ram 0: the shared-prefix scenario, whose prompts do
   * repeat, compares the two sides' caching as a user would run them.
   */
  hostPromptCache?: boolean;
  /** How long loading and warm-up may take. */
  startTimeoutMs?: number;
}

/** llama-server's native /completion format (stream of partial results, then a final one). */
export const llamaCompletionProtocol: StreamProtocol = {
  path: '/completion',
  body(request: BenchRequest) {
    const s = request.sampling;
    return {
      prompt: request.prompt,
      n_predict: request.maxTokens,
      temperature: s.temperature,
      top_k: s.topK,
      top_p: s.topP,
      min_p: s.minP,
      repeat_penalty: s.repeatPenalty,
      presence_penalty: s.presencePenalty,
      frequency_penalty: s.frequencyPenalty,
      seed: request.seed,
      ignore_eos: request.ignoreEos,
      // `false` bans a token (minus infinity), as our bias of -100 does.
      logit_bias: request.bannedTokenIds.map((id) => [id, false]),
      stream: true,
      cache_prompt: true,
      // GBNF text: the content of our library's grammar of the same name.
      ...(request.grammar ? { grammar: request.grammar.gbnf } : {}),
    };
  },
  parseEvent(data: unknown): StreamEventInfo {
    const d = data as {
      error?: { message?: string } | string;
      stop?: boolean;
      tokens?: number[];
      content?: string;
      tokens_predicted?: number;
      tokens_evaluated?: number;
      stop_type?: string;
      timings?: { predicted_n?: number; prompt_n?: number; cache_n?: number };
    };
    if (d.error) return { tokens: 0, error: typeof d.error === 'string' ? d.error : (d.error.message ?? JSON.stringify(d.error)) };
    const info: StreamEventInfo = { tokens: Array.isArray(d.tokens) ? d.tokens.length : 0 };
    if (typeof d.content === 'string' && d.content !== '') info.text = d.content;
    if (d.stop === true) {
      const predicted = d.timings?.predicted_n ?? d.tokens_predicted ?? null;
      if (d.timings?.predicted_n !== undefined && d.tokens_predicted !== undefined && d.timings.predicted_n !== d.tokens_predicted) {
        info.error = `server usage disagrees: tokens_predicted ${d.tokens_predicted}, timings.predicted_n ${d.timings.predicted_n}`;
      }
      info.final = {
        tokensOut: predicted,
        tokensIn: d.tokens_evaluated ?? null,
        cachedTokens: d.timings?.cache_n ?? null,
        finishReason: d.stop_type ?? null,
      };
    }
    return info;
  },
  plain: {
    body: (request: BenchRequest) => ({ ...(llamaCompletionProtocol.body(request) as object), stream: false }),
  },
};

export function llamaServerVersion(binary: string): string {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 15_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.startsWith('version:'))?.trim() ?? 'unknown';
}

export class LlamaServerTarget implements BenchTarget {
  readonly label = 'llama-server';
  readonly transport: string;
  readonly #config: LlamaServerConfig;
  readonly #tail = new OutputTail();
  #child: ChildProcess | undefined;
  #exit: { code: number | null; signal: string | null } | undefined;
  #client: HttpStreamClient | undefined;
  #args: string[] = [];
  #env: NodeJS.ProcessEnv = {};
  #killOnExit = () => this.#child?.kill('SIGKILL');

  constructor(config: LlamaServerConfig) {
    this.transport = config.stream === false
      ? 'HTTP POST /completion, "stream": false (one JSON answer), a new loopback connection per request'
      : 'HTTP POST /completion, "stream": true (SSE), a new loopback connection per request';
    this.#config = config;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async start(): Promise<void> {
    const c = this.#config;
    const port = await freePort();
    this.#args = [
      '-m', c.modelPath,
      '-np', String(c.slots),
      '-t', String(c.threads),
      '-tb', String(c.threads),
      '-c', String(c.slots * c.ctxPerSlot),
      '-b', String(c.batchSize),
      '-ub', String(c.batchSize),
      '-cb',
      c.kvUnified ? '--kv-unified' : '--no-kv-unified',
      '-fa', 'auto',
      // Prompts never repeat in the main workload; the host-memory prompt cache (saving idle slots
      // on each new task) would be work our engine does not do. See docs/benchmarks.md.
      ...(c.hostPromptCache ? [] : ['--cache-ram', '0']),
      '--no-webui',
      '--host', '127.0.0.1',
      '--port', String(port),
      ...c.extraArgs,
    ];
    // The environment a model host of ours gets when it has its cores to itself (hostEnvironment:
    // libgomp's default wait, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set), so both sides'
    // OpenMP threads wait alike.
    this.#env = hostEnvironment(process.env);
    const child = spawn(c.binary, this.#args, { stdio: ['ignore', 'pipe', 'pipe'], env: this.#env });
    this.#child = child;
    process.on('exit', this.#killOnExit);
    this.#tail.watch(child, (exit) => (this.#exit = exit));

    const deadline = Date.now() + (c.startTimeoutMs ?? 120_000);
    while (true) {
      if (this.#exit) throw new Error(`llama-server exited during start (${JSON.stringify(this.#exit)}):\n${this.#tail}`);
      if (Date.now() > deadline) throw new Error(`llama-server did not become healthy in time:\n${this.#tail}`);
      const status = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.status, () => 0);
      if (status === 200) break;
      await sleep(200);
    }
    this.#client = new HttpStreamClient({ host: '127.0.0.1', port, protocol: llamaCompletionProtocol, stream: c.stream !== false, keepAlive: c.keepAlive === true });
  }

  async run(request: BenchRequest): Promise<RequestOutcome> {
    if (!this.#client) throw new Error('LlamaServerTarget.run() before start()');
    const outcome = await this.#client.run(request);
    if (!outcome.ok && this.#exit) outcome.error = `${outcome.error}; llama-server died: ${this.#tail.toString().slice(-2000)}`;
    return outcome;
  }

  cpuSeconds(): number | null {
    const pid = this.#child?.pid;
    if (pid === undefined || this.#exit) return null;
    return processCpuSeconds(pid);
  }

  describe(): Record<string, unknown> {
    return {
      transport: this.transport,
      binary: this.#config.binary,
      version: llamaServerVersion(this.#config.binary),
      args: this.#args,
      ompWaitPolicy: this.#env.OMP_WAIT_POLICY ?? null,
      gompSpinCount: this.#env.GOMP_SPINCOUNT ?? null,
    };
  }

  async stop(): Promise<void> {
    this.#client?.close();
    this.#client = undefined;
    const child = this.#child;
    if (child && !this.#exit) {
      child.kill('SIGTERM');
      const deadline = Date.now() + 5000;
      while (!this.#exit && Date.now() < deadline) await sleep(50);
      if (!this.#exit) child.kill('SIGKILL');
    }
    process.off('exit', this.#killOnExit);
  }
}
