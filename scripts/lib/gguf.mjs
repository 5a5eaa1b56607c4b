// Minimal GGUF v3 reader (metadata + tensor infos) and streaming writer. Dependency-free.
// Format reference: ggml/docs/gguf.md and gguf-py in llama.cpp (constants only; code is our own).
import { closeSync, openSync, readSync, writeSync } from 'node:fs';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_VERSION = 3;
export const DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types. */
export const T = Object.freeze({
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6,
  BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
});

/** ggml tensor types used here, with [block size, bytes per block]. */
export const GGML = Object.freeze({ F32: 0, F16: 1, Q8_0: 8 });
const BLOCK = { [GGML.F32]: [1, 4], [GGML.F16]: [1, 2], [GGML.Q8_0]: [32, 34] };

/** Scalar byte sizes and typed-array constructors for numeric value types. */
const SCALAR = {
  [T.UINT8]: [1, Uint8Array], [T.INT8]: [1, Int8Array], [T.UINT16]: [2, Uint16Array],
  [T.INT16]: [2, Int16Array], [T.UINT32]: [4, Uint32Array], [T.INT32]: [4, Int32Array],
  [T.FLOAT32]: [4, Float32Array], [T.BOOL]: [1, Uint8Array], [T.UINT64]: [8, BigUint64Array],
  [T.INT64]: [8, BigInt64Array], [T.FLOAT64]: [8, Float64Array],
};

/**
 * A metadata value: scalar `{type, value}` or array `{type: T.ARRAY, itemType, value}`.
 * Numeric arrays are typed arrays; strings are JS strings (or Uint8Array if not valid UTF-8).
 * @typedef {{type: number, value: any, itemType?: number}} GGUFValue
 * @typedef {{name: string, dims: number[], type: number, offset: number}} GGUFTensorInfo
 */

/** @param {number} type @param {number[]} dims @returns {number} byte size of a tensor */
export function tensorBytes(type, dims) {
  const n = dims.reduce((a, b) => a * b, 1);
  const [bs, bb] = BLOCK[type] ?? [];
  if (!bs) throw new Error(`unsupported ggml type ${type}`);
  if (dims[0] % bs) throw new Error(`ne0=${dims[0]} not a multiple of block size ${bs}`);
  return (n / bs) * bb;
}

const align = (n, a) => Math.ceil(n / a) * a;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Buffered sequential reader over a file descriptor. */
class Cursor {
  constructor(fd) { this.fd = fd; this.buf = Buffer.alloc(0); this.base = 0; this.pos = 0; }
  need(n) {
    const rel = this.pos - this.base;
    if (rel + n <= this.buf.length) return rel;
    const size = Math.max(n, 1 << 20);
    const buf = Buffer.alloc(size);
    const got = readSync(this.fd, buf, 0, size, this.pos);
    if (got < n) throw new Error(`GGUF truncated at offset ${this.pos}`);
    this.buf = buf.subarray(0, got); this.base = this.pos;
    return 0;
  }
  u32() { const r = this.need(4); this.pos += 4; return this.buf.readUInt32LE(r); }
  u64() {
    const r = this.need(8); this.pos += 8;
    const v = this.buf.readBigUInt64LE(r);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('u64 too large');
    return Number(v);
  }
  bytes(n) { const r = this.need(n); this.pos += n; return this.buf.subarray(r, r + n); }
  str() {
    const b = this.bytes(this.u64());
    try { return utf8.decode(b); } catch { return Uint8Array.from(b); }
  }
  scalar(type) {
    if (type === T.STRING) return this.str();
    const [size] = SCALAR[type] ?? [];
    if (!size) throw new Error(`bad GGUF value type ${type}`);
    const b = this.bytes(size);
    switch (type) {
      case T.UINT8: return b.readUInt8(0);
      case T.INT8: return b.readInt8(0);
      case T.UINT16: return b.readUInt16LE(0);
      case T.INT16: return b.readInt16LE(0);
      case T.UINT32: return b.readUInt32LE(0);
      case T.INT32: return b.readInt32LE(0);
      case T.FLOAT32: return b.readFloatLE(0);
      case T.BOOL: return b.readUInt8(0) !== 0;
      case T.UINT64: return b.readBigUInt64LE(0);
      case T.INT64: return b.readBigInt64LE(0);
      default: return b.readDoubleLE(0);
    }
  }
  /** @returns {GGUFValue} */
  value(type) {
    if (type !== T.ARRAY) return { type, value: this.scalar(type) };
    const itemType = this.u32();
    const n = this.u64();
    if (itemType === T.STRING || itemType === T.ARRAY) {
      const value = new Array(n);
      for (let i = 0; i < n; i++) value[i] = itemType === T.STRING ? this.str() : this.value(T.ARRAY);
      return { type, itemType, value };
    }
    const [size, Ctor] = SCALAR[itemType] ?? [];
    if (!size) throw new Error(`bad GGUF array item type ${itemType}`);
    const src = this.bytes(n * size);
    const value = new Ctor(n);
    new Uint8Array(value.buffer).set(src); // little-endian host assumed (x86/arm)
    return { type, itemType, value };
  }
}

