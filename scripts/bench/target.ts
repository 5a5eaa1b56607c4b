/**
 * What the benchmark drives: anything that can run one generation request and report, from the
 * client's side, when the first token arrived and how many tokens the server says it generated.
 * One implementation per serving stack (our service over HTTP, our engine in-process, llama-server
 * over HTTP); the runner knows nothing else about them.
 */

/** Sampling parameters, identical on every side of a comparison. */
export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
}

/** One request of a workload; every target receives exactly the same sequence of these. */
export interface BenchRequest {
  /** Position in the round (0-based); also used to build the prompt and the seed. */
  index: number;
  prompt: string;
  maxTokens: number;
  seed: number;
  sampling: SamplingParams;
  ignoreEos: boolean;
  /** token id -> bias; `banned` ids get minus infinity (each target spells that its own way). */
  bannedTokenIds: readonly number[];
  /**
   * The grammar row only: the output must match this grammar. Our service gets `name` (resolved by
   * its grammar library), llama-server gets `gbnf` (that library's content for the name).
   */
  grammar?: { name: string; gbnf: string };
}

/** What a target reports for one request. Counts come from the server's own usage numbers. */
export interface RequestOutcome {
  ok: boolean;
  error?: string;
  /** Client-side: from sending the request to the first streamed token. */
  ttftMs: number | null;
  /** Client-side: from sending the request to the end of the stream. */
  totalMs: number;
  /** Generated tokens as the server reports them (null when it did not say). */
  tokensOut: number | null;
  /** Prompt tokens as the server reports them. */
  tokensIn: number | null;
  /** Prompt tokens the server reused from its cache. */
  cachedTokens: number | null;
  /** Streamed events that carried tokens (a sanity check against tokensOut). */
  streamedEvents: number;
  finishReason: string | null;
  /** The server's own time to first token (ours: timings.ttft_ms), when it reports one. */
  serverTtftMs?: number | null;
  /** The generated text, when the protocol reports it (the streamed pieces, or the final output). */
  output?: string;
}

export interface BenchTarget {
  /** Short label used in tables and JSON ("ours", "llama-server"). */
  readonly label: string;
  /** How it is driven, for the JSON ("in-process engine", "HTTP /completion, SSE"). */
  readonly transport: string;
  start(): Promise<void>;
  run(request: BenchRequest): Promise<RequestOutcome>;
  /** Extra facts for the JSON: configuration, versions, counters. */
  describe(): Record<string, unknown>;
  /** CPU seconds the target's own process used so far, when it is a separate process. */
  cpuSeconds?(): number | null;
  /**
   * Our service only: CPU seconds of the supervisor process alone so far (HTTP, SSE, the relay
   * from the model host, audit and metrics when on), a part of cpuSeconds().
   */
  supervisorCpuSeconds?(): number | null;
  /** Idempotent; must also be safe to call after a failed start. */
  stop(): Promise<void>;
}
