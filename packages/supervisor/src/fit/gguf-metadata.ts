/**
 * The scalar metadata of a GGUF file's header (architecture, layer count, embedding width,
 * heads, context length...), read with async I/O and without the tensors. Array values (the
 * tokenizer's vocabulary) are skipped, only their length kept under `<key>.length`. Used to
 * estimate what a model needs before its host loads it.
 */
import { open } from 'node:fs/promises';

export type GgufScalar = number | bigint | boolean | string;

export interface GgufMetadata {
  version: number;
  tensorCount: number;
  values: Map<string, GgufScalar>;
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const SIZES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;
/** Headers larger than this are refused (a real one with a 256k vocabulary is a few MiB). */
const MAX_HEADER_BYTES = 256 << 20;

class NeedMore extends Error {}

class Cursor {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  need(n: number): number {
    if (this.pos + n > this.buf.length) throw new NeedMore();
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u32(): number {
    return this.buf.readUInt32LE(this.need(4));
  }
  u64(): number {
    const v = this.buf.readBigUInt64LE(this.need(8));
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('a GGUF length does not fit in 53 bits');
    return Number(v);
  }
  str(): string {
    const n = this.u64();
    const at = this.need(n);
    return this.buf.toString('utf8', at, at + n);
  }
  skipStr(): void {
    this.need(this.u64());
  }
  scalar(type: number): GgufScalar {
    if (type === STRING) return this.str();
    const size = SIZES[type];
    if (size === undefined) throw new Error(`unknown GGUF value type ${type}`);
    const at = this.need(size);
    switch (type) {
      case 0: return this.buf.readUInt8(at);
      case 1: return this.buf.readInt8(at);
      case 2: return this.buf.readUInt16LE(at);
      case 3: return this.buf.readInt16LE(at);
      case 4: return this.buf.readUInt32LE(at);
      case 5: return this.buf.readInt32LE(at);
      case 6: return this.buf.readFloatLE(at);
      case 7: return this.buf.readUInt8(at) !== 0;
      case 10: return this.buf.readBigUInt64LE(at);
      case 11: return this.buf.readBigInt64LE(at);
      default: return this.buf.readDoubleLE(at);
    }
  }
  /** Skips an array's items; returns its length. */
  skipArray(): number {
    const itemType = this.u32();
    const n = this.u64();
    if (itemType === STRING) for (let i = 0; i < n; i++) this.skipStr();
    else if (itemType === ARRAY) for (let i = 0; i < n; i++) this.skipArray();
    else {
      const size = SIZES[itemType];
      if (size === undefined) throw new Error(`unknown GGUF array item type ${itemType}`);
      this.need(n * size);
    }
    return n;
  }
}

function parse(buf: Buffer): GgufMetadata {
  const c = new Cursor(buf);
  if (c.u32() !== MAGIC) throw new Error('not a GGUF file (no GGUF magic)');
  const version = c.u32();
  if (version !== 2 && version !== 3) throw new Error(`unsupported GGUF version ${version}`);
  const tensorCount = c.u64();
  const kvCount = c.u64();
  const values = new Map<string, GgufScalar>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.str();
    const type = c.u32();
    if (type === ARRAY) values.set(`${key}.length`, c.skipArray());
    else values.set(key, c.scalar(type));
  }
  return { version, tensorCount, values };
}

/** Reads the header of `path`, 4 MiB first and more while the metadata runs past what was read. */
export async function readGgufMetadata(path: string): Promise<GgufMetadata> {
  const file = await open(path, 'r');
  try {
    const size = (await file.stat()).size;
    let length = Math.min(size, 4 << 20);
    for (;;) {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await file.read(buf, 0, length, 0);
      try {
        return parse(buf.subarray(0, bytesRead));
      } catch (err) {
        if (!(err instanceof NeedMore)) throw err;
        if (bytesRead >= size || length >= MAX_HEADER_BYTES) throw new Error('the GGUF header is truncated');
        length = Math.min(size, length * 4, MAX_HEADER_BYTES);
      }
    }
  } finally {
    await file.close();
  }
}
