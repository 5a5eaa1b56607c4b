import type { GenerationEvent } from '@lmserve/protocol';

/**
 * Collects generation events and sends them as one batch per event-loop turn: the engine
 * wakes every running generation of a decode step together, so one step crosses each hop
 * as one message, not one message per sequence.
 */
export class EventOutbox {
  readonly #send: (events: GenerationEvent[]) => void;
  #pending: GenerationEvent[] = [];
  #scheduled = false;

  constructor(send: (events: GenerationEvent[]) => void) {
    this.#send = send;
  }

  push(event: GenerationEvent): void {
    this.#pending.push(event);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.#scheduled = false;
    if (this.#pending.length === 0) return;
    const events = this.#pending;
    this.#pending = [];
    this.#send(events);
  }
}
