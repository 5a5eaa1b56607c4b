/** The last lines a child wrote to stderr, kept to explain why it died. */
export class StderrTail {
  readonly #maxLines: number;
  readonly #maxBytes: number;
  readonly #lines: string[] = [];

  constructor(maxLines = 20, maxBytes = 8192) {
    this.#maxLines = maxLines;
    this.#maxBytes = maxBytes;
  }

  push(line: string): void {
    this.#lines.push(line.length > this.#maxBytes ? line.slice(0, this.#maxBytes) : line);
    if (this.#lines.length > this.#maxLines) this.#lines.shift();
    while (this.#lines.length > 1 && this.#lines.reduce((n, l) => n + l.length + 1, 0) > this.#maxBytes) this.#lines.shift();
  }

  text(lines = this.#maxLines): string {
    return this.#lines.slice(-lines).join('\n');
  }
}
