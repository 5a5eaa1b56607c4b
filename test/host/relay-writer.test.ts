import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { DEFAULT_RELAY_INTERVAL_MS, RelayWriter, eventInterval, relayIntervalMs } from '@lmserve/host';
import { NATS_STREAM_INTERVAL_MS, natsStreamIntervalMs } from '@lmserve/nats';
import { FrameDecoder, type GenerationEvent } from '@lmserve/protocol';

function writer(coalesceMs: number) {
  const output = new PassThrough();
  const frames: GenerationEvent[][] = [];
  const decoder = new FrameDecoder((events) => frames.push(events));
  output.on('data', (chunk: Buffer) => decoder.push(chunk));
  const ended: string[][] = [];
  const relay = new RelayWriter({ output, coalesceMs, onEnded: (ids) => ended.push(ids) });
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return { relay, frames, ended, settle };
}

const done = (id: string): Extract<GenerationEvent, { type: 'done' }> => ({
  type: 'done',
  id,
  finishReason: 'length',
  usage: { tokensIn: 1, tokensOut: 3, cachedTokens: 0 },
  timings: { queueMs: 0, ttftMs: 1, prefillMs: 1, decodeMs: 1, totalMs: 2, prefillTps: 0, decodeTps: 0 },
});

test('a first token leaves with its step; later steps within the coalescing window are merged', async () => {
  const { relay, frames, settle } = writer(10_000);
  relay.tokens('a', 'He', [1], undefined, true);
  relay.stepEnded();
  await settle();
  assert.equal(frames.length, 1, 'the first token is written at the end of its step');
  relay.tokens('a', 'll', [2], undefined, false);
  relay.stepEnded();
  relay.tokens('a', 'o', [3], undefined, false);
  relay.stepEnded();
  await settle();
  assert.equal(frames.length, 1, 'further tokens wait for the window');
  relay.flush();
  await settle();
  assert.equal(frames.length, 2);
  assert.deepEqual(frames[1], [{ type: 'tokens', id: 'a', text: 'llo', ids: [2, 3] }], 'two steps of one request are one record');
});

test('a request\'s end is written at once, after its tokens, and reported as ended', async () => {
  const { relay, frames, ended, settle } = writer(10_000);
  relay.tokens('a', 'x', [1], undefined, true);
  relay.tokens('b', 'y', [2], undefined, true);
  relay.stepEnded();
  relay.tokens('a', 'z', [3], undefined, false);
  relay.final(done('a'));
  relay.stepEnded();
  await settle();
  assert.equal(frames.length, 2);
  assert.deepEqual(frames[1]?.map((e) => `${e.type}:${e.id}`), ['tokens:a', 'done:a']);
  assert.deepEqual(ended, [['a']]);
});

test('with no window every step is its own frame', async () => {
  const { relay, frames, settle } = writer(0);
  for (let i = 0; i < 5; i++) {
    relay.tokens('a', String(i), [i], undefined, i === 0);
    relay.stepEnded();
  }
  await settle();
  assert.deepEqual(frames.map((f) => (f[0]?.type === 'tokens' ? f[0].text : '')), ['0', '1', '2', '3', '4']);
});

test('the coalescing timer writes what waits without another step', async () => {
  const { relay, frames } = writer(20);
  relay.tokens('a', 'first', [1], undefined, true);
  relay.stepEnded();
  relay.tokens('a', 'second', [2], undefined, false);
  relay.stepEnded();
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(frames.length, 2, 'the timer flushed the second step');
  await relay.close();
});

test('LMSERVE_RELAY_INTERVAL_MS: 20 ms unless set to a number of milliseconds from 0 to 1000', () => {
  assert.equal(DEFAULT_RELAY_INTERVAL_MS, 20);
  assert.equal(relayIntervalMs({}), 20);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: '' }), 20);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: '0' }), 0);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: '7.6' }), 8);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: '1000' }), 1000);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: '1001' }), 20);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: '-1' }), 20);
  assert.equal(relayIntervalMs({ LMSERVE_RELAY_INTERVAL_MS: 'soon' }), 20);
});

test("a request's own interval (a whole number of 0 to 1000 ms) replaces the host's; NATS asks for 50 ms", () => {
  assert.equal(eventInterval(undefined, 20), 20);
  assert.equal(eventInterval(50, 20), 50);
  assert.equal(eventInterval(0, 20), 0);
  assert.equal(eventInterval(1000, 20), 1000);
  for (const bad of [-1, 1001, 2.5, Number.NaN]) assert.equal(eventInterval(bad, 20), 20, String(bad));
  assert.equal(NATS_STREAM_INTERVAL_MS, 50);
  assert.equal(natsStreamIntervalMs({}), 50);
  assert.equal(natsStreamIntervalMs({ LMSERVE_NATS_STREAM_INTERVAL_MS: ' ' }), 50);
  assert.equal(natsStreamIntervalMs({ LMSERVE_NATS_STREAM_INTERVAL_MS: '0' }), 0);
  assert.equal(natsStreamIntervalMs({ LMSERVE_NATS_STREAM_INTERVAL_MS: '20' }), 20);
  assert.equal(natsStreamIntervalMs({ LMSERVE_NATS_STREAM_INTERVAL_MS: '1001' }), 50);
  assert.equal(natsStreamIntervalMs({ LMSERVE_NATS_STREAM_INTERVAL_MS: '7.5' }), 50);
});
