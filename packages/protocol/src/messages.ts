/**
 * The typed messages of the service's two inner hops:
 *   supervisor <-> model host   (the child process's IPC channel)
 *   model host <-> pool replica (a MessagePort handed to each piscina worker thread)
 * Both ends import these unions; inner hops trust them (public input is validated at the edge).
 * Generation events do not take these hops: each replica writes them to the supervisor over a
 * pipe of its own (`HostSpec.relayFds`, frames of relay-frame.ts). `events` messages remain for
 * what the host itself answers (a grammar refused, a model not serving).
 */
import type { ErrorCode } from './errors.js';
import type { FinishReason, GenerationParams, Timings, TokenLogprob, Usage } from './generation.js';
import type { LogLevel } from './log.js';

/**
 * Wraps each turn in a model's markers (data/models/<name>/prompt_template.json). System
 * turns use the system markers when the file has them, else the user markers.
 */
export interface PromptTemplate {
  name?: string | null;
  systemPrefix?: string | null;
  systemSuffix?: string | null;
  userPrefix: string;
  userSuffix: string;
  modelPrefix: string;
  modelSuffix: string;
}

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** A prompt as clients send it: plain text, or chat turns rendered with the model's template. */
export type GenerateInput = string | ChatMessage[];

/** Everything a model host needs to load and serve one model. */
export interface HostSpec {
  /** Worker name (envs/worker.<name>.env). */
  name: string;
  /** Model name reported to clients (MODEL_NAME). */
  model: string;
  /** Absolute path of the GGUF file. */
  modelPath: string;
  gpuLayers: number | 'auto';
  /** Layers per GPU device and tensors kept in host memory, as llama.cpp's fit chose them (GPU_LAYERS=auto). */
  tensorSplit?: number[];
  cpuTensors?: string[];
  /** Pool threads, one Engine each. */
  replicas: number;
  /** Sequence slots per Engine (WORKER_CONCURRENCY). */
  slots: number;
  contextSize: number;
  /** Tokens per decode step (BATCH_SIZE); 0: the engine's default. */
  batchSize: number;
  /** Copy a prompt prefix another slot holds instead of prefilling it again (PREFIX_SHARING). */
  prefixSharing?: boolean;
  /** Sliding-window layers keep every position (SWA_FULL). */
  swaFull?: boolean;
  /** Host memory (MiB) of each replica's prompt cache (CACHE_RAM over REPLICAS; 0: none). */
  promptCacheMiB?: number;
  threads: number;
  maxQueue: number;
  promptTemplate: PromptTemplate | null;
  /** How long a SIGTERM sent straight to the host lets running requests finish. */
  drainGraceMs: number;
  logLevel: LogLevel;
  /**
   * The host's file descriptors of its relay pipes, one per replica (the supervisor opens them as
   * extra stdio pipes): replica i writes its generation events to relayFds[i].
   */
  relayFds: number[];
  /**
   * The worker's NATS connection settings, when its replicas publish NATS streams' token
   * messages themselves (GenerateRequest.publish; LMSERVE_NATS_DIRECT=off: absent). Each replica
   * keeps a connection of its own.
   */
  nats?: NatsConnectionSettings;
}

/** How to reach a NATS server (a worker's NATS_URL and credentials, parsed). */
export interface NatsConnectionSettings {
  /** `scheme://host:port` of each server, without credentials. */
  servers: string[];
  token: string | null;
  user: string | null;
  password: string | null;
  /** Paths: a creds file (user JWT + nkey seed) and an nkey seed file. */
  creds: string | null;
  nkeySeed: string | null;
  tls: { ca: string | null; cert: string | null; key: string | null } | null;
}

/**
 * A NATS stream's token messages as the model host publishes them itself: each is published to
 * `subject` with these headers and the body `{"id","text","tokens"}`, and the request's `done`
 * (or `error`) is sent to the supervisor only once the NATS server has taken them (a flush), so
 * the supervisor's final message follows them. Used by a replica whose own NATS connection is up
 * (HostSpec.nats); otherwise the tokens are relayed to the supervisor as for any stream.
 */
