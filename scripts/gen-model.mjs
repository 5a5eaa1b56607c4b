#!/usr/bin/env node
// Deterministically writes small GGUF v3 models with a real architecture (llama / qwen2 / gemma3 /
// mamba / lfm2), a real tokenizer (copied from llama.cpp's vocab-only GGUFs in
// <llama.cpp>/models/), a chat template and seeded random weights. The models produce garbage text
// but load and decode like real ones.
//
//   node scripts/gen-model.mjs --preset tiny|tiny-bpe|tiny-swa|tiny-mamba|tiny-lfm2|bench|bench-bpe|bench-swa|bench-lfm2|gpu-1b [--seed N] [--out PATH] [--force]
//
// Same preset + seed + GENERATOR_VERSION => byte-identical file. Output defaults to
// data/models/<preset>/model.gguf; a sidecar <out>.meta.json caches the result.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGML, T, buildHeader, encodeTensor, kv, readGGUF, writeAll } from './lib/gguf.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Bump when the output bytes for a given preset+seed change (invalidates cached models). */
export const GENERATOR_VERSION = 1;
export const DEFAULT_SEED = 42;

// Llama-2 style template. llama.cpp's built-in detection maps it to "llama2-sys-bos", whose output
// equals this jinja's output minus the leading BOS (which the tokenizer adds there).
const LLAMA2_TEMPLATE =
  "{%- if messages[0]['role'] == 'system' -%}{%- set system_message = messages[0]['content'] -%}" +
  "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set system_message = '' -%}" +
  "{%- set loop_messages = messages -%}{%- endif -%}" +
  "{%- for message in loop_messages -%}" +
  "{%- if message['role'] == 'user' -%}" +
  "{%- if loop.first and system_message -%}" +
  "{{- bos_token + '[INST] <<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' -}}" +
  "{%- else -%}{{- bos_token + '[INST] ' + message['content'] + ' [/INST]' -}}{%- endif -%}" +
  "{%- elif message['role'] == 'assistant' -%}{{- message['content'] + eos_token -}}" +
  '{%- endif -%}{%- endfor -%}';

// ChatML (detected by llama.cpp as chatml).
const CHATML_TEMPLATE =
  "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
  "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

const small = { n_embd: 64, n_layer: 2, n_head: 4, n_head_kv: 2, n_ff: 128, n_ctx: 2048 };

/**
 * @typedef {{arch: 'llama'|'qwen2'|'gemma3'|'mamba'|'lfm2', vocab: string, n_embd: number, n_layer: number, n_head: number,
 *   n_head_kv: number, n_ff: number, n_ctx: number, rope_base: number, rms_eps: number,
 *   matType: number, fileType: number, template: string, slidingWindow?: number,
 *   slidingWindowPattern?: number, ssm?: {d_inner: number, d_conv: number, d_state: number, dt_rank: number},
 *   shortConv?: {l_cache: number, attentionLayers: number[]}}} Preset
 * @type {Record<string, Preset>}
 */