/**
 * Reads a GGUF file's header, metadata and tensor infos (not tensor data).
 * @param {string} path
 * @returns {{version: number, kv: Map<string, GGUFValue>, tensors: GGUFTensorInfo[], alignment: number, dataOffset: number}}
 */
export function readGGUF(path) {
  const fd = openSync(path, 'r');
  try {
    const c = new Cursor(fd);
    if (c.u32() !== GGUF_MAGIC) throw new Error(`${path}: not a GGUF file`);
    const version = c.u32();
    if (version !== 2 && version !== 3) throw new Error(`${path}: unsupported GGUF version ${version}`);
    const nTensors = c.u64();
    const nKv = c.u64();
    const kv = new Map();
    for (let i = 0; i < nKv; i++) {
      const key = c.str();
      kv.set(key, c.value(c.u32()));
    }
    const tensors = [];
    for (let i = 0; i < nTensors; i++) {
      const name = c.str();
      const nd = c.u32();
      const dims = [];
      for (let d = 0; d < nd; d++) dims.push(c.u64());
      tensors.push({ name, dims, type: c.u32(), offset: c.u64() });
    }
    const alignment = Number(kv.get('general.alignment')?.value ?? DEFAULT_ALIGNMENT);
    return { version, kv, tensors, alignment, dataOffset: align(c.pos, alignment) };
  } finally {
    closeSync(fd);
  }
}