export interface PublishTarget {
  subject: string;
  headers: Record<string, string>;
}

/**
 * One generation as every transport hands it to a model, and as it crosses both inner hops.
 * Public input is validated once at the edge (the core's parameter table); inner hops trust it.
 */
export interface GenerateRequest {
  /** Created by the core (`<transport>-<uuid>`); unique among the requests in flight. */
  id: string;
  input: GenerateInput;
  params: GenerationParams;
  /** Skip prompt templating: `input` (a string) goes to the model as is. */
  raw: boolean;
  /**
   * Whether the caller wants each decode step's tokens (default true). False (a non-streaming
   * request): no `tokens` events cross the hops; the text crosses once, in `done`.
   */
  stream?: boolean;
  /**
   * A relayed stream's tokens may wait this long after its first ones to leave the engine
   * together (0 … 1000 ms). Absent: the host's LMSERVE_RELAY_INTERVAL_MS.
   */
  eventIntervalMs?: number;
  /**
   * A streamed HTTP response the model host writes itself: the supervisor sends the client's
   * connection with the `generate` message, and the engine's decode thread writes each step to
   * it as an HTTP/1.1 chunk built from this template (DirectTemplate). No `tokens` events cross
   * the hops; `done` carries the text and any bytes the connection had not taken (`tail`).
   * `conn` names the connection for the host: the first stream of a connection brings it along
   * (the message's handle), and the host keeps its descriptor for the connection's later streams
   * until the supervisor sends `release` (the connection closed). `fd` is filled in by the host
   * (its descriptor of the connection).
   */
  direct?: DirectTemplate & { conn?: number; fd?: number };
  /** A streamed NATS request: the replica may publish its token messages itself (PublishTarget). */
  publish?: PublishTarget;
}

/**
 * One chunk's payload is `prefix + JSON.stringify(text) + afterText`, then, when `afterTokens`
 * is given, the step's token ids joined by commas and `afterTokens`. `skipEmpty`: a step whose
 * text is all held back (a possible stop string, partial UTF-8) writes nothing.
 */
export interface DirectTemplate {
  prefix: string;
  afterText: string;
  afterTokens?: string;
  skipEmpty: boolean;
}

/** One device's part of a loaded model, as llama.cpp accounts it (the first replica's context). */
export interface DeviceUsage {
  /** ggml's device name (CUDA0, Metal); CPU for host memory. */
  name: string;
  description: string;
  backend: string;
  modelBytes: number;
  contextBytes: number;
  computeBytes: number;
}

/** How a model host's load went (the `model.loaded` event's data). */
export interface LoadReport {
  seconds: number;
  /** cpu, cuda, metal, vulkan: the backend of the first GPU-like device holding weights, else cpu. */
  backend: string;
  /** The devices holding any of the model or its context (CPU last, when it holds any). */
  devices: string[];
  /** Layers on GPU devices (llama.cpp's count: min(GPU_LAYERS, layers), the fit's choice for auto; 0 on a CPU build). */
  gpuLayers: number;
  /** The model's repeating layers plus its output layer (what GPU_LAYERS counts). */
  layers: number;
  /** What each device holds (llama.cpp's memory breakdown of the loaded model and context). */
  memory?: DeviceUsage[];
}

export interface ModelSummary {
  architecture: string;
  parameterCount: number;
  sizeBytes: number;
  trainedContextLength: number;
  vocabSize: number;
  hasChatTemplate: boolean;
}

/** Load and slot figures of one host (all replicas added up). */
export interface HostStats {
  replicas: number;
  slots: number;
  slotsBusy: number;
  queued: number;
  kvUsedRatio: number;
  tokensGenerated: number;
  /** The host-memory prompt caches (CACHE_RAM), summed over the replicas; absent from older hosts. */
  promptCache?: PromptCacheStats;
  /** The host process itself (added by the host, not by replicas). */
  process?: HostProcessStats;
}

