/**
 * A relayed stream's tokens (NATS, and HTTP streams that are not direct: log-probabilities,
 * several prompts) leave the engine at most every this many milliseconds after the first ones
 * (LMSERVE_RELAY_INTERVAL_MS; 0 sends every decode step). Each event wakes the replica thread, the
 * supervisor and whatever it forwards to (about 0.4 ms of CPU a wake-up each on a small VM), so
 * on a machine whose cores the decode threads fill, per-step events cost the decode speed; at
 * 20 ms a CPU-speed stream sends two or three tokens an event, a fast GPU stream several.
 */
export const DEFAULT_RELAY_INTERVAL_MS = 20;

export function relayIntervalMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.LMSERVE_RELAY_INTERVAL_MS;
  if (raw === undefined || raw.trim() === '') return DEFAULT_RELAY_INTERVAL_MS;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 && n <= 1000 ? Math.round(n) : DEFAULT_RELAY_INTERVAL_MS;
}

/** A request's own interval (the transport's choice) when it is a whole number of 0 … 1000 ms, else the host's. */
export function eventInterval(requested: number | undefined, fallback: number): number {
  return Number.isInteger(requested) && (requested as number) >= 0 && (requested as number) <= 1000 ? (requested as number) : fallback;
}
