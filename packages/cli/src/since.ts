/** `--since`: unix seconds, an ISO-8601 time, or a duration back from now (30s, 10m, 2h, 1d, 1h30m). */
import { InvalidArgumentError } from 'commander';

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const;

const UNIX = /^\d+(\.\d+)?$/;
const DURATION = /^(\d+(\.\d+)?[smhd])+$/;
/** A date, optionally a time (after T or a space), optionally an offset (Z, +02, +0200, +02:00). */
const ISO = /^(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d(?::\d\d(?:\.\d+)?)?)(Z|[+-]\d\d(?::?\d\d)?)?)?$/i;

export const SINCE_FORMS = 'unix seconds, an ISO-8601 time (2024-05-01T12:00:00Z) or a duration back from now (30s, 10m, 2h, 1d)';

/**
 * Unix seconds for a `--since` value; `nowMs` is the clock for durations. Throws commander's
 * InvalidArgumentError naming the option, so the command line error says which option was wrong.
 */
export function parseSince(value: string, nowMs: number = Date.now(), option = '--since'): number {
  const text = value.trim();
  if (UNIX.test(text)) return Number(text);
  if (DURATION.test(text.toLowerCase())) {
    let seconds = 0;
    for (const m of text.toLowerCase().matchAll(/(\d+(?:\.\d+)?)([smhd])/g)) {
      seconds += Number(m[1]) * UNIT_SECONDS[m[2] as keyof typeof UNIT_SECONDS];
    }
    return Math.floor(nowMs / 1000 - seconds);
  }
  const iso = ISO.exec(text);
  if (iso) {
    // Normalised to the one form Date.parse reads everywhere. Without an offset the time is
    // local, and so is a bare date (local midnight; Date.parse alone would read it as UTC).
    const [, date, time = '00:00', zone = ''] = iso;
    const offset = /^[+-]\d\d$/.test(zone) ? `${zone}:00` : zone.replace(/^([+-]\d\d)(\d\d)$/, '$1:$2').toUpperCase();
    const ms = Date.parse(`${date}T${time}${offset}`);
    if (!Number.isNaN(ms)) return ms / 1000;
  }
  throw new InvalidArgumentError(`${option} must be ${SINCE_FORMS}; got ${JSON.stringify(value)}`);
}
