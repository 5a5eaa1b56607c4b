/** `--since`: unix seconds, ISO-8601 times, relative durations; bad input names the option. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError } from 'commander';
import { parseSince } from '../../packages/cli/src/since.js';

// Local times below are read in a fixed zone with no daylight saving (+05:30).
process.env.TZ = 'Asia/Kolkata';

const now = Date.UTC(2024, 4, 1, 12, 0, 0); // 2024-05-01T12:00:00Z
const nowS = now / 1000;

test('unix seconds, whole or fractional, pass through', () => {
  assert.equal(parseSince('1700000000', now), 1_700_000_000);
  assert.equal(parseSince('1700000000.25', now), 1_700_000_000.25);
  assert.equal(parseSince('0', now), 0);
  assert.equal(parseSince(' 1700000000 ', now), 1_700_000_000, 'surrounding blanks are ignored');
});

test('relative durations count back from now: s, m, h, d, combined, fractional', () => {
  assert.equal(parseSince('30s', now), nowS - 30);
  assert.equal(parseSince('10m', now), nowS - 600);
  assert.equal(parseSince('2h', now), nowS - 7200);
  assert.equal(parseSince('1d', now), nowS - 86_400);
  assert.equal(parseSince('1h30m', now), nowS - 5400);
  assert.equal(parseSince('1.5h', now), nowS - 5400);
  assert.equal(parseSince('2H', now), nowS - 7200, 'units in either case');
  assert.equal(parseSince('0s', now), nowS);
  // Whole seconds even when the clock is not.
  assert.equal(parseSince('10s', now + 999), nowS - 10);
  // The default clock is the real one.
  const real = parseSince('1m');
  assert.ok(Math.abs(real - (Date.now() / 1000 - 60)) < 5);
});

test('ISO-8601: Z, offsets in every spelling, fractions; without an offset the time is local', () => {
  assert.equal(parseSince('2024-05-01T12:00:00Z', now), nowS);
  assert.equal(parseSince('2024-05-01t12:00:00z', now), nowS);
  assert.equal(parseSince('2024-05-01T12:00:00.250Z', now), nowS + 0.25);
  assert.equal(parseSince('2024-05-01T14:00:00+02:00', now), nowS);
  assert.equal(parseSince('2024-05-01T14:00:00+0200', now), nowS);
  assert.equal(parseSince('2024-05-01T14:00:00+02', now), nowS);
  assert.equal(parseSince('2024-05-01T07:00:00-05:00', now), nowS);
  assert.equal(parseSince('2024-05-01T12:00Z', now), nowS, 'seconds are optional');
  // Local (+05:30 here): 17:30 local is 12:00Z.
  assert.equal(parseSince('2024-05-01T17:30:00', now), nowS);
  assert.equal(parseSince('2024-05-01 17:30:00', now), nowS, 'a space instead of the T');
  // A bare date is local midnight: 2024-04-30T18:30Z.
  assert.equal(parseSince('2024-05-01', now), Date.UTC(2024, 3, 30, 18, 30) / 1000);
});

test('anything else is refused with an error that names --since and the value', () => {
  for (const bad of ['', 'yesterday', '-5', '10x', '5 m', 'm', '1e9', '2024-13-01', '2024-05-01T25:00:00Z', '2024-05-01T12', '12:00', 'now-1h']) {
    assert.throws(
      () => parseSince(bad, now),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, `${JSON.stringify(bad)}: ${String(err)}`);
        assert.match(err.message, /--since/);
        assert.ok(err.message.includes(JSON.stringify(bad)), err.message);
        assert.match(err.message, /unix seconds.*ISO-8601.*30s, 10m, 2h, 1d/);
        return true;
      },
    );
  }
  assert.throws(() => parseSince('soon', now, '--after'), /--after/);
});
