/**
 * One model worker's configuration: envs/worker.<name>.env plus the optional
 * <data>/models/<MODEL_NAME>/prompt_template.json. Every key has a default. A key is read, first
 * match wins, from the environment variable LMSERVE_<WORKER>_<KEY>, the worker's file, what the
 * supervisor hands down (its NATS_URL), and the built-in default. Workers are still found by their
 * files: an environment variable alone does not make a worker.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { LmError, toLmError, type PromptTemplate } from '@lmserve/protocol';
import { MAX_GRAMMAR_BYTES, MAX_MESSAGES, MAX_STOP_LENGTH, MAX_STOP_STRINGS, type JobsSettings } from '@lmserve/core';
import { parseListenAddress, type ListenAddress } from '@lmserve/http';
import { ConfigReader, environmentLayer, fileLayer, valuesLayer, type Environment } from './config-values.js';
import { parseEnvFile } from './env-file.js';
import { JOBS_KEYS, jobsSettings } from './jobs-config.js';
import type { ServicePaths } from './service-paths.js';
import { NATS_PROTOCOLS, SUPERVISOR_NATS_KEYS, type SupervisorNatsKey } from './supervisor-config.js';

export const WORKER_KEYS = [
  'MODEL_NAME',
  'MODEL_PATH',
  'MODEL_URL',
  'MODEL_SHA256',
  'DOWNLOAD_STALL_MS',
  'DOWNLOAD_RETRIES',
  'DOWNLOAD_BACKOFF_MS',
  'HTTP_ADDR',
  'SUBJECT',
  'WORKER_CONCURRENCY',
  'REPLICAS',
  'MODEL_THREADS',
  'CTX_SIZE',
  'BATCH_SIZE',
  'PREFIX_SHARING',
  'SWA_FULL',
  'CACHE_RAM',
  'GPU_LAYERS',
  'DB_PATH',
  'NATS_URL',
  ...SUPERVISOR_NATS_KEYS,
  'NATS_QUEUE',
  'JETSTREAM',
  ...JOBS_KEYS,
  'MAX_QUEUE',
  'REQUEST_TIMEOUT_MS',
  'MAX_TOKENS',
  'MAX_BODY_BYTES',
  'MAX_STOP_STRINGS',
  'MAX_STOP_LENGTH',
  'MAX_MESSAGES',
  'MAX_GRAMMAR_BYTES',
  'API_KEY',
  'LOG_BODIES',
] as const;

export interface WorkerConfig {
  /** From the file name: envs/worker.<name>.env. */
  name: string;
  file: string;
  modelName: string;
  modelPath: string;
  modelUrl: string | null;
  modelSha256: string | null;
  /** A download that receives nothing for this long is retried (DOWNLOAD_STALL_MS, default 30000). */
  downloadStallMs: number;
  /** Failed download attempts in a row before the worker fails (DOWNLOAD_RETRIES, default 5). */
  downloadRetries: number;
  /** First retry delay, doubling up to 30 s (DOWNLOAD_BACKOFF_MS, default 1000). */
  downloadBackoffMs: number;
  httpAddr: ListenAddress;
  subject: string;
  concurrency: number;
  replicas: number;
  threads: number;
  contextSize: number;
  /** Tokens per decode step (n_batch = n_ubatch); 0: the engine's default, max(512, WORKER_CONCURRENCY). */
  batchSize: number;
  /** A prompt prefix held by one slot serves a new request in another (PREFIX_SHARING, default on). */
  prefixSharing: boolean;
  /**
   * Host memory (MiB) for saved prompt states, split between the replicas (CACHE_RAM, as
   * llama-server's --cache-ram; 0: none; default auto: an eighth of the machine's memory or of the
   * container's limit, at most 8192, llama-server's default).
   */
  cacheRamMiB: number;
  /**
   * Sliding-window models (gemma 2/3, gpt-oss, ...): their window layers keep every position
   * (SWA_FULL=on) instead of the window plus a batch per sequence (off, the default, as llama-server).
   */
  swaFull: boolean;
  gpuLayers: number | 'auto';
  dbPath: string;
  /** NATS servers, comma-separated (null: no NATS for this worker). */
  natsUrl: string | null;
  natsToken: string | null;
  natsUser: string | null;
  natsPassword: string | null;
  /** Absolute paths of files that existed when the configuration was read. */
  natsCreds: string | null;
  natsNkeySeed: string | null;
  natsTlsCa: string | null;
  natsTlsCert: string | null;
  natsTlsKey: string | null;
  /** Queue group of the request/reply subscription (default `lmserve.<SUBJECT>`). */
  natsQueue: string;
  /** Store input and output text in this worker's audit trail (default: the supervisor's LOG_BODIES). */
  logBodies: boolean;
  jetstream: boolean;
  /** JOBS_* and RESULTS_*: the JetStream job runner's streams, subjects and limits. */
  jobs: JobsSettings;
  maxQueue: number;
  /** REQUEST_TIMEOUT_MS: a request still running after this long ends with TIMEOUT (0: never). */
  requestTimeoutMs: number;
  /** MAX_TOKENS: the most tokens a request may ask for, and what it gets when it asks for none (0: up to the context). */
  maxTokens: number;
  /** MAX_BODY_BYTES: the largest request body the model port reads (413 above). */
  maxBodyBytes: number;
  /** MAX_STOP_STRINGS, MAX_STOP_LENGTH, MAX_MESSAGES, MAX_GRAMMAR_BYTES: lower than the built-in limits, never higher. */
  maxStopStrings: number;
  maxStopLength: number;
  maxMessages: number;
  maxGrammarBytes: number;
  apiKey: string | null;
  promptTemplate: PromptTemplate | null;
  /** Keys in the file that are not configuration keys (reported as warnings). */
  unknownKeys: string[];
  /** LMSERVE_<WORKER>_<KEY> variables that set a value (they win over the file). */
  environmentOverrides: string[];
}

