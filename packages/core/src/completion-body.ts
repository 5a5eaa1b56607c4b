/**
 * The answer to a completed request in the original API, the same on every transport: the HTTP
 * non-streaming response and its SSE `done` event, the NATS reply and its `done` message.
 */
import type { GenerationResult } from '@lmserve/protocol';

export interface CompletionBody {
  id: string;
  model: string;
  output: string;
  finish_reason: GenerationResult['finishReason'];
  /** cached_tokens: prompt tokens a cache gave instead of a prefill (own slot, another slot, CACHE_RAM). */
  usage: { tokens_in: number; tokens_out: number; cached_tokens: number };
  timings: { ttft_ms: number; dur_ms: number };
}

export function completionBody(id: string, model: string, result: GenerationResult): CompletionBody {
  return {
    id,
    model,
    output: result.text,
    finish_reason: result.finishReason,
    usage: { tokens_in: result.usage.tokensIn, tokens_out: result.usage.tokensOut, cached_tokens: result.usage.cachedTokens },
    timings: { ttft_ms: result.timings.ttftMs, dur_ms: result.timings.totalMs },
  };
}
