import type { Response } from 'express';

/** Server-sent events on an express response; headers go out with the first event. */
export class SseStream {
  readonly #res: Response;
  #started = false;

  constructor(res: Response) {
    this.#res = res;
  }

  get started(): boolean {
    return this.#started;
  }

  /** The bytes of one event. */
  static format(event: string, data: unknown): string {
    return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  }

  send(event: string, data: unknown): void {
    const res = this.#res;
    if (res.writableEnded || res.destroyed) return;
    this.open();
    res.write(SseStream.format(event, data));
  }

  /** Sends the headers (once); events follow. */
  open(): void {
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
  }

  end(): void {
    if (!this.#res.writableEnded) this.#res.end();
  }
}