export const PRESETS = {
  tiny: {
    arch: 'llama', vocab: 'ggml-vocab-llama-spm.gguf', ...small, rope_base: 10000, rms_eps: 1e-5,
    matType: GGML.F32, fileType: 0 /* ALL_F32 */, template: LLAMA2_TEMPLATE,
  },
  'tiny-bpe': {
    arch: 'qwen2', vocab: 'ggml-vocab-qwen2.gguf', ...small, rope_base: 1000000, rms_eps: 1e-6,
    matType: GGML.F16, fileType: 1 /* MOSTLY_F16 */, template: CHATML_TEMPLATE,
  },
  // Gemma 3's architecture with a sliding window: layer 0 attends to the last 32 positions only
  // (llama.cpp's iswa cache, which overwrites older cells), layer 1 to everything. For the
  // engine's tests of prompt reuse on models whose cache forgets (gemma3, gpt-oss, ...).
  'tiny-swa': {
    arch: 'gemma3', vocab: 'ggml-vocab-llama-spm.gguf', ...small, rope_base: 10000, rms_eps: 1e-6,
    matType: GGML.F32, fileType: 0 /* ALL_F32 */, template: LLAMA2_TEMPLATE,
    slidingWindow: 32, slidingWindowPattern: 2,
  },
  bench: {
    arch: 'llama', vocab: 'ggml-vocab-llama-spm.gguf', n_embd: 768, n_layer: 12, n_head: 12,
    n_head_kv: 12, n_ff: 2048, n_ctx: 4096, rope_base: 10000, rms_eps: 1e-5,
    matType: GGML.Q8_0, fileType: 7 /* MOSTLY_Q8_0 */, template: LLAMA2_TEMPLATE,
  },
  // The bench model's size in Qwen 2's architecture with its 151,646-token BPE vocabulary: the
  // output projection and sampling over a large vocabulary weigh more per token.
  'bench-bpe': {
    arch: 'qwen2', vocab: 'ggml-vocab-qwen2.gguf', n_embd: 768, n_layer: 12, n_head: 12,
    n_head_kv: 2, n_ff: 2048, n_ctx: 4096, rope_base: 1000000, rms_eps: 1e-6,
    matType: GGML.Q8_0, fileType: 7 /* MOSTLY_Q8_0 */, template: CHATML_TEMPLATE,
  },
  // The bench model's size in Gemma 3's architecture: 5 layers of 6 attend to the last 512
  // positions (llama.cpp's iswa cache). For measuring long prompts on sliding-window models.
  'bench-swa': {
    arch: 'gemma3', vocab: 'ggml-vocab-llama-spm.gguf', n_embd: 768, n_layer: 12, n_head: 12,
    n_head_kv: 12, n_ff: 2048, n_ctx: 8192, rope_base: 1000000, rms_eps: 1e-6,
    matType: GGML.Q8_0, fileType: 7 /* MOSTLY_Q8_0 */, template: LLAMA2_TEMPLATE,
    slidingWindow: 512, slidingWindowPattern: 6,
  },
  // Mamba (v1), a recurrent model: one state per sequence, no KV cells. A state cannot be cut
  // back to an earlier position, so the engine's prompt reuse, prompt cache and prefix sharing
  // take other paths on it (and on hybrids). The SSM's matrices are larger than `w` so that the
  // answer depends on the state, not only on the last token.
  'tiny-mamba': {
    arch: 'mamba', vocab: 'ggml-vocab-llama-spm.gguf', n_embd: 64, n_layer: 2, n_head: 0, n_head_kv: 0, n_ff: 0,
    n_ctx: 2048, rope_base: 0, rms_eps: 1e-5, matType: GGML.F32, fileType: 0 /* ALL_F32 */, template: LLAMA2_TEMPLATE,
    ssm: { d_inner: 128, d_conv: 4, d_state: 16, dt_rank: 4 },
  },
  // LFM2 (Liquid AI), a hybrid: short-convolution layers (0 and 2) with a recurrent state, and
  // grouped-query attention layers (1 and 3) with KV cells. llama.cpp's hybrid memory holds
  // both; a sequence cannot be cut back (its conv state) unless rollback is configured.
  'tiny-lfm2': {
    arch: 'lfm2', vocab: 'ggml-vocab-llama-spm.gguf', n_embd: 64, n_layer: 4, n_head: 4, n_head_kv: 2, n_ff: 128,
    n_ctx: 2048, rope_base: 1000000, rms_eps: 1e-5, matType: GGML.F32, fileType: 0 /* ALL_F32 */, template: CHATML_TEMPLATE,
    shortConv: { l_cache: 3, attentionLayers: [1, 3] },
  },
  // The bench model's size as an LFM2 hybrid (4 attention layers of 12, as LFM2-350M has 6 of
  // 16): `npm run bench -- --model-preset bench-lfm2` compares the two servers on a hybrid.
  'bench-lfm2': {
    arch: 'lfm2', vocab: 'ggml-vocab-llama-spm.gguf', n_embd: 768, n_layer: 12, n_head: 12, n_head_kv: 12, n_ff: 2048,
    n_ctx: 4096, rope_base: 1000000, rms_eps: 1e-5, matType: GGML.Q8_0, fileType: 7 /* MOSTLY_Q8_0 */, template: CHATML_TEMPLATE,
    shortConv: { l_cache: 3, attentionLayers: [2, 5, 8, 11] },
  },
  // About 1.1B parameters in TinyLlama's shape (grouped-query attention, 4 KV heads), f16: the GPU
  // benchmark's model (scripts/gpu-bench.sh). About 2.2 GB, streamed to disk in 1M-element chunks.
  'gpu-1b': {
    arch: 'llama', vocab: 'ggml-vocab-llama-spm.gguf', n_embd: 2048, n_layer: 22, n_head: 32,
    n_head_kv: 4, n_ff: 5632, n_ctx: 4096, rope_base: 10000, rms_eps: 1e-5,
    matType: GGML.F16, fileType: 1 /* MOSTLY_F16 */, template: LLAMA2_TEMPLATE,
  },
};

