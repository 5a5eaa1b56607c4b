/** The bench's scenario flags (scripts/bench/options.ts): what runs by default, alone, and what excludes what. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseOptions } from '../../../scripts/bench/options.js';

test('the default run has the shared-prefix and repeated-prompts scenarios and not the two heavy ones', () => {
  const o = parseOptions([]);
  assert.deepEqual([o.sharedPrefixRow, o.repeatRow, o.mixedRow, o.multiModelRow, o.scenariosOnly], [true, true, false, false, false]);
  assert.equal(parseOptions(['--no-repeat-row']).repeatRow, false);
});

test('--mixed-row and --multi-model-row add the opt-in scenarios; --no-shared-prefix-row drops the default one', () => {
  const o = parseOptions(['--mixed-row', '--multi-model-row', '--no-shared-prefix-row']);
  assert.deepEqual([o.sharedPrefixRow, o.mixedRow, o.multiModelRow, o.scenariosOnly], [false, true, true, false]);
});

test('the --X-only flags run the named scenarios and nothing else, and combine', () => {
  const o = parseOptions(['--mixed-only', '--multi-model-only']);
  assert.deepEqual([o.sharedPrefixRow, o.repeatRow, o.mixedRow, o.multiModelRow, o.scenariosOnly], [false, false, true, true, true]);
  const r = parseOptions(['--repeat-only']);
  assert.deepEqual([r.sharedPrefixRow, r.repeatRow, r.mixedRow, r.multiModelRow, r.scenariosOnly], [false, true, false, false, true]);
  assert.deepEqual([o.bareRow, o.grammarRow, o.natsRow, o.isolationRequests], [false, false, false, 0]);
});

test('a scenario-only run excludes the other focused runs and the in-process engine', () => {
  for (const other of ['--cost-only', '--grammar-only', '--nats-only', '--route-compare']) {
    assert.throws(() => parseOptions(['--shared-prefix-only', other]), /--shared-prefix-only/);
  }
  assert.throws(() => parseOptions(['--multi-model-only', '--ours', 'engine']), /--ours http/);
});

test('the other focused runs and --ours engine run no scenario', () => {
  for (const argv of [['--cost-only'], ['--grammar-only'], ['--nats-only'], ['--route-compare'], ['--ours', 'engine', '--mixed-row']]) {
    const o = parseOptions(argv);
    assert.deepEqual([o.sharedPrefixRow, o.repeatRow, o.mixedRow, o.multiModelRow], [false, false, false, false], argv.join(' '));
  }
});

test('every level has at least --min-requests requests (8 by default, none in --quick unless given)', () => {
  assert.equal(parseOptions([]).minRequests, 8);
  assert.equal(parseOptions(['--min-requests', '20']).minRequests, 20);
  assert.equal(parseOptions(['--quick']).minRequests, 0);
  assert.equal(parseOptions(['--quick', '--min-requests', '4']).minRequests, 4);
  assert.throws(() => parseOptions(['--min-requests', 'x']), /--min-requests/);
});

test('--keep-alive keeps the main table\'s connections between requests (default: a new one per request)', () => {
  assert.equal(parseOptions([]).keepAlive, false);
  assert.equal(parseOptions(['--keep-alive']).keepAlive, true);
});

test('--stream off sends one JSON answer per request on both sides; it needs the service and excludes --route-compare', () => {
  assert.equal(parseOptions([]).stream, true);
  assert.equal(parseOptions(['--stream', 'off']).stream, false);
  assert.equal(parseOptions(['--stream', 'on']).stream, true);
  assert.throws(() => parseOptions(['--stream', 'no']), /--stream must be on or off/);
  assert.throws(() => parseOptions(['--stream', 'off', '--ours', 'engine']), /--stream off needs --ours http/);
  assert.throws(() => parseOptions(['--stream', 'off', '--route-compare']), /excludes --route-compare/);
});
