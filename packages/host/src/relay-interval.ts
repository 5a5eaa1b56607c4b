/**
 * A relayed stream's tokens (NATS, and HTTP streams that are not direct: log-probabilities,
 * several prompts) leave the engine at most every this many milliseconds after the first ones
 * (LMSERVE_RELAY_INTERVAL_MS; 0 sends every decode step). Each event wakes the replica thread, the
 * supervisor and whatever it forwards to (about 0.4 ms of CPU a wake-up each on a small VM), so
 * on a machine whose cores the decode threads fill, per-step events cost the decode speed; at
 * 20 ms a CPU-speed stream sends two or three tokens an event, a fast GPU stream several.
 */
import { envInteger } from '@lmserve/protocol';

export const DEFAULT_RELAY_INTERVAL_MS = 20;

export function relayIntervalMs(env: NodeJS.ProcessEnv = process.env): number {
  return envInteger(env, 'LMSERVE_RELAY_INTERVAL_MS', { min: 0, max: 1000, fallback: DEFAULT_RELAY_INTERVAL_MS, round: true });
}

/** A request's own interval (the transport's choice) when it is a whole number of 0 … 1000 ms, else the host's. */
export function eventInterval(requested: number | undefined, fallback: number): number {
  return Number.isInteger(requested) && (requested as number) >= 0 && (requested as number) <= 1000 ? (requested as number) : fallback;
}