/** llama.cpp source dir: explicit argument, else $LLAMA_CPP_DIR, else <repo>/deps/llama.cpp. */
export function resolveLlamaCppDir(dir) {
  return resolve(dir ?? process.env.LLAMA_CPP_DIR ?? join(root, 'deps', 'llama.cpp'));
}

// ---- seeded PRNG: xoshiro128** per tensor, seeded via splitmix32 from FNV-1a(seed, name) -------

function fnv1a(str) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(str, 'utf8')) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** @returns {() => number} generator of uint32 values */
function rng(seed, name) {
  let x = fnv1a(`${seed}\u0000${name}`);
  const sm = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = sm(), b = sm(), c = sm(), d = sm();
  if ((a | b | c | d) === 0) a = 1;
  return () => {
    const r = Math.imul(b, 5);
    const out = Math.imul((r << 7) | (r >>> 25), 9) >>> 0;
    const t = b << 9;
    c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = (d << 11) | (d >>> 21);
    return out;
  };
}

/**
 * Fills `buf` with approx N(0, std) samples (Irwin-Hall sum of four 16-bit uniforms; exact
 * integer/float arithmetic only, so identical on every platform).
 */
function fillNormal(next, buf, std) {
  const k = Math.sqrt(3) * std;
  for (let i = 0; i < buf.length; i++) {
    const r1 = next(), r2 = next();
    const s = (r1 & 0xffff) + (r1 >>> 16) + (r2 & 0xffff) + (r2 >>> 16) + 2;
    buf[i] = (s / 65536 - 2) * k;
  }
}

// ---- model plan ---------------------------------------------------------------------------------

/**
 * Builds metadata and tensor list for a preset.
 * @param {string} presetName
 * @param {number} seed
 * @param {string} [llamaCppDir]
 */
