import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameDecoder, MAX_FRAME_BYTES, decodeFrame, encodeFrame, type GenerationEvent } from '@lmserve/protocol';

const events: GenerationEvent[] = [
  { type: 'tokens', id: 'http-1', text: 'Hello', ids: [15043] },
  { type: 'tokens', id: 'nats-ü', text: ' wörld 🌍 \u0000 \n', ids: [1, 2, 2147483647, 0] },
  { type: 'tokens', id: 'http-1', text: '', ids: [] },
  {
    type: 'tokens',
    id: 'jobs-3',
    text: 'x',
    ids: [9],
    logprobs: [{ id: 9, text: 'x', bytes: [120], logprob: -0.25, top: [{ id: 9, text: 'x', bytes: [120], logprob: -0.25 }, { id: 4, text: '\ufffd', bytes: [0xe2], logprob: -1.5 }] }],
  },
  {
    type: 'done',
    id: 'http-1',
    finishReason: 'length',
    usage: { tokensIn: 3, tokensOut: 2, cachedTokens: 1 },
    timings: { queueMs: 1, ttftMs: 2, prefillMs: 1, decodeMs: 3, totalMs: 5, prefillTps: 2000, decodeTps: 333 },
  },
  { type: 'done', id: 'http-2', text: 'the whole text', finishReason: 'stop', stopString: '\n\n', usage: { tokensIn: 1, tokensOut: 4, cachedTokens: 0 }, timings: { queueMs: 0, ttftMs: 1, prefillMs: 1, decodeMs: 2, totalMs: 3, prefillTps: 0, decodeTps: 0 } },
  { type: 'error', id: 'nats-ü', code: 'CONTEXT_OVERFLOW', message: 'the prompt is too long' },
];

test('a frame carries every kind of event unchanged', () => {
  const frame = encodeFrame(events);
  assert.equal(frame.readUInt32LE(0), frame.length - 4, 'the length prefix counts the payload');
  assert.deepEqual(decodeFrame(frame.subarray(4)), events);
});

test('the decoder cuts a stream into frames at any chunk boundary', () => {
  const frames = [encodeFrame(events.slice(0, 2)), encodeFrame(events.slice(2, 5)), encodeFrame(events.slice(5))];
  const stream = Buffer.concat(frames);
  for (const step of [1, 2, 3, 7, 64, stream.length]) {
    const seen: GenerationEvent[][] = [];
    const decoder = new FrameDecoder((batch) => seen.push(batch));
    for (let at = 0; at < stream.length; at += step) decoder.push(stream.subarray(at, at + step));
    assert.equal(seen.length, 3, `chunks of ${step} bytes: one batch per frame`);
    assert.deepEqual(seen.flat(), events, `chunks of ${step} bytes`);
    assert.equal(decoder.pendingBytes, 0);
  }
});

test('a corrupt stream throws instead of buffering forever or inventing events', () => {
  const huge = Buffer.alloc(8);
  huge.writeUInt32LE(MAX_FRAME_BYTES + 1, 0);
  assert.throws(() => new FrameDecoder(() => undefined).push(huge), /exceeds/);
  const frame = encodeFrame([events[0]!]);
  const unknownKind = Buffer.from(frame);
  unknownKind.writeUInt8(9, 4);
  assert.throws(() => decodeFrame(unknownKind.subarray(4)), /unknown record kind 9/);
  const short = Buffer.from(frame.subarray(0, frame.length - 2));
  short.writeUInt32LE(short.length - 4, 0);
  assert.throws(() => decodeFrame(short.subarray(4)), /truncated/);
});
