/**
 * What the supervisor does after a model host exits on its own: a pure function of what is
 * known at that moment, so tests can call it without processes.
 */

/** After this long ready, a crash no longer counts toward the backoff streak. */
export const STABLE_MS = 60_000;
/** Load crashes in a row after which the worker is reported failed instead of retried. */
export const MAX_LOAD_CRASHES = 3;

export interface ExitFacts {
  /** The host said why it cannot serve (a load error) before it exited. */
  fatal: boolean;
  /** How long it had been ready; undefined when it never became ready. */
  readyForMs: number | undefined;
  /** Crashes in a row before this one. */
  crashStreak: number;
  backoffMs: number;
  backoffMaxMs: number;
}

export type ExitDecision =
  | { action: 'fail'; reason: 'load-error' | 'load-crashes'; crashStreak: number }
  | { action: 'restart'; delayMs: number; crashStreak: number };

export function decideAfterExit(facts: ExitFacts): ExitDecision {
  // A load failure (bad file, unsupported model) would fail the same way again: report it.
  if (facts.fatal && facts.readyForMs === undefined) return { action: 'fail', reason: 'load-error', crashStreak: facts.crashStreak };
  const streak = (facts.readyForMs !== undefined && facts.readyForMs > STABLE_MS ? 0 : facts.crashStreak) + 1;
  if (facts.readyForMs === undefined && streak >= MAX_LOAD_CRASHES) return { action: 'fail', reason: 'load-crashes', crashStreak: streak };
  const delayMs = Math.min(facts.backoffMs * 2 ** (streak - 1), facts.backoffMaxMs);
  return { action: 'restart', delayMs, crashStreak: streak };
}