export function modelPlan(presetName, seed = DEFAULT_SEED, llamaCppDir) {
  const p = PRESETS[presetName];
  if (!p) throw new Error(`unknown preset "${presetName}" (expected one of ${Object.keys(PRESETS).join(', ')})`);
  const vocabPath = join(resolveLlamaCppDir(llamaCppDir), 'models', p.vocab);
  if (!existsSync(vocabPath)) {
    throw new Error(`vocab file not found: ${vocabPath} (set LLAMA_CPP_DIR or run scripts/fetch-llama.mjs)`);
  }
  const vocab = readGGUF(vocabPath);
  const n_vocab = vocab.kv.get('tokenizer.ggml.tokens')?.value.length;
  if (!n_vocab) throw new Error(`${vocabPath}: no tokenizer.ggml.tokens`);
  if (p.ssm) return mambaPlan(presetName, p, seed, vocab, n_vocab, vocabPath);
  if (p.shortConv) return lfm2Plan(presetName, p, seed, vocab, n_vocab, vocabPath);
  const { arch, n_embd, n_layer, n_head, n_head_kv, n_ff } = p;
  const head_dim = n_embd / n_head;
  const n_embd_kv = head_dim * n_head_kv;

  const archKeys = [
    [`${arch}.feed_forward_length`, kv.u32(n_ff)],
    [`${arch}.attention.head_count`, kv.u32(n_head)],
    [`${arch}.attention.head_count_kv`, kv.u32(n_head_kv)],
    [`${arch}.attention.layer_norm_rms_epsilon`, kv.f32(p.rms_eps)],
    [`${arch}.rope.freq_base`, kv.f32(p.rope_base)],
    [`${arch}.rope.dimension_count`, kv.u32(head_dim)],
  ];
  if (p.slidingWindow) {
    // Every slidingWindowPattern-th layer attends to everything, the others to the window.
    archKeys.push([`${arch}.attention.sliding_window`, kv.u32(p.slidingWindow)]);
    archKeys.push([`${arch}.attention.sliding_window_pattern`, kv.u32(p.slidingWindowPattern ?? 2)]);
  }
  const kvs = planKvs(presetName, p, seed, vocab, n_vocab, archKeys);

  // dims in ggml order (ne0 innermost); init: 'w' = N(0, 0.02), 'one' = 1.0, 'b' = N(0, 0.01)
  const M = p.matType, F32 = GGML.F32;
  /** @type {Array<{name: string, dims: number[], type: number, init: string | object}>} */
  const tensors = [{ name: 'token_embd.weight', dims: [n_embd, n_vocab], type: M, init: 'w' }];
  for (let i = 0; i < n_layer; i++) {
    const b = `blk.${i}.`;
    tensors.push(
      { name: `${b}attn_norm.weight`, dims: [n_embd], type: F32, init: 'one' },
      { name: `${b}attn_q.weight`, dims: [n_embd, n_embd], type: M, init: 'w' },
      { name: `${b}attn_k.weight`, dims: [n_embd, n_embd_kv], type: M, init: 'w' },
      { name: `${b}attn_v.weight`, dims: [n_embd, n_embd_kv], type: M, init: 'w' },
    );
    if (arch === 'qwen2') {
      tensors.push(
        { name: `${b}attn_q.bias`, dims: [n_embd], type: F32, init: 'b' },
        { name: `${b}attn_k.bias`, dims: [n_embd_kv], type: F32, init: 'b' },
        { name: `${b}attn_v.bias`, dims: [n_embd_kv], type: F32, init: 'b' },
      );
    }
    if (arch === 'gemma3') {
      // Gemma's norms of q and k per head, and norms after attention and after the FFN.
      tensors.push(
        { name: `${b}attn_q_norm.weight`, dims: [head_dim], type: F32, init: 'one' },
        { name: `${b}attn_k_norm.weight`, dims: [head_dim], type: F32, init: 'one' },
        { name: `${b}post_attention_norm.weight`, dims: [n_embd], type: F32, init: 'one' },
        { name: `${b}post_ffw_norm.weight`, dims: [n_embd], type: F32, init: 'one' },
      );
    }
    tensors.push(
      { name: `${b}attn_output.weight`, dims: [n_embd, n_embd], type: M, init: 'w' },
      { name: `${b}ffn_norm.weight`, dims: [n_embd], type: F32, init: 'one' },
      { name: `${b}ffn_gate.weight`, dims: [n_embd, n_ff], type: M, init: 'w' },
      { name: `${b}ffn_up.weight`, dims: [n_embd, n_ff], type: M, init: 'w' },
      { name: `${b}ffn_down.weight`, dims: [n_ff, n_embd], type: M, init: 'w' },
    );
  }
  tensors.push({ name: 'output_norm.weight', dims: [n_embd], type: F32, init: 'one' });
  // Gemma ties the output projection to the token embeddings.
  if (arch !== 'gemma3') tensors.push({ name: 'output.weight', dims: [n_embd, n_vocab], type: M, init: 'w' });
  return finishPlan(p, kvs, tensors, n_vocab, vocabPath);
}

/**
 * A preset's metadata: general.*, the architecture's size keys, `archKeys` (the rest of the
 * architecture's keys, in order), then the vocab file's tokenizer.* keys and the chat template.
 */
function planKvs(presetName, p, seed, vocab, n_vocab, archKeys) {
  const { arch } = p;
  /** @type {Array<[string, import('./lib/gguf.mjs').GGUFValue]>} */
  const kvs = [
    ['general.architecture', kv.str(arch)],
    ['general.name', kv.str(`lmserve-${presetName}`)],
    ['general.description', kv.str(`lmserve synthetic random-weight model (preset ${presetName}, seed ${seed}, generator v${GENERATOR_VERSION})`)],
    ['general.file_type', kv.u32(p.fileType)],
    ['general.alignment', kv.u32(32)],
    ...(p.matType === GGML.Q8_0 ? [['general.quantization_version', kv.u32(2)]] : []),
    [`${arch}.vocab_size`, kv.u32(n_vocab)],
    [`${arch}.context_length`, kv.u32(p.n_ctx)],
    [`${arch}.embedding_length`, kv.u32(p.n_embd)],
    [`${arch}.block_count`, kv.u32(p.n_layer)],
    ...archKeys,
  ];
  for (const [k, v] of vocab.kv) if (k.startsWith('tokenizer.') && k !== 'tokenizer.chat_template') kvs.push([k, v]);
  kvs.push(['tokenizer.chat_template', kv.str(p.template)]);
  return kvs;
}

