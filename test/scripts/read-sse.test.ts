/** The tests' SSE reader (scripts/lib/service-harness.ts): events split only where SSE splits lines. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readSse } from '../../scripts/lib/service-harness.js';

async function* chunks(text: string, size: number): AsyncGenerator<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  for (let i = 0; i < bytes.length; i += size) yield bytes.slice(i, i + size);
}

test('token text with U+2028, U+2029 and escaped line breaks stays one data line, across any chunking', async () => {
  // A random model's token held U+2028: a regex's `.` stopped there and the JSON was cut (a CI failure).
  const texts = ['a\u2028b', 'c\u2029d', 'e\r\nf', 'é😀'];
  const body = texts.map((text, i) => `event: token\ndata: ${JSON.stringify({ i, text })}\n\n`).join('') + 'event: done\ndata: {"ok":true}\n\n';
  for (const size of [1, 3, 7, 4096]) {
    const events = [];
    for await (const e of readSse(chunks(body, size))) events.push(e);
    assert.deepEqual(events.map((e) => e.event), ['token', 'token', 'token', 'token', 'done']);
    assert.deepEqual(events.slice(0, 4).map((e) => e.data.text), texts);
    assert.deepEqual(events[4]!.data, { ok: true });
  }
});
