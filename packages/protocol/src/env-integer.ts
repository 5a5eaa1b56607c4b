/**
 * A process variable that tunes the hot path (LMSERVE_*_MS and the like): a whole number from
 * `min` to `max`, else `fallback`. Unset, empty, malformed or out of range all mean the default: a
 * tuning knob never stops the service. `round`: a fraction is rounded rather than refused.
 */
export function envInteger(
  env: NodeJS.ProcessEnv,
  name: string,
  limits: { min: number; max: number; fallback: number; round?: boolean },
): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return limits.fallback;
  const parsed = Number(raw);
  const value = limits.round && Number.isFinite(parsed) ? Math.round(parsed) : parsed;
  return Number.isInteger(value) && value >= limits.min && value <= limits.max ? value : limits.fallback;
}
