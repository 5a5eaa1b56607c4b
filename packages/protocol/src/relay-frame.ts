/**
 * The token relay's wire format: generation events from a replica thread straight to the
 * supervisor over a pipe of their own (one per replica, an extra stdio fd of the host process),
 * so a decode step crosses one hop, is copied once and costs no JSON on the hot path.
 *
 * A frame is `u32 payload bytes` (little endian) then records, each:
 *   u8 kind, u16 id bytes, id (UTF-8), then by kind:
 *     1 TOKENS           u32 n, n × i32 token ids, u32 text bytes, text (UTF-8)
 *     2 TOKENS_LOGPROBS  as TOKENS, then u32 JSON bytes, JSON of TokenLogprob[]
 *     3 EVENT            u32 JSON bytes, JSON of the whole event (done, error: once per request)
 * One frame is one flush of the replica (one decode step, or a few coalesced ones).
 */
import type { GenerationEvent } from './messages.js';
import type { TokenLogprob } from './generation.js';

const TOKENS = 1;
const TOKENS_LOGPROBS = 2;
const EVENT = 3;

/** The largest frame a decoder accepts: a corrupt length must not make it buffer forever. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** Encodes a batch of events as one frame. */
export function encodeFrame(events: readonly GenerationEvent[]): Buffer {
  // Strings are measured once and written after the size is known (one allocation per frame).
  const parts: Array<{ kind: number; id: string; idBytes: number; a: string; aBytes: number; b: string; bBytes: number; ids: readonly number[] }> = [];
  let size = 4;
  for (const event of events) {
    const idBytes = Buffer.byteLength(event.id);
    if (event.type === 'tokens') {
      const textBytes = Buffer.byteLength(event.text);
      const json = event.logprobs ? JSON.stringify(event.logprobs) : '';
      const jsonBytes = event.logprobs ? Buffer.byteLength(json) : 0;
      const kind = event.logprobs ? TOKENS_LOGPROBS : TOKENS;
      size += 1 + 2 + idBytes + 4 + 4 * event.ids.length + 4 + textBytes + (kind === TOKENS_LOGPROBS ? 4 + jsonBytes : 0);
      parts.push({ kind, id: event.id, idBytes, a: event.text, aBytes: textBytes, b: json, bBytes: jsonBytes, ids: event.ids });
    } else {
      const json = JSON.stringify(event);
      const jsonBytes = Buffer.byteLength(json);
      size += 1 + 2 + idBytes + 4 + jsonBytes;
      parts.push({ kind: EVENT, id: event.id, idBytes, a: json, aBytes: jsonBytes, b: '', bBytes: 0, ids: [] });
    }
  }
  const frame = Buffer.allocUnsafe(size);
  let at = frame.writeUInt32LE(size - 4, 0);
  for (const p of parts) {
    at = frame.writeUInt8(p.kind, at);
    at = frame.writeUInt16LE(p.idBytes, at);
    at += frame.write(p.id, at, 'utf8');
    if (p.kind === EVENT) {
      at = frame.writeUInt32LE(p.aBytes, at);
      at += frame.write(p.a, at, 'utf8');
      continue;
    }
    at = frame.writeUInt32LE(p.ids.length, at);
    for (const id of p.ids) at = frame.writeInt32LE(id, at);
    at = frame.writeUInt32LE(p.aBytes, at);
    at += frame.write(p.a, at, 'utf8');
    if (p.kind === TOKENS_LOGPROBS) {
      at = frame.writeUInt32LE(p.bBytes, at);
      at += frame.write(p.b, at, 'utf8');
    }
  }
  return frame;
}

/** Decodes one frame's payload (without its length prefix). Throws on a malformed payload. */
export function decodeFrame(payload: Buffer): GenerationEvent[] {
  const events: GenerationEvent[] = [];
  let at = 0;
  const need = (n: number) => {
    if (at + n > payload.length) throw new Error(`relay frame truncated at byte ${at} (needs ${n} more of ${payload.length})`);
  };
  while (at < payload.length) {
    need(3);
    const kind = payload.readUInt8(at);
    const idBytes = payload.readUInt16LE(at + 1);
    at += 3;
    need(idBytes);
    const id = payload.toString('utf8', at, at + idBytes);
    at += idBytes;
    if (kind === EVENT) {
      need(4);
      const n = payload.readUInt32LE(at);
      at += 4;
      need(n);
      events.push(JSON.parse(payload.toString('utf8', at, at + n)) as GenerationEvent);
      at += n;
      continue;
    }
    if (kind !== TOKENS && kind !== TOKENS_LOGPROBS) throw new Error(`relay frame has an unknown record kind ${kind}`);
    need(4);
    const count = payload.readUInt32LE(at);
    at += 4;
    need(4 * count + 4);
    const ids = new Array<number>(count);
    for (let i = 0; i < count; i++, at += 4) ids[i] = payload.readInt32LE(at);
    const textBytes = payload.readUInt32LE(at);
    at += 4;
    need(textBytes);
    const text = payload.toString('utf8', at, at + textBytes);
    at += textBytes;
    if (kind === TOKENS) {
      events.push({ type: 'tokens', id, text, ids });
      continue;
    }
    need(4);
    const n = payload.readUInt32LE(at);
    at += 4;
    need(n);
    const logprobs = JSON.parse(payload.toString('utf8', at, at + n)) as TokenLogprob[];
    at += n;
    events.push({ type: 'tokens', id, text, ids, logprobs });
  }
  return events;
}

/**
 * Cuts a byte stream into frames and decodes them. Chunks from a pipe may split a frame or hold
 * several; the common case (one whole frame per chunk) decodes without copying.
 */
export class FrameDecoder {
  readonly #onEvents: (events: GenerationEvent[]) => void;
  #buffered: Buffer[] = [];
  #bufferedBytes = 0;

  constructor(onEvents: (events: GenerationEvent[]) => void) {
    this.#onEvents = onEvents;
  }

  /** Feeds bytes; decodes every whole frame. Throws on a malformed frame (the stream is then unusable). */
  push(chunk: Buffer): void {
    let data = chunk;
    if (this.#bufferedBytes > 0) {
      this.#buffered.push(chunk);
      data = Buffer.concat(this.#buffered, this.#bufferedBytes + chunk.length);
      this.#buffered = [];
      this.#bufferedBytes = 0;
    }
    let at = 0;
    while (data.length - at >= 4) {
      const length = data.readUInt32LE(at);
      if (length > MAX_FRAME_BYTES) throw new Error(`relay frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
      if (data.length - at - 4 < length) break;
      const payload = data.subarray(at + 4, at + 4 + length);
      at += 4 + length;
      this.#onEvents(decodeFrame(payload));
    }
    if (at < data.length) {
      const rest = data.subarray(at);
      this.#buffered.push(rest);
      this.#bufferedBytes = rest.length;
    }
  }

  /** Bytes of an incomplete frame still waiting for the rest. */
  get pendingBytes(): number {
    return this.#bufferedBytes;
  }
}
