import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventOutbox } from '@lmserve/host';
import type { GenerationEvent } from '@lmserve/protocol';

const tokens = (id: string, text: string): GenerationEvent => ({ type: 'tokens', id, text, ids: [1] });

test('events pushed in one event-loop turn leave as one batch, in order', async () => {
  const batches: GenerationEvent[][] = [];
  const outbox = new EventOutbox((events) => batches.push(events));
  outbox.push(tokens('a', '1'));
  outbox.push(tokens('b', '2'));
  outbox.push(tokens('a', '3'));
  assert.equal(batches.length, 0, 'nothing is sent synchronously');
  await new Promise((r) => setImmediate(r));
  assert.equal(batches.length, 1);
  assert.deepEqual(batches[0]?.map((e) => (e.type === 'tokens' ? e.text : '')), ['1', '2', '3']);
  outbox.push(tokens('a', '4'));
  await new Promise((r) => setImmediate(r));
  assert.equal(batches.length, 2, 'a later turn is a new batch');
});

test('flush sends at once, and an empty outbox sends nothing', async () => {
  const batches: GenerationEvent[][] = [];
  const outbox = new EventOutbox((events) => batches.push(events));
  outbox.flush();
  assert.equal(batches.length, 0);
  outbox.push(tokens('a', 'x'));
  outbox.flush();
  assert.equal(batches.length, 1);
  await new Promise((r) => setImmediate(r));
  assert.equal(batches.length, 1, 'the scheduled flush finds nothing left');
});
