/** Sampling and stopping parameters of one generation (engine-level, camelCase). */
export interface GenerationParams {
  /** Tokens to generate at most; -1 (default) until the sequence's context is full. */
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  repeatLastN?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
  ignoreEos?: boolean;
  /** token id -> bias; a bias of -100 or less bans the token. */
  logitBias?: Record<number, number> | Array<[number, number]>;
  stop?: string | string[];
  /** A GBNF grammar the output must match. */
  grammar?: string;
  grammarRoot?: string;
  /**
   * A JSON schema the output must match: converted to a grammar by llama.cpp's converter in the
   * model host (never reaches the engine). Exclusive with `grammar`.
   */
  jsonSchema?: Record<string, unknown>;
  /**
   * Log-probabilities to report with each generated token: -1 (default) none, 0 the chosen
   * token's, N also the N most likely alternatives (at most 20).
   */
  logprobs?: number;
}

/** A token at one position with its log-probability (natural log, over the raw logits). */
export interface TokenAlternative {
  id: number;
  /** The token's text (special tokens rendered); `bytes` holds it exactly when it is not whole UTF-8. */
  text: string;
  bytes: number[];
  logprob: number;
}

/** A generated token's log-probability and the most likely tokens at its position (most likely first). */
export interface TokenLogprob extends TokenAlternative {
  top: TokenAlternative[];
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface TokenChunk {
  text: string;
  tokens: number[];
  /** One per token, when the request asked for them (params.logprobs >= 0). */
  logprobs?: TokenLogprob[];
}

export interface Usage {
  tokensIn: number;
  tokensOut: number;
  /** Prompt tokens reused from the KV cache (prefix reuse). */
  cachedTokens: number;
}

export interface Timings {
  queueMs: number;
  ttftMs: number;
  prefillMs: number;
  decodeMs: number;
  totalMs: number;
  /** Prompt tokens evaluated per second (excluding reused ones). */
  prefillTps: number;
  /** Output tokens per second after the first. */
  decodeTps: number;
}

export interface GenerationResult {
  text: string;
  finishReason: FinishReason;
  stopString?: string;
  usage: Usage;
  timings: Timings;
}

export interface EngineStats {
  slots: number;
  slotsBusy: number;
  queued: number;
  kvCells: number;
  kvUsed: number;
  kvUsedRatio: number;
  tokensPerSecond: number;
  tokensGenerated: number;
  promptTokensProcessed: number;
  requestsDone: number;
  decodeSteps: number;
}
