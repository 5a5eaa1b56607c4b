/**
 * Fit before load: what a worker's model needs (its weights, the KV cache of every slot of every
 * replica, compute buffers) against the memory this machine (or its cgroup) has available, and on
 * a GPU build against each device's free memory, less what the supervisor's other models hold or
 * are about to take. A model that does not fit is refused with the numbers instead of being
 * OOM-killed while it loads.
 *
 * The need comes from llama.cpp itself (`measureNeed`, fit/measure.ts: a no_alloc load in a child
 * process sizes every buffer on every device; for GPU_LAYERS=auto on a GPU build llama.cpp's fit
 * chooses the layers first). When that cannot run, `estimateNeed` reads the GGUF header and does
 * llama.cpp's arithmetic: KV cache n_layer × tokens × (n_embd_k_gqa + n_embd_v_gqa) × 2 bytes
 * (f16), tokens = CTX_SIZE × WORKER_CONCURRENCY per replica; compute, per replica, the batch's
 * logits and activations (batch × (n_vocab + 8 × n_embd) × 4 bytes) plus 64 MiB.
 *
 * `LMSERVE_MEMORY_AVAILABLE` (bytes, or with K/M/G/T) replaces the measured available RAM: a
 * knob for tests and for operators who want a budget below what the machine reports.
 * `LMSERVE_FIT_CHECK=off` skips the check.
 */
import { readFile, stat } from 'node:fs/promises';
import { freemem } from 'node:os';
import type { WorkerState } from '@lmserve/protocol';
import { readGgufMetadata, type GgufScalar } from './gguf-metadata.js';

/** What one GPU-like device must hold for this worker, and what it has free (llama.cpp's figures). */
export interface DeviceNeed {
  /** ggml's device name (CUDA0, Vulkan1, Metal). */
  name: string;
  description: string;
  backend: string;
  needBytes: number;
  weightsBytes: number;
  kvBytes: number;
  computeBytes: number;
  freeBytes: number;
  totalBytes: number;
}

/** Where the model's layers go (measured with llama.cpp's fit for GPU_LAYERS=auto). */
export interface Placement {
  /** What to load with: -1 is llama.cpp's default (all layers on the GPU devices). */
  loadGpuLayers: number;
  /** Layers on GPU devices, of `layers`. */
  gpuLayers: number;
  layers: number;
  tensorSplit: number[];
  cpuTensors: string[];
  /** 'off' (a set GPU_LAYERS, or no GPU device), else llama.cpp's fit status. */
  fit: 'off' | 'success' | 'failure';
}

export interface MemoryNeed {
  /** Host memory (RAM) in all. */
  totalBytes: number;
  weightsBytes: number;
  kvBytes: number;
  computeBytes: number;
  /** Tokens of KV cache per replica (CTX_SIZE × WORKER_CONCURRENCY). */
  kvTokens: number;
  replicas: number;
  /** 'llama.cpp': its own sizing of every buffer; 'estimate': the GGUF header's arithmetic. */
  source: 'llama.cpp' | 'estimate';
  /** GPU-like devices with something of this model on them (none on a CPU build). */
  devices: DeviceNeed[];
  placement: Placement | null;
}

export interface MemoryAvailable {
  bytes: number;
  /** Where the figure comes from: MemAvailable, a cgroup limit, or the override. */
  source: string;
}

/** What another worker of this supervisor holds or is about to take. */
export interface MemoryClaim {
  worker: string;
  state: WorkerState;
  bytes: number;
  /** Device memory about to be taken (a loading worker's need per device name); a loaded model's is already out of the device's free figure. */
  devices?: Record<string, number>;
}

/** One device's side of the verdict. */
export interface DeviceVerdict extends DeviceNeed {
  fits: boolean;
  /** Device memory the other workers of this supervisor are about to take (they are loading). */
  heldBytes: number;
}

export interface FitVerdict {
  fits: boolean;
  need: MemoryNeed;
  available: MemoryAvailable;
  others: MemoryClaim[];
  /** available - what the others hold. */
  freeBytes: number;
  /** Whether the host memory part fits. */
  ramFits: boolean;
  devices: DeviceVerdict[];
  message: string;
}

/** Every worker registers how to read its claim; each checks against the others'. */
export class MemoryLedger {
  readonly #claims = new Map<string, () => MemoryClaim | null>();

  register(worker: string, claim: () => MemoryClaim | null): void {
    this.#claims.set(worker, claim);
  }

  /** Every worker's claim but `worker`'s. */
  others(worker: string): MemoryClaim[] {
    const out: MemoryClaim[] = [];
    for (const [name, claim] of this.#claims) {
      if (name === worker) continue;
      const value = claim();
      if (value && value.bytes > 0) out.push(value);
    }
    return out;
  }
}

export interface FitSettings {
  contextSize: number;
  concurrency: number;
  replicas: number;
  batchSize: number;
  /** SWA_FULL (the header estimate counts every layer at the full context either way). */
  swaFull?: boolean;
}

function num(value: GgufScalar | undefined): number | null {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  return null;
}