/** The plan modelPlan returns, with its parameter count. */
function finishPlan(p, kvs, tensors, n_vocab, vocabPath) {
  const params = tensors.reduce((s, t) => s + t.dims.reduce((a, d) => a * d, 1), 0);
  return { preset: p, kvs, tensors, params, n_vocab, vocabPath };
}

/**
 * Mamba (v1) as llama.cpp loads it (src/models/mamba.cpp): d_inner = 2 n_embd, no attention
 * heads, no RoPE; `ssm_a` and the conv weights f32 (the kernels read them as floats), A < 0
 * (the scan multiplies the state by exp(softplus(dt) A)), dt's bias an inverse softplus of 0.01.
 */
function mambaPlan(presetName, p, seed, vocab, n_vocab, vocabPath) {
  const { arch, n_embd, n_layer, ssm } = p;
  const { d_inner, d_conv, d_state, dt_rank } = ssm;
  if (d_inner !== 2 * n_embd) throw new Error(`${presetName}: mamba needs d_inner = 2 * n_embd`);
  const kvs = planKvs(presetName, p, seed, vocab, n_vocab, [
    [`${arch}.feed_forward_length`, kv.u32(0)],
    [`${arch}.attention.head_count`, kv.u32(0)],
    [`${arch}.attention.layer_norm_rms_epsilon`, kv.f32(p.rms_eps)],
    [`${arch}.ssm.conv_kernel`, kv.u32(d_conv)],
    [`${arch}.ssm.inner_size`, kv.u32(d_inner)],
    [`${arch}.ssm.state_size`, kv.u32(d_state)],
    [`${arch}.ssm.time_step_rank`, kv.u32(dt_rank)],
  ]);
  const M = p.matType, F32 = GGML.F32;
  const strong = { normal: 0.2 };
  const tensors = [{ name: 'token_embd.weight', dims: [n_embd, n_vocab], type: M, init: 'w' }];
  for (let i = 0; i < n_layer; i++) {
    const b = `blk.${i}.`;
    tensors.push(
      { name: `${b}attn_norm.weight`, dims: [n_embd], type: F32, init: 'one' },
      { name: `${b}ssm_in.weight`, dims: [n_embd, 2 * d_inner], type: M, init: strong },
      { name: `${b}ssm_conv1d.weight`, dims: [d_conv, d_inner], type: F32, init: { normal: 0.5 } },
      { name: `${b}ssm_conv1d.bias`, dims: [d_inner], type: F32, init: 'b' },
      { name: `${b}ssm_x.weight`, dims: [d_inner, dt_rank + 2 * d_state], type: M, init: strong },
      { name: `${b}ssm_dt.weight`, dims: [dt_rank, d_inner], type: M, init: strong },
      { name: `${b}ssm_dt.bias`, dims: [d_inner], type: F32, init: { const: Math.log(Math.expm1(0.01)) } },
      { name: `${b}ssm_a`, dims: [d_state, d_inner], type: F32, init: { ramp: d_state } },
      { name: `${b}ssm_d`, dims: [d_inner], type: F32, init: 'one' },
      { name: `${b}ssm_out.weight`, dims: [d_inner, n_embd], type: M, init: strong },
    );
  }
  tensors.push(
    { name: 'output_norm.weight', dims: [n_embd], type: F32, init: 'one' },
    { name: 'output.weight', dims: [n_embd, n_vocab], type: M, init: strong },
  );
  return finishPlan(p, kvs, tensors, n_vocab, vocabPath);
}

/**
 * LFM2 as llama.cpp loads it (src/models/lfm2.cpp): a layer is attention when its entry of the
 * `head_count_kv` array is not 0, else a short convolution (in_proj to B, C, x; a depthwise conv
 * of `l_cache` taps, f32; out_proj). The final norm is `token_embd_norm`; the output projection
 * is tied to the embeddings. The attention and conv matrices are larger than `w` so that the
 * answer depends on the earlier positions through both kinds of layer.
 */
