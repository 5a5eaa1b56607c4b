import { fileURLToPath } from 'node:url';

export { ModelHost } from './model-host.js';
export type { ModelHostOptions } from './model-host.js';
export { EventOutbox } from './event-outbox.js';
export { RelayWriter } from './relay-writer.js';
export type { RelayWriterOptions } from './relay-writer.js';
export { DEFAULT_RELAY_INTERVAL_MS, eventInterval, relayIntervalMs } from './relay-interval.js';
export { GrammarChecker, GrammarCheckerUnavailable } from './grammar-checker.js';
export type { GrammarCheckerOptions } from './grammar-checker.js';

export type { MeasureReply, MeasureRequest } from './measure-main.js';

/** Path of the measuring process's entry script (node measure-main.js '<MeasureRequest JSON>'). */
export function measureMainPath(): string {
  return fileURLToPath(new URL('./measure-main.js', import.meta.url));
}

/** Path of the model host's entry script, for child_process.fork. */
export function hostMainPath(): string {
  return fileURLToPath(new URL('./main.js', import.meta.url));
}
