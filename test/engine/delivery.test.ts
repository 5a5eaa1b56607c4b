/**
 * How a request's output leaves the engine (submitTo's `delivery`): `events` (a tokens event per
 * step), `final` (no event per step; done carries the text) and `direct` (the decode thread
 * writes each step to a connection as an HTTP/1.1 chunk from a template; done carries the text
 * and whatever the connection had not taken).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { join } from 'node:path';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Delivery, type DirectOutput, type Engine, type Model, type NativeEvent } from '@lmserve/engine';
import type { GenerationParams } from '@lmserve/protocol';
import { modelPath, tempDir } from '../helpers.js';

type Done = Extract<NativeEvent, { type: 'done' }>;

interface Outcome {
  tokens: Extract<NativeEvent, { type: 'tokens' }>[];
  end: Done | Extract<NativeEvent, { type: 'error' }>;
}

function run(
  engine: Engine,
  prompt: string,
  params: GenerationParams,
  delivery: Delivery,
  direct?: DirectOutput,
  extra: { eventIntervalMs?: number; onTokens?: (n: number, cancel: () => void) => void } = {},
): Promise<Outcome & { times: number[] }> {
  return new Promise((resolve, reject) => {
    const tokens: Outcome['tokens'] = [];
    const times: number[] = [];
    let cancel = () => {};
    cancel = engine.submitTo(
      {
        handle: (event) => {
          if (event.type === 'tokens') {
            tokens.push(event);
            times.push(performance.now());
            extra.onTokens?.(tokens.reduce((n, t) => n + t.tokens.length, 0), () => cancel());
          } else resolve({ tokens, end: event, times });
        },
        fail: reject,
      },
      { prompt, params, delivery, ...(direct ? { direct } : {}), ...(extra.eventIntervalMs !== undefined ? { eventIntervalMs: extra.eventIntervalMs } : {}) },
    );
  });
}

/** The payloads of HTTP/1.1 chunks (`<hex size>\r\n<payload>\r\n`), checking the framing. */
function chunks(bytes: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < bytes.length) {
    const eol = bytes.indexOf('\r\n', at);
    assert.ok(eol > at, `a chunk size line at byte ${at}`);
    const size = Number.parseInt(bytes.toString('latin1', at, eol), 16);
    assert.ok(Number.isInteger(size) && size > 0, `chunk size ${bytes.toString('latin1', at, eol)}`);
    const start = eol + 2;
    out.push(bytes.toString('utf8', start, start + size));
    assert.equal(bytes.toString('latin1', start + size, start + size + 2), '\r\n', 'a chunk ends with CRLF');
    at = start + size + 2;
  }
  return out;
}

/** A connected pair over a Unix socket: `server` is the side the engine writes to. */
async function socketPair(dir: string, name: string): Promise<{ server: Socket; client: Socket; listener: Server; fd: number }> {
  const path = join(dir, name);
  const listener = createServer();
  listener.listen(path);
  await once(listener, 'listening');
  const accepted = once(listener, 'connection');
  const client = connect(path);
  const [server] = (await accepted) as [Socket];
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return { server, client, listener, fd };
}

/** Everything the client side receives until the other side closes. */
function readToEnd(client: Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  client.on('data', (b: Buffer) => parts.push(b));
  client.resume();
  return new Promise((resolve, reject) => {
    client.once('end', () => resolve(Buffer.concat(parts)));
    client.once('error', reject);
  });
}

const PAD = 64 * 1024;
const TEMPLATE = { prefix: 'data: {"text":', afterText: ',"ids":[', afterTokens: ']}\n\n' };

/** One payload of TEMPLATE: its text and ids (the JSON text as JSON.stringify writes it). */
function parsePayload(payload: string): { text: string; ids: number[] } {
  assert.ok(payload.startsWith('data: ') && payload.endsWith('\n\n'), JSON.stringify(payload));
  const body = payload.slice('data: '.length, -2);
  const data = JSON.parse(body) as { text: string; ids: number[] };
  // Escaping as JSON.stringify does it (lower-case \u00xx, nothing else escaped), and any
  // ill-formed UTF-8 already replaced the way V8 decodes it.
  assert.equal(body, JSON.stringify(data));
  return data;
}