function lfm2Plan(presetName, p, seed, vocab, n_vocab, vocabPath) {
  const { arch, n_embd, n_layer, n_head, n_head_kv, n_ff, shortConv } = p;
  const head_dim = n_embd / n_head;
  const n_embd_kv = head_dim * n_head_kv;
  const isAttention = (i) => shortConv.attentionLayers.includes(i);
  const kvs = planKvs(presetName, p, seed, vocab, n_vocab, [
    [`${arch}.feed_forward_length`, kv.u32(n_ff)],
    [`${arch}.attention.head_count`, kv.u32(n_head)],
    [`${arch}.attention.head_count_kv`, { type: T.ARRAY, itemType: T.UINT32, value: Array.from({ length: n_layer }, (_, i) => (isAttention(i) ? n_head_kv : 0)) }],
    [`${arch}.attention.layer_norm_rms_epsilon`, kv.f32(p.rms_eps)],
    [`${arch}.rope.freq_base`, kv.f32(p.rope_base)],
    [`${arch}.shortconv.l_cache`, kv.u32(shortConv.l_cache)],
  ]);
  const M = p.matType, F32 = GGML.F32;
  const strong = { normal: 0.2 };
  const tensors = [{ name: 'token_embd.weight', dims: [n_embd, n_vocab], type: M, init: 'w' }];
  for (let i = 0; i < n_layer; i++) {
    const b = `blk.${i}.`;
    tensors.push({ name: `${b}attn_norm.weight`, dims: [n_embd], type: F32, init: 'one' });
    if (isAttention(i)) {
      tensors.push(
        { name: `${b}attn_q_norm.weight`, dims: [head_dim], type: F32, init: 'one' },
        { name: `${b}attn_k_norm.weight`, dims: [head_dim], type: F32, init: 'one' },
        { name: `${b}attn_q.weight`, dims: [n_embd, n_embd], type: M, init: strong },
        { name: `${b}attn_k.weight`, dims: [n_embd, n_embd_kv], type: M, init: strong },
        { name: `${b}attn_v.weight`, dims: [n_embd, n_embd_kv], type: M, init: strong },
        { name: `${b}attn_output.weight`, dims: [n_embd, n_embd], type: M, init: strong },
      );
    } else {
      tensors.push(
        { name: `${b}shortconv.conv.weight`, dims: [shortConv.l_cache, n_embd], type: F32, init: { normal: 0.5 } },
        { name: `${b}shortconv.in_proj.weight`, dims: [n_embd, 3 * n_embd], type: M, init: strong },
        { name: `${b}shortconv.out_proj.weight`, dims: [n_embd, n_embd], type: M, init: strong },
      );
    }
    tensors.push(
      { name: `${b}ffn_norm.weight`, dims: [n_embd], type: F32, init: 'one' },
      { name: `${b}ffn_gate.weight`, dims: [n_embd, n_ff], type: M, init: 'w' },
      { name: `${b}ffn_up.weight`, dims: [n_embd, n_ff], type: M, init: 'w' },
      { name: `${b}ffn_down.weight`, dims: [n_ff, n_embd], type: M, init: 'w' },
    );
  }
  tensors.push({ name: 'token_embd_norm.weight', dims: [n_embd], type: F32, init: 'one' });
  return finishPlan(p, kvs, tensors, n_vocab, vocabPath);
}

/**
 * Fills a chunk of a tensor (elements `off`..): 'one' = 1.0, 'w' = N(0, 0.02), 'b' = N(0, 0.01),
 * {normal: std}, {const: v}, {ramp: n} = -(1 + index mod n) (Mamba's A: -1..-d_state per row).
 */
function fillInit(init, next, x, off) {
  if (init === 'one') x.fill(1);
  else if (init === 'w' || init === 'b') fillNormal(next, x, init === 'w' ? 0.02 : 0.01);
  else if (typeof init === 'object' && 'normal' in init) fillNormal(next, x, init.normal);
  else if (typeof init === 'object' && 'const' in init) x.fill(init.const);
  else if (typeof init === 'object' && 'ramp' in init) for (let i = 0; i < x.length; i++) x[i] = -(1 + ((off + i) % init.ramp));
  else throw new Error(`internal: unknown init ${JSON.stringify(init)}`);
}

// ---- writer -------------------------------------------------------------------------------------

const CHUNK = 1 << 20; // elements per generated chunk (multiple of the Q8_0 block size)

