/** `Authorization: Bearer <token>` checks, compared in constant time. */
import { timingSafeEqual } from 'node:crypto';

/** True when the header carries exactly `token` (case-insensitive scheme, constant-time compare). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!match?.[1]) return false;
  const given = Buffer.from(match[1].trim());
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
