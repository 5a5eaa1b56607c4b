import { LmError, type GenerationResult, type TokenChunk } from '@lmserve/protocol';
import type { NativeEvent } from './binding.js';
import { nativeEventError } from './errors.js';

export type DoneEvent = Extract<NativeEvent, { type: 'done' }>;

/** The result of a finished generation: the engine's `done` event with rates added, and its text. */
export function generationResult(event: DoneEvent, text: string): GenerationResult {
  const { usage, timings } = event;
  const prefilled = usage.tokensIn - usage.cachedTokens;
  const result: GenerationResult = {
    text,
    finishReason: event.finishReason,
    usage: { ...usage },
    timings: {
      ...timings,
      prefillTps: timings.prefillMs > 0 ? (prefilled * 1000) / timings.prefillMs : 0,
      decodeTps: usage.tokensOut > 1 && timings.decodeMs > 0 ? ((usage.tokensOut - 1) * 1000) / timings.decodeMs : 0,
    },
  };
  if (event.stopString !== undefined) result.stopString = event.stopString;
  return result;
}

/**
 * One running generation: an async iterable of token chunks (one chunk per decode step) and a
 * `result` promise with the finish reason, usage and timings. Iterate it once. A cancelled
 * generation ends normally with finishReason "cancelled"; a failed one throws an LmError from
 * the iterator and rejects `result`.
 */
export class Generation implements AsyncIterable<TokenChunk> {
  readonly result: Promise<GenerationResult>;
  #resolveResult!: (r: GenerationResult) => void;
  #rejectResult!: (e: LmError) => void;
  #chunks: TokenChunk[] = [];
  #text: string[] = [];
  #wake: (() => void) | undefined;
  #ended = false;
  #error: LmError | undefined;
  #cancel: (() => void) | undefined;
  #cancelRequested = false;
  #iterating = false;
  #signalCleanup: (() => void) | undefined;

  constructor(signal?: AbortSignal) {
    this.result = new Promise<GenerationResult>((resolve, reject) => {
      this.#resolveResult = resolve;
      this.#rejectResult = reject;
    });
    // The iterator reports failures itself; this keeps an unobserved `result` from crashing.
    this.result.catch(() => undefined);
    if (signal) {
      if (signal.aborted) {
        this.#cancelRequested = true;
      } else {
        const onAbort = () => this.cancel();
        signal.addEventListener('abort', onAbort, { once: true });
        this.#signalCleanup = () => signal.removeEventListener('abort', onAbort);
      }
    }
  }

  /** Stops the generation at the next decode step (also while its prompt is being read). */
  cancel(): void {
    if (this.#ended) return;
    this.#cancelRequested = true;
    this.#cancel?.();
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** @internal Connects the generation to the engine request that feeds it. */
  attach(cancel: () => void): void {
    this.#cancel = cancel;
    if (this.#cancelRequested) cancel();
  }

  /** @internal */
  handle(event: NativeEvent): void {
    if (this.#ended) return;
    if (event.type === 'tokens') {
      this.#text.push(event.text);
      this.#chunks.push(event.logprobs ? { text: event.text, tokens: event.tokens, logprobs: event.logprobs } : { text: event.text, tokens: event.tokens });
    } else if (event.type === 'done') {
      this.#end();
      this.#resolveResult(this.#toResult(event));
    } else {
      this.fail(nativeEventError(event.code, event.message));
      return;
    }
    this.#wake?.();
  }

  /** @internal */
  fail(error: LmError): void {
    if (this.#ended) return;
    this.#end();
    this.#error = error;
    this.#rejectResult(error);
    this.#wake?.();
  }

  #end(): void {
    this.#ended = true;
    this.#signalCleanup?.();
  }

  #toResult(event: DoneEvent): GenerationResult {
    return generationResult(event, this.#text.join(''));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TokenChunk> {
    if (this.#iterating) throw new Error('a Generation can be iterated only once');
    this.#iterating = true;
    try {
      while (true) {
        const chunk = this.#chunks.shift();
        if (chunk) {
          yield chunk;
          continue;
        }
        if (this.#ended) {
          if (this.#error) throw this.#error;
          return;
        }
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    } finally {
      // A consumer that stops iterating early (break, throw) no longer wants the output.
      if (!this.#ended) this.cancel();
    }
  }
}