/** The estimate for one model file and worker settings. */
export async function estimateNeed(path: string, settings: FitSettings): Promise<MemoryNeed> {
  const [meta, info] = await Promise.all([readGgufMetadata(path), stat(path)]);
  const arch = String(meta.values.get('general.architecture') ?? 'llama');
  const get = (key: string) => num(meta.values.get(`${arch}.${key}`));
  const layers = get('block_count') ?? 0;
  const embd = get('embedding_length') ?? 0;
  const heads = get('attention.head_count') ?? 1;
  const headsKv = get('attention.head_count_kv') ?? heads;
  const keyLength = get('attention.key_length') ?? (heads > 0 ? embd / heads : 0);
  const valueLength = get('attention.value_length') ?? keyLength;
  const vocab = num(meta.values.get('tokenizer.ggml.tokens.length')) ?? get('vocab_size') ?? 32_000;
  const kvTokens = settings.contextSize * settings.concurrency;
  const kvBytes = layers * kvTokens * (keyLength * headsKv + valueLength * headsKv) * 2 * settings.replicas;
  const batch = settings.batchSize > 0 ? settings.batchSize : Math.max(512, settings.concurrency);
  const computeBytes = (batch * (vocab + 8 * embd) * 4 + (64 << 20)) * settings.replicas;
  const weightsBytes = info.size;
  return {
    totalBytes: Math.round(weightsBytes + kvBytes + computeBytes),
    weightsBytes,
    kvBytes: Math.round(kvBytes),
    computeBytes: Math.round(computeBytes),
    kvTokens,
    replicas: settings.replicas,
    source: 'estimate',
    devices: [],
    placement: null,
  };
}

/** `4G`, `512M`, `1073741824`: bytes; null when it is not a size. */
export function parseBytes(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!m) return null;
  const unit = { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 }[(m[2] ?? '').toLowerCase()] ?? 1;
  return Math.round(Number(m[1]) * unit);
}

async function readNumber(path: string): Promise<number | null> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

/** MemAvailable (else os.freemem), bounded by the cgroup's memory.max less its memory.current. */
export async function availableMemory(env: NodeJS.ProcessEnv = process.env): Promise<MemoryAvailable> {
  const override = env.LMSERVE_MEMORY_AVAILABLE;
  if (override) {
    const bytes = parseBytes(override);
    if (bytes !== null) return { bytes, source: 'LMSERVE_MEMORY_AVAILABLE' };
  }
  let bytes = freemem();
  let source = 'free memory';
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(await readFile('/proc/meminfo', 'utf8'));
    if (m) {
      bytes = Number(m[1]) * 1024;
      source = 'MemAvailable';
    }
  } catch {
    // not Linux: os.freemem()
  }
  const limit = await readNumber('/sys/fs/cgroup/memory.max');
  if (limit !== null) {
    const used = (await readNumber('/sys/fs/cgroup/memory.current')) ?? 0;
    if (limit - used < bytes) {
      bytes = Math.max(0, limit - used);
      source = `the cgroup limit (memory.max ${gib(limit)}, ${gib(used)} in use)`;
    }
  }
  return { bytes, source };
}

export function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** Compares the need with what is free once the other workers' claims are taken off: RAM, and each GPU device. */
export function judgeFit(worker: string, need: MemoryNeed, available: MemoryAvailable, others: MemoryClaim[]): FitVerdict {
  const held = others.reduce((sum, o) => sum + o.bytes, 0);
  const freeBytes = Math.max(0, available.bytes - held);
  const ramFits = need.totalBytes <= freeBytes;
  const devices: DeviceVerdict[] = need.devices.map((d) => {
    const heldBytes = others.reduce((sum, o) => sum + (o.devices?.[d.name] ?? 0), 0);
    return { ...d, heldBytes, fits: d.needBytes <= Math.max(0, d.freeBytes - heldBytes) };
  });
  const fits = ramFits && devices.every((d) => d.fits);
  const source = need.source === 'llama.cpp' ? "llama.cpp's sizing" : 'estimated';
  const parts =
    `weights ${gib(need.weightsBytes)} + KV cache ${gib(need.kvBytes)} ` +
    `(${need.replicas} × ${need.kvTokens} tokens) + compute ${gib(need.computeBytes)}; ${source}`;
  const by = others.length === 0 ? 'no other model of this supervisor holds any' : `${gib(held)} of it held by ${others.map((o) => `${o.worker} (${o.state}, ${gib(o.bytes)})`).join(', ')}`;
  const deviceText = (d: DeviceVerdict) =>
    `${d.name} (${d.description}) needs ${gib(d.needBytes)} (weights ${gib(d.weightsBytes)} + KV cache ${gib(d.kvBytes)} + compute ${gib(d.computeBytes)}), ` +
    `${gib(Math.max(0, d.freeBytes - d.heldBytes))} free of ${gib(d.totalBytes)}` +
    (d.heldBytes > 0 ? ` (${gib(d.heldBytes)} about to be taken by ${others.filter((o) => o.devices?.[d.name]).map((o) => o.worker).join(', ')})` : '');
  const placement = need.placement && need.placement.layers > 0 && need.devices.length > 0 ? `; ${need.placement.gpuLayers} of ${need.placement.layers} layers on the GPU` : '';
  let message: string;
  if (fits) {
    message = `${worker} fits: needs ${gib(need.totalBytes)} of RAM (${parts}), ${gib(freeBytes)} free` + devices.map((d) => `; ${deviceText(d)}`).join('') + placement;
  } else if (!ramFits) {
    message =
      `${worker} does not fit in memory: needs ${gib(need.totalBytes)} (${parts}), ` +
      `${gib(freeBytes)} free of ${gib(available.bytes)} available (${available.source}; ${by})${placement}; ` +
      `lower CTX_SIZE, WORKER_CONCURRENCY or REPLICAS, stop another model, or add memory`;
  } else {
    const short = devices.filter((d) => !d.fits);
    message =
      `${worker} does not fit in GPU memory: ${short.map(deviceText).join('; ')}${placement}; ` +
      `lower GPU_LAYERS (or set it to auto), CTX_SIZE, WORKER_CONCURRENCY or REPLICAS, or stop another model`;
  }
  return { fits, need, available, others, freeBytes, ramFits, devices, message };
}