/** What the supervisor hands every worker for the keys the worker does not set itself. */
export interface WorkerDefaults {
  /** The supervisor's NATS_URL (from supervisor.env or the environment). */
  natsUrl: string | null;
  /** The supervisor's NATS_TOKEN, NATS_USER, NATS_PASSWORD, NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_*. */
  nats?: Partial<Record<SupervisorNatsKey, string | null>>;
  /** The supervisor's LOG_BODIES (on|off); null: on. */
  logBodies?: 'on' | 'off' | null;
  /** The workers the supervisor runs (its worker files): CACHE_RAM=auto shares one budget among them. */
  workers?: number;
}

const NO_DEFAULTS: WorkerDefaults = { natsUrl: null };

/**
 * The memory this process may use: the machine's, or less where a cgroup (a container's memory
 * limit) constrains it (process.constrainedMemory: undefined or 0 when there is no limit, a huge
 * number when the limit is "max").
 */
export function usableMemoryBytes(): number {
  const machine = totalmem();
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  return constrained && constrained > 0 && constrained < machine ? constrained : machine;
}

/**
 * CACHE_RAM=auto: an eighth of the memory (the container's limit if lower), at most llama-server's
 * default 8192 MiB, for the whole service: each of its `workers` gets an equal share, so several
 * models on one machine do not each take an eighth.
 */
export function defaultCacheRamMiB(totalBytes = usableMemoryBytes(), workers = 1): number {
  return Math.floor(Math.min(8192, Math.floor(totalBytes / (8 * 1024 * 1024))) / Math.max(1, workers));
}

/**
 * `LMSERVE_<WORKER>_`: the worker's name upper-cased, every character other than A-Z and 0-9
 * turned into `_` (environment variable names cannot hold `-` or `.` portably). Worker
 * `qwen3-4b`, key CTX_SIZE: LMSERVE_QWEN3_4B_CTX_SIZE.
 */
export function workerEnvPrefix(name: string): string {
  return `LMSERVE_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_`;
}

/** A worker file that could not be read: the worker exists (so it can be listed) but cannot start. */
export interface WorkerConfigError {
  name: string;
  file: string;
  error: LmError;
}

const WORKER_FILE = /^worker\.([A-Za-z0-9][A-Za-z0-9._-]*)\.env$/;

