/** OpenAI's server-sent events: `data: <json>` blocks without event names, ended by `data: [DONE]`. */
import type { Response } from 'express';

export class OpenAiEventStream {
  readonly #res: Response;
  #started = false;

  constructor(res: Response) {
    this.#res = res;
  }

  get started(): boolean {
    return this.#started;
  }

  /** The bytes of one chunk. */
  static format(data: unknown): string {
    return `data: ${JSON.stringify(data)}\n\n`;
  }

  /** Sends one chunk; headers go out with the first. */
  send(data: unknown): void {
    this.#write(OpenAiEventStream.format(data));
  }

  /** Sends the headers (once); chunks follow. */
  open(): void {
    this.#write('');
  }

  /** `data: [DONE]` and the end of the response. */
  done(): void {
    this.#write('data: [DONE]\n\n');
    if (!this.#res.writableEnded) this.#res.end();
  }

  #write(text: string): void {
    const res = this.#res;
    if (res.writableEnded || res.destroyed) return;
    if (!this.#started) {
      this.#started = true;
      res.status(200);
      res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
      res.setHeader('Cache-Control', 'no-cache');
      res.setHeader('Connection', 'keep-alive');
      res.setHeader('X-Accel-Buffering', 'no');
      res.flushHeaders();
    }
    if (text !== '') res.write(text);
  }
}
