/**
 * A replica's end of the token relay: collects the generation events of a decode step and
 * writes them to the supervisor as one binary frame (relay-frame.ts) over the replica's own pipe.
 * Consecutive steps of one request that leave together are merged into one `tokens` record, so
 * the supervisor writes a client one chunk per frame, not one per token.
 *
 * When to write: at the end of each decode step (the engine's onBatchEnd), at once when the step
 * holds a request's first tokens or its end; otherwise at most every `coalesceMs`, so a very fast
 * stream (hundreds of tokens a second: small models on a GPU) costs a frame per few
 * milliseconds, not per token, while a CPU-speed stream (a step every ten milliseconds or more)
 * is written step by step.
 */
import { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { encodeFrame, type GenerationEvent, type TokenLogprob } from '@lmserve/protocol';

type TokensEvent = Extract<GenerationEvent, { type: 'tokens' }>;
type FinalEvent = Exclude<GenerationEvent, TokensEvent>;

export interface RelayWriterOptions {
  /** The relay pipe's file descriptor in this process (HostSpec.relayFds)... */
  fd?: number;
  /** ...or a stream to write the frames to (tests). */
  output?: Writable;
  /** Gets the ids of the requests that ended in each written frame. */
  onEnded: (ids: string[]) => void;
  /** Least time between two frames that carry only further tokens (default 4 ms). */
  coalesceMs?: number;
  /** A write failed (the supervisor is gone): the caller decides what to log. */
  onError?: (err: Error) => void;
}

export class RelayWriter {
  readonly #socket: Writable;
  readonly #onEnded: (ids: string[]) => void;
  readonly #coalesceMs: number;
  /** Tokens waiting per request, in arrival order. */
  #tokens = new Map<string, TokensEvent>();
  #finals: FinalEvent[] = [];
  #urgent = false;
  #lastWrite = 0;
  #timer: NodeJS.Timeout | undefined;
  #broken = false;

  constructor(options: RelayWriterOptions) {
    this.#onEnded = options.onEnded;
    this.#coalesceMs = options.coalesceMs ?? 4;
    if (options.output) this.#socket = options.output;
    else if (options.fd !== undefined) this.#socket = new Socket({ fd: options.fd, readable: false, writable: true });
    else throw new Error('RelayWriter needs an fd or an output stream');
    this.#socket.on('error', (err) => {
      this.#broken = true;
      options.onError?.(err);
    });
  }

  /** Tokens of one request; `first`: its first ones (written without waiting). */
  tokens(id: string, text: string, ids: readonly number[], logprobs: TokenLogprob[] | undefined, first: boolean): void {
    if (first) this.#urgent = true;
    const waiting = this.#tokens.get(id);
    if (!waiting) {
      this.#tokens.set(id, logprobs ? { type: 'tokens', id, text, ids: [...ids], logprobs: [...logprobs] } : { type: 'tokens', id, text, ids: [...ids] });
      return;
    }
    waiting.text += text;
    waiting.ids.push(...ids);
    if (logprobs) (waiting.logprobs ??= []).push(...logprobs);
  }

  /** A request's end (done or error): written with the step it belongs to, after its tokens. */
  final(event: FinalEvent): void {
    this.#urgent = true;
    this.#finals.push(event);
  }

  /** The end of a decode step: writes now, or on the coalescing timer. */
  stepEnded(): void {
    if (this.#tokens.size === 0 && this.#finals.length === 0) return;
    const now = performance.now();
    if (this.#urgent || now - this.#lastWrite >= this.#coalesceMs) {
      this.flush();
      return;
    }
    this.#timer ??= setTimeout(() => this.flush(), this.#coalesceMs - (now - this.#lastWrite));
  }

  flush(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#urgent = false;
    if (this.#tokens.size === 0 && this.#finals.length === 0) return;
    const events: GenerationEvent[] = [...this.#tokens.values(), ...this.#finals];
    const ended = this.#finals.map((e) => e.id);
    this.#tokens = new Map();
    this.#finals = [];
    this.#lastWrite = performance.now();
    if (!this.#broken) this.#socket.write(encodeFrame(events));
    if (ended.length > 0) this.#onEnded(ended);
  }

  /** Writes what is left and closes the pipe once the kernel has it all. */
  close(): Promise<void> {
    this.flush();
    if (this.#broken) {
      this.#socket.destroy();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#socket.destroy();
        resolve();
      }, 2000);
      this.#socket.end(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
