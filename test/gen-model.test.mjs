// Tests for scripts/gen-model.mjs: determinism, GGUF structure and metadata of the `tiny` preset.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { GENERATOR_VERSION, PRESETS, generateModel, modelPlan } from '../scripts/gen-model.mjs';
import { GGML, T, readGGUF, tensorBytes } from '../scripts/lib/gguf.mjs';

const sha256 = (p) => createHash('sha256').update(readFileSync(p)).digest('hex');

let dir;
const paths = {};
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lmserve-gen-model-'));
  paths.a = await generateModel({ preset: 'tiny', seed: 7, out: join(dir, 'a', 'model.gguf') });
  paths.b = await generateModel({ preset: 'tiny', seed: 7, out: join(dir, 'b', 'model.gguf') });
  paths.c = await generateModel({ preset: 'tiny', seed: 8, out: join(dir, 'c', 'model.gguf') });
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('same seed gives byte-identical files, a different seed different bytes', () => {
  const [a, b, c] = [paths.a, paths.b, paths.c].map(sha256);
  assert.equal(a, b);
  assert.notEqual(a, c);
  assert.equal(statSync(paths.a).size, statSync(paths.c).size);
  const meta = JSON.parse(readFileSync(`${paths.a}.meta.json`, 'utf8'));
  assert.equal(meta.sha256, a);
  assert.deepEqual([meta.preset, meta.seed, meta.generatorVersion], ['tiny', 7, GENERATOR_VERSION]);
});

test('file starts with the GGUF magic and version 3', () => {
  const fd = openSync(paths.a, 'r');
  const head = Buffer.alloc(8);
  readSync(fd, head, 0, 8, 0);
  closeSync(fd);
  assert.equal(head.subarray(0, 4).toString('latin1'), 'GGUF');
  assert.equal(head.readUInt32LE(4), 3);
});

test('metadata and tensors are what llama.cpp expects for a llama model', () => {
  const g = readGGUF(paths.a);
  const v = (k) => g.kv.get(k)?.value;
  const p = PRESETS.tiny;
  assert.equal(v('general.architecture'), 'llama');
  assert.equal(v('general.alignment'), 32);
  assert.equal(v('tokenizer.ggml.model'), 'llama');
  assert.match(v('tokenizer.chat_template'), /\[INST\]/);
  assert.equal(g.kv.get('tokenizer.ggml.tokens').itemType, T.STRING);
  const nVocab = v('tokenizer.ggml.tokens').length;
  assert.equal(nVocab, 32000);
  assert.equal(v('tokenizer.ggml.scores').length, nVocab);
  assert.equal(v('llama.embedding_length'), p.n_embd);
  assert.equal(v('llama.block_count'), p.n_layer);
  assert.equal(v('llama.attention.head_count_kv'), p.n_head_kv);

  assert.equal(g.tensors.length, 3 + 9 * p.n_layer);
  assert.equal(g.tensors.length, modelPlan('tiny', 7).tensors.length);
  const byName = new Map(g.tensors.map((t) => [t.name, t]));
  assert.deepEqual(byName.get('token_embd.weight').dims, [p.n_embd, nVocab]);
  assert.deepEqual(byName.get('blk.1.attn_k.weight').dims, [p.n_embd, (p.n_embd / p.n_head) * p.n_head_kv]);
  assert.deepEqual(byName.get('blk.0.ffn_down.weight').dims, [p.n_ff, p.n_embd]);
  assert.equal(byName.get('output_norm.weight').type, GGML.F32);

  // Data layout: aligned offsets, no overlap, file exactly covers the last tensor.
  let end = 0;
  for (const t of g.tensors) {
    assert.equal(t.offset % 32, 0, t.name);
    assert.ok(t.offset >= end, t.name);
    end = t.offset + tensorBytes(t.type, t.dims);
  }
  assert.equal(g.dataOffset % 32, 0);
  assert.equal(statSync(paths.a).size, g.dataOffset + end);
});

test('tokenizer metadata is copied verbatim from the llama.cpp vocab file', () => {
  const plan = modelPlan('tiny', 7);
  const src = readGGUF(plan.vocabPath);
  const g = readGGUF(paths.a);
  for (const [k, val] of src.kv) {
    if (!k.startsWith('tokenizer.') || k === 'tokenizer.chat_template') continue;
    assert.deepEqual(g.kv.get(k), val, k);
  }
});

test('a matching sidecar makes a second call a cache hit', async () => {
  const before = statSync(paths.a).mtimeMs;
  await generateModel({ preset: 'tiny', seed: 7, out: paths.a });
  assert.equal(statSync(paths.a).mtimeMs, before);
});