/** What the engines' host-memory prompt caches hold and gave (engine stats promptCache*). */
export interface PromptCacheStats {
  bytes: number;
  entries: number;
  /** Requests that started from a restored state, and the prompt tokens it gave them (since the host started). */
  restores: number;
  tokensRestored: number;
}

/** Resource use of a model host process, sent with its stats. */
export interface HostProcessStats {
  pid: number;
  cpuSecondsTotal: number;
  residentBytes: number;
  heapUsedBytes: number;
  /** Mean event-loop delay since the previous report (sampled every LOOP_LAG_SAMPLE_MS). */
  eventLoopLagSeconds: number;
}

export type GenerationEvent =
  | { type: 'tokens'; id: string; text: string; ids: number[]; logprobs?: TokenLogprob[] }
  | {
      type: 'done';
      id: string;
      /**
       * For a request that did not stream, or streamed directly (GenerateRequest.direct); a
       * relayed stream's text is its `tokens` events joined.
       */
      text?: string;
      finishReason: FinishReason;
      stopString?: string;
      usage: Usage;
      timings: Timings;
      /** A direct stream's chunks the client's connection had not taken: written before anything else. */
      tail?: string;
      /** The model host published the stream's token messages itself (GenerateRequest.publish); `text` then has the whole text. */
      published?: true;
    }
  | { type: 'error'; id: string; code: ErrorCode; message: string; field?: string; tail?: string };

/** supervisor -> host */
export type SupervisorToHost =
  | { type: 'init'; spec: HostSpec }
  | { type: 'generate'; request: GenerateRequest }
  | { type: 'cancel'; id: string }
  /** A direct stream's connection closed in the supervisor: the host closes its descriptor of it (once no stream writes to it). */
  | { type: 'release'; conn: number }
  | { type: 'shutdown'; graceMs: number };

/** host -> supervisor */
export type HostToSupervisor =
  | { type: 'loading'; progress: number }
  | { type: 'ready'; model: ModelSummary; load: LoadReport }
  | { type: 'events'; events: GenerationEvent[] }
  | { type: 'stats'; stats: HostStats }
  /** The host cannot serve (its model failed to load) and is about to exit. */
  | { type: 'fatal'; code: ErrorCode; message: string };

/** host -> replica (pool worker thread) */
export type HostToReplica =
  | { type: 'generate'; request: GenerateRequest }
  | { type: 'cancel'; id: string }
  | { type: 'shutdown'; graceMs: number };

/** replica -> host (generation events go to the supervisor directly, over the relay pipe) */
export type ReplicaToHost =
  | { type: 'loading'; progress: number }
  | { type: 'ready'; model: ModelSummary; load: LoadReport }
  /** Requests that ended (done or error) since the last report: the host's routing counts. */
  | { type: 'ended'; ids: string[] }
  | { type: 'stats'; stats: HostStats };

/** What a replica's piscina task resolves with when the replica ends. */
export type ReplicaExit = { type: 'stopped' } | { type: 'failed'; code: ErrorCode; message: string };

/** Lifecycle of a configured model worker, as the supervisor reports it. */
export type WorkerState =
  | 'stopped'
  | 'starting'
  | 'ready'
  | 'stopping'
  | 'restarting'
  | 'failed'
  | 'model-missing'
  | 'downloading'
  | 'invalid-config';

/**
 * How often the supervisor's and the hosts' event-loop lag histograms sample. Each sample is a
 * timer wake-up of the process, and on a machine whose cores the decode threads fill each wake-up
 * preempts one (a bare Node process with a 100 ms timer uses 1.6-2.6 ms of CPU a second on the
 * 2-core VM, 0.1 without): once a second keeps the figure and costs a tenth.
 */
export const LOOP_LAG_SAMPLE_MS = 1000;