describe('output delivery', () => {
  let model: Model;
  let engine: Engine;
  const dir = tempDir('lmserve-delivery-');
  before(async () => {
    // tiny: random weights, a byte-level vocabulary: its output is full of ill-formed UTF-8.
    model = await loadModel(await modelPath('tiny'));
    engine = await model.createEngine({ slots: 4, contextSize: 512, threads: 1 });
  });
  after(() => {
    engine.dispose();
    model.dispose();
    dir.cleanup();
  });

  test('events, final and direct give the same text; final and direct send no event per step', async () => {
    const params: GenerationParams = { maxTokens: 48, temperature: 0, ignoreEos: true };
    const events = await run(engine, 'Once upon a time', params, 'events');
    const final = await run(engine, 'Once upon a time', params, 'final');
    const pair = await socketPair(dir.path, 'a.sock');
    const reading = readToEnd(pair.client);
    const direct = await run(engine, 'Once upon a time', params, 'direct', { fd: pair.fd, ...TEMPLATE, skipEmpty: false });
    pair.server.destroy();
    const bytes = await reading;
    pair.listener.close();

    assert.equal(events.end.type, 'done');
    const text = events.tokens.map((t) => t.text).join('');
    assert.ok(text.length > 0);
    assert.equal(final.tokens.length, 0);
    assert.equal(direct.tokens.length, 0);
    assert.equal(final.end.type === 'done' && final.end.text, text);
    assert.equal(direct.end.type === 'done' && direct.end.text, text);
    assert.equal(direct.end.type === 'done' && direct.end.tail, undefined, 'an idle reader takes everything');
    assert.ok(bytes.length > 0, 'the engine wrote to the connection');
    const payloads = chunks(bytes).map(parsePayload);
    assert.equal(payloads.map((p) => p.text).join(''), text);
    assert.deepEqual(payloads.flatMap((p) => p.ids), events.tokens.flatMap((t) => t.tokens));
    assert.equal(payloads.flatMap((p) => p.ids).length, 48);
  });

  test('ill-formed UTF-8 is replaced as V8 decodes it (U+FFFD per maximal subpart)', async () => {
    const bpe = await loadModel(await modelPath('tiny-bpe'));
    const bpeEngine = await bpe.createEngine({ slots: 2, contextSize: 256, threads: 1 });
    try {
      let replaced = 0;
      for (let seed = 1; seed <= 10; seed++) {
        const params: GenerationParams = { maxTokens: 64, temperature: 1.5, seed, ignoreEos: true };
        const final = await run(bpeEngine, 'Once upon a time', params, 'final');
        const pair = await socketPair(dir.path, `u${seed}.sock`);
        const reading = readToEnd(pair.client);
        const direct = await run(bpeEngine, 'Once upon a time', params, 'direct', { fd: pair.fd, ...TEMPLATE, skipEmpty: false });
        pair.server.destroy();
        const bytes = await reading;
        pair.listener.close();
        const text = final.end.type === 'done' ? (final.end.text ?? '') : '';
        assert.equal(direct.end.type === 'done' && direct.end.text, text);
        assert.equal(chunks(bytes).map(parsePayload).map((p) => p.text).join(''), text, `seed ${seed}`);
        if (text.includes('\uFFFD')) replaced++;
      }
      assert.ok(replaced > 0, 'some outputs had ill-formed UTF-8 (else this test checks nothing about it)');
    } finally {
      bpeEngine.dispose();
      bpe.dispose();
    }
  });

  test('skipEmpty: steps whose text is held back write nothing, and nothing is lost', async () => {
    const pair = await socketPair(dir.path, 'b.sock');
    const reading = readToEnd(pair.client);
    // A stop string that never completes holds back every text ending in its first character.
    const done = await run(engine, 'The', { maxTokens: 40, temperature: 1, seed: 3, ignoreEos: true, stop: ['e\u0001\u0002'] }, 'direct', {
      fd: pair.fd,
      prefix: '{"t":',
      afterText: '}\n',
      skipEmpty: true,
    });
    pair.server.destroy();
    const bytes = await reading;
    pair.listener.close();
    assert.equal(done.end.type, 'done');
    const payloads = chunks(bytes);
    for (const p of payloads) assert.notEqual((JSON.parse(p) as { t: string }).t, '', 'no empty chunk');
    assert.equal(payloads.map((p) => (JSON.parse(p) as { t: string }).t).join(''), done.end.type === 'done' ? (done.end.text ?? '') : '');
  });

  test('a connection that takes nothing: the rest comes back in done.tail, in order', async () => {
    const pair = await socketPair(dir.path, 'c.sock');
    pair.client.pause();
    // 64 KiB a chunk and a chunk per step: a few steps are more than a Unix socket buffers.
    const big = { fd: pair.fd, prefix: `${'x'.repeat(PAD)}{"text":`, afterText: ',"ids":[', afterTokens: ']}\n', skipEmpty: false, coalesceMs: 0 };
    const result = await run(engine, 'Hello', { maxTokens: 96, temperature: 0, ignoreEos: true }, 'direct', big);
    assert.equal(result.end.type, 'done');
    const done = result.end as Done;
    assert.ok(done.tail && done.tail.length > 0, 'the socket did not take everything');
    const reading = readToEnd(pair.client);
    pair.server.destroy();
    const written = await reading;
    pair.client.destroy();
    pair.listener.close();
    const payloads = chunks(Buffer.concat([written, Buffer.from(done.tail, 'utf8')]));
    const ids = payloads.flatMap((p) => (JSON.parse(p.slice(PAD)) as { ids: number[] }).ids);
    assert.equal(ids.length, 96);
    assert.equal(payloads.map((p) => (JSON.parse(p.slice(PAD)) as { text: string }).text).join(''), done.text ?? '');
  });

  test('a connection closed by the client: generation ends normally, nothing left to write', async () => {
    const pair = await socketPair(dir.path, 'd.sock');
    pair.client.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const result = await run(engine, 'Hi', { maxTokens: 24, ignoreEos: true, seed: 1 }, 'direct', { fd: pair.fd, ...TEMPLATE, skipEmpty: false });
    pair.server.destroy();
    pair.listener.close();
    assert.equal(result.end.type, 'done');
    assert.equal((result.end as Done).usage.tokensOut, 24);
    assert.equal((result.end as Done).tail, undefined);
  });

  test('eventIntervalMs: the first tokens at once, then fewer events, the same tokens, text and log-probabilities', async () => {
    const params: GenerationParams = { maxTokens: 400, temperature: 0.7, seed: 5, ignoreEos: true, logprobs: 2 };
    const every = await run(engine, 'Held tokens', params, 'events');
    const started = performance.now();
    const held = await run(engine, 'Held tokens', params, 'events', undefined, { eventIntervalMs: 40 });
    assert.equal(every.end.type, 'done');
    assert.equal(held.end.type, 'done');
    assert.equal(every.tokens.length, 400, 'without an interval: an event per step');
    assert.equal(held.tokens[0]!.tokens.length, 1, 'the first token leaves alone, at once');
    assert.ok(held.tokens.length < 400 / 4, `${held.tokens.length} events for 400 tokens`);
    // No two events (after the first, before the last: the end lets the rest go at once) closer
    // than the interval, bar the clocks' rounding.
    assert.ok(held.times.length >= 4, `${held.times.length} events`);
    for (let i = 2; i < held.times.length - 1; i++) assert.ok(held.times[i]! - held.times[i - 1]! >= 30, `events ${i - 1} and ${i}`);
    assert.deepEqual(held.tokens.flatMap((t) => t.tokens), every.tokens.flatMap((t) => t.tokens));
    assert.equal(held.tokens.map((t) => t.text).join(''), every.tokens.map((t) => t.text).join(''));
    const lp = (o: Outcome) => o.tokens.flatMap((t) => t.logprobs ?? []);
    assert.equal(lp(held).length, 400);
    assert.deepEqual(lp(held), lp(every));
    assert.ok(performance.now() - started < 30_000);
  });

  test('eventIntervalMs: held tokens leave before the end, also when cancelled', async () => {
    const params: GenerationParams = { maxTokens: 100000, temperature: 0.7, seed: 6, ignoreEos: true };
    const cancelled = await run(engine, 'Cancel me', params, 'events', undefined, {
      eventIntervalMs: 1000,
      onTokens: (n, cancel) => n >= 1 && setTimeout(cancel, 150),
    });
    assert.equal(cancelled.end.type, 'done');
    const done = cancelled.end as Done;
    assert.equal(done.finishReason, 'cancelled');
    assert.ok(done.usage.tokensOut > 2, `${done.usage.tokensOut} tokens`);
    assert.equal(cancelled.tokens.length, 2, 'the first token, then the held rest at the end');
    assert.equal(cancelled.tokens.reduce((n, t) => n + t.tokens.length, 0), done.usage.tokensOut);
    assert.throws(
      () => engine.submitTo({ handle: () => undefined, fail: () => undefined }, { prompt: 'x', eventIntervalMs: -1 }),
      (err: { code?: string; field?: string }) => err.code === 'INVALID_REQUEST' && err.field === 'eventIntervalMs',
    );
  });

  test('eventIntervalMs: held streams started apart fall into one rhythm (their events leave in the same steps)', async () => {
    const params: GenerationParams = { maxTokens: 400, temperature: 0.7, seed: 8, ignoreEos: true };
    const first = run(engine, 'Rhythm one', params, 'events', undefined, { eventIntervalMs: 20 });
    // The second starts about half an interval later: out of phase, were each held on its own clock.
    await new Promise((resolve) => setTimeout(resolve, 10));
    const second = await run(engine, 'Rhythm two', params, 'events', undefined, { eventIntervalMs: 20 });
    const one = await first;
    assert.equal(one.end.type, 'done');
    assert.equal(second.end.type, 'done');
    assert.equal(second.tokens.reduce((n, t) => n + t.tokens.length, 0), 400);
    // The second's events after its first and before the end of either: each within a millisecond
    // of one of the first's (the same step's callback), bar the step where they fell in line.
    const until = Math.min(one.times.at(-1)!, second.times.at(-1)!);
    const middle = second.times.slice(1).filter((t) => t < until);
    assert.ok(middle.length >= 4, `${middle.length} events to compare (${one.times.length} and ${second.times.length} events over ${(until - one.times[0]!).toFixed(0)} ms)`);
    const together = middle.filter((t) => one.times.some((u) => Math.abs(u - t) < 1)).length;
    assert.ok(together >= middle.length - 2, `${together} of ${middle.length} of the second's events left with the first's`);
  });

  test('a bad delivery option is refused with the field named', () => {
    assert.throws(
      () => engine.submitTo({ handle: () => undefined, fail: () => undefined }, { prompt: 'x', delivery: 'direct' }),
      (err: { code?: string; field?: string }) => err.code === 'INVALID_REQUEST' && err.field === 'direct',
    );
    assert.throws(
      () => engine.submitTo({ handle: () => undefined, fail: () => undefined }, { prompt: 'x', delivery: 'sideways' as Delivery }),
      (err: { code?: string; field?: string }) => err.code === 'INVALID_REQUEST' && err.field === 'delivery',
    );
    assert.throws(
      () => engine.submitTo({ handle: () => undefined, fail: () => undefined }, { prompt: 'x', delivery: 'direct', direct: { fd: 1, prefix: 'a' } as DirectOutput }),
      (err: { code?: string; field?: string }) => err.code === 'INVALID_REQUEST' && err.field === 'direct.afterText',
    );
  });
});