test('the gpu-1b preset plans a ~1.1B-parameter f16 llama with grouped-query attention (not generated here)', () => {
  const plan = modelPlan('gpu-1b');
  const p = PRESETS['gpu-1b'];
  assert.equal(p.arch, 'llama');
  assert.equal(p.vocab, 'ggml-vocab-llama-spm.gguf'); // the bench bans SPM byte/control ids
  assert.equal(plan.n_vocab, 32000);
  // TinyLlama's shape: 2 * 2048 * 32000 + 22 * (2 * 2048^2 + 2 * 2048 * 256 + 3 * 2048 * 5632 + 2 * 2048) + 2048
  assert.equal(plan.params, 1_100_048_384);
  const byName = new Map(plan.tensors.map((t) => [t.name, t]));
  assert.deepEqual(byName.get('blk.0.attn_k.weight').dims, [2048, 256]);
  assert.equal(byName.get('blk.21.ffn_up.weight').type, GGML.F16);
  assert.equal(byName.get('token_embd.weight').type, GGML.F16);
  assert.equal(byName.get('blk.0.attn_norm.weight').type, GGML.F32);
  const bytes = plan.tensors.reduce((s, t) => s + tensorBytes(t.type, t.dims), 0);
  assert.ok(bytes > 2.1e9 && bytes < 2.3e9, `${bytes} bytes`);
});

test('the tiny-swa preset plans gemma3 with a 32-position window on every other layer and tied output', () => {
  const plan = modelPlan('tiny-swa');
  const kvs = new Map(plan.kvs);
  assert.equal(kvs.get('general.architecture').value, 'gemma3');
  assert.equal(kvs.get('gemma3.attention.sliding_window').value, 32);
  assert.equal(kvs.get('gemma3.attention.sliding_window_pattern').value, 2);
  const names = new Set(plan.tensors.map((t) => t.name));
  for (const n of ['attn_q_norm', 'attn_k_norm', 'post_attention_norm', 'post_ffw_norm']) assert.ok(names.has(`blk.1.${n}.weight`), n);
  assert.ok(!names.has('output.weight'), 'gemma ties the output to the token embeddings');
  assert.ok(!modelPlan('tiny').kvs.some(([k]) => k.includes('sliding_window')));
});

test('the tiny-mamba preset plans Mamba as llama.cpp loads it: SSM tensors, f32 conv and A, A < 0', async () => {
  const plan = modelPlan('tiny-mamba');
  const kvs = new Map(plan.kvs);
  assert.equal(kvs.get('general.architecture').value, 'mamba');
  assert.equal(kvs.get('mamba.ssm.inner_size').value, 2 * kvs.get('mamba.embedding_length').value);
  assert.equal(kvs.get('mamba.attention.head_count').value, 0);
  assert.ok(!plan.kvs.some(([k]) => k.startsWith('mamba.rope')));
  const byName = new Map(plan.tensors.map((t) => [t.name, t]));
  assert.deepEqual(byName.get('blk.1.ssm_in.weight').dims, [64, 256]);
  assert.deepEqual(byName.get('blk.1.ssm_x.weight').dims, [128, 4 + 2 * 16]);
  assert.deepEqual(byName.get('blk.1.ssm_a').dims, [16, 128]);
  // The kernels read these as floats whatever their type.
  for (const n of ['blk.0.ssm_conv1d.weight', 'blk.0.ssm_a', 'blk.0.ssm_d']) assert.equal(byName.get(n).type, GGML.F32, n);
  // A = -(1..d_state) along each row: the written file holds exactly that.
  const dir = mkdtempSync(join(tmpdir(), 'lmserve-mamba-'));
  try {
    const path = await generateModel({ preset: 'tiny-mamba', out: join(dir, 'model.gguf') });
    const file = readGGUF(path);
    const a = file.tensors.find((t) => t.name === 'blk.0.ssm_a');
    const data = readFileSync(path).subarray(file.dataOffset + Number(a.offset), file.dataOffset + Number(a.offset) + 16 * 128 * 4);
    const values = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
    assert.deepEqual([...values.subarray(0, 16)], Array.from({ length: 16 }, (_, i) => -(i + 1)));
    assert.deepEqual([...values.subarray(16 * 127)], Array.from({ length: 16 }, (_, i) => -(i + 1)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the tiny-lfm2 preset plans LFM2: attention where head_count_kv is not 0, short convolutions elsewhere', () => {
  const plan = modelPlan('tiny-lfm2');
  const kvs = new Map(plan.kvs);
  assert.equal(kvs.get('general.architecture').value, 'lfm2');
  const perLayer = kvs.get('lfm2.attention.head_count_kv');
  assert.equal(perLayer.type, T.ARRAY);
  assert.equal(perLayer.itemType, T.UINT32);
  assert.deepEqual([...perLayer.value], [0, 2, 0, 2]);
  assert.equal(kvs.get('lfm2.shortconv.l_cache').value, 3);
  const byName = new Map(plan.tensors.map((t) => [t.name, t]));
  assert.deepEqual(byName.get('blk.0.shortconv.conv.weight').dims, [3, 64]);
  assert.equal(byName.get('blk.0.shortconv.conv.weight').type, GGML.F32);
  assert.deepEqual(byName.get('blk.0.shortconv.in_proj.weight').dims, [64, 192]);
  assert.ok(!byName.has('blk.0.attn_q.weight') && byName.has('blk.1.attn_q.weight') && !byName.has('blk.1.shortconv.conv.weight'));
  assert.deepEqual(byName.get('blk.3.attn_k.weight').dims, [64, 32]);
  // The final norm's name in LFM2; the output projection is tied to the embeddings.
  assert.ok(byName.has('token_embd_norm.weight') && !byName.has('output_norm.weight') && !byName.has('output.weight'));
  assert.equal(plan.tensors.length, 2 + 2 * 8 + 2 * 11);
});