/** Streams the model to `path`; returns {bytes, sha256}. */
function writeModel(path, plan, seed) {
  const { header, sizes } = buildHeader(plan.kvs, plan.tensors.map(({ name, dims, type }) => ({ name, dims, type })));
  const hash = createHash('sha256');
  const fd = openSync(path, 'w');
  let bytes = 0;
  const put = (buf) => { writeAll(fd, buf); hash.update(buf); bytes += buf.length; };
  try {
    put(header);
    const scratch = new Float32Array(CHUNK);
    plan.tensors.forEach((t, idx) => {
      const n = t.dims.reduce((a, d) => a * d, 1);
      const next = rng(seed, t.name);
      let written = 0;
      for (let off = 0; off < n; off += CHUNK) {
        const x = scratch.subarray(0, Math.min(CHUNK, n - off));
        fillInit(t.init, next, x, off);
        const enc = encodeTensor(x, t.type);
        put(enc); written += enc.length;
      }
      if (written !== sizes[idx]) throw new Error(`internal: ${t.name} wrote ${written} != ${sizes[idx]}`);
      const pad = (32 - (written % 32)) % 32;
      if (pad && idx < plan.tensors.length - 1) put(Buffer.alloc(pad));
    });
  } finally {
    closeSync(fd);
  }
  return { bytes, sha256: hash.digest('hex') };
}

/**
 * Generates (or reuses a cached) model file.
 * @param {{preset: string, seed?: number, out?: string, llamaCppDir?: string, force?: boolean,
 *   log?: (msg: string) => void}} opts
 * @returns {Promise<string>} absolute path of the model file
 */
export async function generateModel({ preset, seed = DEFAULT_SEED, out, llamaCppDir, force = false, log = () => {} }) {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative integer, got ${seed}`);
  if (!PRESETS[preset]) throw new Error(`unknown preset "${preset}" (expected one of ${Object.keys(PRESETS).join(', ')})`);
  const path = resolve(out ?? join(root, 'data', 'models', preset, 'model.gguf'));
  const metaPath = `${path}.meta.json`;
  if (!force && existsSync(path) && existsSync(metaPath)) {
    try {
      const m = JSON.parse(readFileSync(metaPath, 'utf8'));
      if (m.preset === preset && m.seed === seed && m.generatorVersion === GENERATOR_VERSION && m.bytes === statSync(path).size) {
        log(`cached ${path} (${m.bytes} bytes)`);
        return path;
      }
    } catch { /* regenerate */ }
  }
  const t0 = performance.now();
  const plan = modelPlan(preset, seed, llamaCppDir);
  mkdirSync(dirname(path), { recursive: true });
  rmSync(metaPath, { force: true });
  const tmp = `${path}.part`;
  let res;
  try {
    res = writeModel(tmp, plan, seed);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  const meta = {
    generator: 'lmserve scripts/gen-model.mjs', generatorVersion: GENERATOR_VERSION, preset, seed,
    architecture: plan.preset.arch, vocab: plan.preset.vocab, n_vocab: plan.n_vocab, params: plan.params,
    tensors: plan.tensors.length, bytes: res.bytes, sha256: res.sha256,
  };
  writeFileSync(metaPath, `${JSON.stringify(meta, null, 2)}\n`);
  log(`wrote ${path} (${res.bytes} bytes, ${plan.params} params, ${((performance.now() - t0) / 1000).toFixed(2)} s)`);
  return path;
}

// ---- CLI ----------------------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { preset: undefined, seed: DEFAULT_SEED, out: undefined, force: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a.startsWith('--preset')) opts.preset = val();
    else if (a.startsWith('--seed')) {
      const s = val();
      if (!/^\d+$/.test(s)) throw new Error(`--seed must be a non-negative integer, got ${s}`);
      opts.seed = Number(s);
    } else if (a.startsWith('--out')) opts.out = val();
    else if (a === '--force') opts.force = true;
    else if (a === '-h' || a === '--help') opts.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

const USAGE = `usage: node scripts/gen-model.mjs --preset ${Object.keys(PRESETS).join('|')} [--seed N] [--out PATH] [--force]`;

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const opts = parseArgs(process.argv.slice(2));
    if (opts.help || !opts.preset) {
      console.log(USAGE);
      process.exit(opts.help ? 0 : 2);
    }
    const path = await generateModel({ ...opts, log: (m) => process.stderr.write(`[gen-model] ${m}\n`) });
    console.log(`${path} ${statSync(path).size}`);
  } catch (e) {
    process.stderr.write(`[gen-model] error: ${e.message}\n${USAGE}\n`);
    process.exit(1);
  }
}