/** Growable little-endian byte sink for the header. */
class Sink {
  constructor() { this.parts = []; this.length = 0; }
  push(b) { this.parts.push(b); this.length += b.length; }
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.push(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  str(s) { const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s); this.u64(b.length); this.push(b); }
  scalar(type, v) {
    if (type === T.STRING) return this.str(v);
    const [size] = SCALAR[type] ?? [];
    if (!size) throw new Error(`bad GGUF value type ${type}`);
    const b = Buffer.alloc(size);
    switch (type) {
      case T.UINT8: b.writeUInt8(v); break;
      case T.INT8: b.writeInt8(v); break;
      case T.UINT16: b.writeUInt16LE(v); break;
      case T.INT16: b.writeInt16LE(v); break;
      case T.UINT32: b.writeUInt32LE(v); break;
      case T.INT32: b.writeInt32LE(v); break;
      case T.FLOAT32: b.writeFloatLE(v); break;
      case T.BOOL: b.writeUInt8(v ? 1 : 0); break;
      case T.UINT64: b.writeBigUInt64LE(BigInt(v)); break;
      case T.INT64: b.writeBigInt64LE(BigInt(v)); break;
      default: b.writeDoubleLE(v);
    }
    this.push(b);
  }
  /** @param {GGUFValue} v */
  value(v) {
    this.u32(v.type);
    if (v.type !== T.ARRAY) return this.scalar(v.type, v.value);
    this.u32(v.itemType);
    this.u64(v.value.length);
    if (v.itemType === T.STRING) for (const s of v.value) this.str(s);
    else if (v.itemType === T.ARRAY) for (const a of v.value) this.value(a);
    else {
      const [, Ctor] = SCALAR[v.itemType];
      const arr = v.value instanceof Ctor ? v.value : Ctor.from(v.value);
      this.push(Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
    }
  }
}

/**
 * Builds the GGUF header (magic .. tensor infos, padded to alignment) and the tensor layout.
 * @param {Array<[string, GGUFValue]>} kvs ordered metadata
 * @param {Array<{name: string, dims: number[], type: number}>} tensors
 * @param {number} [alignment]
 * @returns {{header: Buffer, tensors: GGUFTensorInfo[], sizes: number[], totalBytes: number}}
 */
export function buildHeader(kvs, tensors, alignment = DEFAULT_ALIGNMENT) {
  const s = new Sink();
  s.u32(GGUF_MAGIC); s.u32(GGUF_VERSION); s.u64(tensors.length); s.u64(kvs.length);
  for (const [key, v] of kvs) { s.str(key); s.value(v); }
  let offset = 0;
  const infos = [], sizes = [];
  for (const t of tensors) {
    const size = tensorBytes(t.type, t.dims);
    s.str(t.name); s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(t.type); s.u64(offset);
    infos.push({ ...t, offset }); sizes.push(size);
    offset = align(offset + size, alignment);
  }
  const pad = align(s.length, alignment) - s.length;
  if (pad) s.push(Buffer.alloc(pad));
  const header = Buffer.concat(s.parts, s.length);
  return { header, tensors: infos, sizes, totalBytes: header.length + offset };
}

/** Convenience constructors for metadata values. */
export const kv = {
  str: (value) => ({ type: T.STRING, value }),
  u32: (value) => ({ type: T.UINT32, value }),
  f32: (value) => ({ type: T.FLOAT32, value }),
  bool: (value) => ({ type: T.BOOL, value }),
};

// ---- tensor data encoding -------------------------------------------------------------------

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** float -> IEEE half bits, round-to-nearest-even (matches ggml's F32->F16 for finite values). */
export function toHalf(x) {
  f32buf[0] = x;
  const bits = u32buf[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into exponent: still correct
  return sign | h;
}

/**
 * Encodes float values into ggml tensor bytes of the given type.
 * @param {Float32Array} x length must be a multiple of the type's block size
 * @param {number} type
 * @returns {Buffer}
 */
export function encodeTensor(x, type) {
  if (type === GGML.F32) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  if (type === GGML.F16) {
    const out = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = toHalf(x[i]);
    return Buffer.from(out.buffer);
  }
  if (type === GGML.Q8_0) {
    const nb = x.length / 32;
    const out = Buffer.alloc(nb * 34);
    const q = new Int8Array(out.buffer, out.byteOffset, out.length);
    for (let b = 0; b < nb; b++) {
      const base = b * 32;
      let amax = 0;
      for (let j = 0; j < 32; j++) { const a = Math.abs(x[base + j]); if (a > amax) amax = a; }
      const d = Math.fround(amax / 127);
      const id = d ? Math.fround(1 / d) : 0;
      const o = b * 34, h = toHalf(d);
      out[o] = h & 0xff; out[o + 1] = h >>> 8;
      for (let j = 0; j < 32; j++) {
        const v = Math.fround(x[base + j] * id);
        q[o + 2 + j] = v < 0 ? -Math.round(-v) : Math.round(v); // roundf: half away from zero
      }
    }
    return out;
  }
  throw new Error(`unsupported ggml type ${type}`);
}

/** Writes `buf` fully to `fd`. */
export function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}