export function workerFiles(envsDir: string): Array<{ name: string; file: string }> {
  if (!existsSync(envsDir)) return [];
  return readdirSync(envsDir)
    .map((entry) => ({ entry, match: WORKER_FILE.exec(entry) }))
    .filter((x) => x.match)
    .map(({ entry, match }) => ({ name: (match as RegExpExecArray)[1] as string, file: join(envsDir, entry) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function readPromptTemplate(file: string): PromptTemplate | null {
  if (!existsSync(file)) return null;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new LmError('INVALID_REQUEST', `${file} is not valid JSON: ${(err as Error).message}`, { field: file });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new LmError('INVALID_REQUEST', `${file} must hold a JSON object`, { field: file });
  }
  // The original format (name, user_/model_ prefix and suffix) plus optional system markers.
  const keys = ['name', 'system_prefix', 'system_suffix', 'user_prefix', 'user_suffix', 'model_prefix', 'model_suffix'] as const;
  const obj = json as Record<string, unknown>;
  for (const key of keys) {
    if (obj[key] !== undefined && obj[key] !== null && typeof obj[key] !== 'string') {
      throw new LmError('INVALID_REQUEST', `invalid ${key} in ${file}: must be a string`, { field: key });
    }
  }
  const optional = (key: (typeof keys)[number]) => (typeof obj[key] === 'string' ? (obj[key] as string) : null);
  const get = (key: (typeof keys)[number]) => optional(key) ?? '';
  return {
    name: optional('name'),
    systemPrefix: optional('system_prefix'),
    systemSuffix: optional('system_suffix'),
    userPrefix: get('user_prefix'),
    userSuffix: get('user_suffix'),
    modelPrefix: get('model_prefix'),
    modelSuffix: get('model_suffix'),
  };
}

/** `text` is the content of `file`; throws LmError naming the key and where its value came from. */
export function parseWorkerConfig(
  name: string,
  file: string,
  text: string,
  paths: ServicePaths,
  defaults: WorkerDefaults = NO_DEFAULTS,
  env: Environment = process.env,
): WorkerConfig {
  const r: ConfigReader = new ConfigReader([
    environmentLayer(env, workerEnvPrefix(name)),
    fileLayer(file, parseEnvFile(text, file)),
    valuesLayer({ NATS_URL: defaults.natsUrl }, "the supervisor's NATS_URL"),
    ...SUPERVISOR_NATS_KEYS.map((key) => valuesLayer({ [key]: defaults.nats?.[key] ?? null }, `the supervisor's ${key}`)),
    valuesLayer({ LOG_BODIES: defaults.logBodies ?? null }, "the supervisor's LOG_BODIES"),
  ]);
  const modelName = r.matching('MODEL_NAME', name, /^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'must be letters, digits, . _ : -');
  let httpAddr: ListenAddress;
  try {
    httpAddr = parseListenAddress(r.string('HTTP_ADDR', '127.0.0.1:0'), 'HTTP_ADDR');
  } catch {
    r.fail('HTTP_ADDR', 'must be host:port');
  }
  const gpuLayers = r.autoOrInt('GPU_LAYERS', 0, 100000, 'must be auto or a number of layers (0 = CPU only)');
  const cacheRam = r.autoOrInt('CACHE_RAM', 0, 1 << 24, 'must be auto or MiB of host memory (0 = no prompt cache)');
  const cacheRamMiB = cacheRam === 'auto' ? defaultCacheRamMiB(usableMemoryBytes(), defaults.workers) : cacheRam;
  const subject = r.matching('SUBJECT', `inference.request.${name}`, NATS_SUBJECT, 'must be a NATS subject without wildcards');
  const sha = r.matching('MODEL_SHA256', '-', /^(-|[0-9a-fA-F]{64})$/, 'must be 64 hex digits');
  const concurrency = r.int('WORKER_CONCURRENCY', 4, 1, 256);
  const replicas = r.int('REPLICAS', 1, 1, 64);
  const maxQueue = r.int('MAX_QUEUE', 64, 0, 1_000_000);
  return {
    name,
    file,
    modelName,
    modelPath: resolve(paths.root, r.string('MODEL_PATH', `data/models/${name}/model.gguf`)),
    modelUrl: r.url('MODEL_URL', ['http:', 'https:']),
    modelSha256: sha === '-' ? null : sha.toLowerCase(),
    downloadStallMs: r.int('DOWNLOAD_STALL_MS', 30_000, 100, 3_600_000),
    downloadRetries: r.int('DOWNLOAD_RETRIES', 5, 0, 1000),
    downloadBackoffMs: r.int('DOWNLOAD_BACKOFF_MS', 1000, 0, 600_000),
    httpAddr,
    subject,
    concurrency,
    replicas,
    threads: r.int('MODEL_THREADS', 0, 0, 1024),
    contextSize: r.int('CTX_SIZE', 4096, 64, 1 << 24),
    batchSize: r.int('BATCH_SIZE', 0, 0, 1 << 20),
    prefixSharing: r.choice('PREFIX_SHARING', 'on', ['on', 'off'] as const) === 'on',
    swaFull: r.choice('SWA_FULL', 'off', ['on', 'off'] as const) === 'on',
    cacheRamMiB,
    gpuLayers,
    dbPath: resolve(paths.root, r.string('DB_PATH', join(paths.dataDir, 'logs', `${name}.sqlite`))),
    ...natsSettings(r, subject, paths.root),
    logBodies: r.choice('LOG_BODIES', 'on', ['on', 'off'] as const) === 'on',
    jetstream: r.choice('JETSTREAM', 'off', ['on', 'off'] as const) === 'on',
    jobs: jobsSettings(r, name, concurrency * replicas, maxQueue),
    maxQueue,
    requestTimeoutMs: r.int('REQUEST_TIMEOUT_MS', 600_000, 0, 2 ** 31 - 1),
    maxTokens: r.int('MAX_TOKENS', 0, 0, 2 ** 30),
    maxBodyBytes: r.int('MAX_BODY_BYTES', 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxStopStrings: r.int('MAX_STOP_STRINGS', MAX_STOP_STRINGS, 0, MAX_STOP_STRINGS),
    maxStopLength: r.int('MAX_STOP_LENGTH', MAX_STOP_LENGTH, 1, MAX_STOP_LENGTH),
    maxMessages: r.int('MAX_MESSAGES', MAX_MESSAGES, 1, MAX_MESSAGES),
    maxGrammarBytes: r.int('MAX_GRAMMAR_BYTES', MAX_GRAMMAR_BYTES, 16, MAX_GRAMMAR_BYTES),
    apiKey: r.string('API_KEY', '') || null,
    promptTemplate: readPromptTemplate(join(paths.dataDir, 'models', modelName, 'prompt_template.json')),
    unknownKeys: r.unknownKeys(WORKER_KEYS),
    // Last: it lists what the reads above took from the environment.
    environmentOverrides: r.environmentOverrides(),
  };
}

/** Tokens of printable characters without wildcards, separated by single dots. */
const NATS_SUBJECT = /^[^\s.*>]+(\.[^\s.*>]+)*$/;

/** The NATS_* keys: servers, credentials (files must exist), TLS files, the queue group. */
function natsSettings(r: ConfigReader, subject: string, root: string) {
  const settings = {
    natsUrl: r.urlList('NATS_URL', NATS_PROTOCOLS),
    natsToken: r.string('NATS_TOKEN', '') || null,
    natsUser: r.string('NATS_USER', '') || null,
    natsPassword: r.string('NATS_PASSWORD', '') || null,
    natsCreds: r.existingFile('NATS_CREDS', root),
    natsNkeySeed: r.existingFile('NATS_NKEY_SEED', root),
    natsTlsCa: r.existingFile('NATS_TLS_CA', root),
    natsTlsCert: r.existingFile('NATS_TLS_CERT', root),
    natsTlsKey: r.existingFile('NATS_TLS_KEY', root),
    natsQueue: r.matching('NATS_QUEUE', `lmserve.${subject}`, NATS_SUBJECT, 'must be a queue group name: dot-separated tokens without spaces or wildcards'),
  };
  if (settings.natsPassword !== null && settings.natsUser === null) r.fail('NATS_PASSWORD', 'needs NATS_USER', () => '***');
  if ((settings.natsTlsCert === null) !== (settings.natsTlsKey === null)) {
    r.fail(settings.natsTlsCert === null ? 'NATS_TLS_KEY' : 'NATS_TLS_CERT', 'NATS_TLS_CERT and NATS_TLS_KEY go together (the client certificate and its key)');
  }
  return settings;
}

export function loadWorkerConfig(
  name: string,
  file: string,
  paths: ServicePaths,
  defaults: WorkerDefaults = NO_DEFAULTS,
  env: Environment = process.env,
): WorkerConfig | WorkerConfigError {
  try {
    return parseWorkerConfig(name, file, readFileSync(file, 'utf8'), paths, defaults, env);
  } catch (err) {
    return { name, file, error: toLmError(err, 'INVALID_REQUEST') };
  }
}

export function isConfigError(value: WorkerConfig | WorkerConfigError): value is WorkerConfigError {
  return 'error' in value;
}
