/** Wire shapes of the supervisor's admin REST (/admin), shared by the server and the CLI. */
import type { WorkerState } from './messages.js';

export interface WorkerInfo {
  name: string;
  model: string;
  state: WorkerState;
  /** Why the worker is not serving (config error, load failure with the host's last stderr lines). */
  reason: string | null;
  config_file: string;
  pid: number | null;
  address: string | null;
  port: number | null;
  slots: { busy: number; total: number };
  queue: number;
  in_flight: number;
  /** Seconds since the current host became ready; null when not ready. */
  uptime_s: number | null;
  restarts: number;
  /**
   * Requests that ended, by outcome; `direct`: streams (of any outcome) whose tokens the model
   * host wrote to the client's connection itself, and NATS streams that completed with the model
   * host publishing their token messages itself, instead of relaying them through the supervisor.
   */
  requests: { done: number; cancelled: number; failed: number; direct: number };
  /**
   * Each transport's state for this worker, by transport name (`nats`: connected, server, subject,
   * queue; `jobs`: connected, pending); a transport that reports nothing (HTTP) is absent.
   */
  transports: Record<string, { connected: boolean; [key: string]: unknown }>;
  /** The model file's download while one runs (state `downloading`) or after it failed; else null. */
  download?: DownloadInfo | null;
  /**
   * The host-memory prompt cache (CACHE_RAM): its budget, what it holds now, and the requests that
   * started from a restored state and the prompt tokens it gave them since the host started; null
   * while no host reported it.
   */
  prompt_cache?: { budget_mib: number; bytes: number; entries: number; restores: number; tokens_restored: number } | null;
  /** The last fit-before-load check: what the model needs against the memory free for it. */
  memory?: MemoryFitInfo | null;
  /** How the running host loaded the model (backend, devices, layers on the GPU); null when none is loaded. */
  load?: {
    backend: string;
    devices: string[];
    gpu_layers: number;
    layers: number;
    seconds: number;
    /** Per device, what the model and the first replica's context hold (llama.cpp's memory breakdown). */
    memory?: Array<{ name: string; description: string; backend: string; model_bytes: number; context_bytes: number; compute_bytes: number }>;
  } | null;
}

/** Fit before load: the estimate, the memory it was compared with, and who holds the rest. */
export interface MemoryFitInfo {
  fits: boolean;
  needed_bytes: number;
  weights_bytes: number;
  kv_cache_bytes: number;
  compute_bytes: number;
  /** What the machine (or its cgroup, or LMSERVE_MEMORY_AVAILABLE) has available. */
  available_bytes: number;
  available_source: string;
  /** available_bytes less what the supervisor's other models hold or are loading. */
  free_bytes: number;
  held_by: Array<{ worker: string; state: WorkerState; bytes: number }>;
  /** 'llama.cpp': its own sizing of every buffer (a no_alloc load); 'estimate': the GGUF header's arithmetic. */
  source: 'llama.cpp' | 'estimate';
  /** Each GPU-like device the model uses: what it needs there and what is free (none on a CPU build). */
  devices: Array<{
    name: string;
    description: string;
    backend: string;
    fits: boolean;
    needed_bytes: number;
    weights_bytes: number;
    kv_cache_bytes: number;
    compute_bytes: number;
    free_bytes: number;
    total_bytes: number;
    /** Taken by other workers of this supervisor that are loading. */
    held_bytes: number;
  }>;
  /** Where the layers go: GPU_LAYERS, or llama.cpp's fit for auto ('off' when no fit ran). */
  placement: { gpu_layers: number; layers: number; fit: 'off' | 'success' | 'failure'; tensor_split: number[]; cpu_tensors: string[] } | null;
}

/** A model download as /admin/workers and /readyz show it. */
export interface DownloadInfo {
  url: string;
  /** MODEL_PATH; the bytes go to `<path>.part` until the file is whole and verified. */
  path: string;
  bytes: number;
  /** The file's size; null while the server has not said. */
  total_bytes: number | null;
  /** 0-100 with one decimal; null while the size is unknown. */
  percent: number | null;
  bytes_per_second: number;
  eta_s: number | null;
  /** Bytes already on disk when the current attempt began (a resumed download). */
  resumed_from: number;
  attempt: number;
  /** Another worker started this download (same MODEL_PATH) and this one waits on it. */
  shared: boolean;
  /** Why it failed, when it did. */
  error: string | null;
}

export interface SupervisorStatus {
  pid: number;
  uptime_s: number;
  gateway: string;
  envs_dir: string;
  workers: Array<Pick<WorkerInfo, 'name' | 'state' | 'port'>>;
}
