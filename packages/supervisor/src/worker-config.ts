/**
 * One model worker's configuration: envs/worker.<name>.env plus the optional
 * <data>/models/<MODEL_NAME>/prompt_template.json. Every key has a default.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LmError, toLmError, type HostSpec, type PromptTemplate } from '@lmserve/protocol';
import { parseListenAddress, type ListenAddress } from '@lmserve/http';
import { ConfigReader } from './config-values.js';
import { parseEnvFile } from './env-file.js';
import type { ServicePaths } from './service-paths.js';

export const WORKER_KEYS = [
  'MODEL_NAME',
  'MODEL_PATH',
  'MODEL_URL',
  'MODEL_SHA256',
  'HTTP_ADDR',
  'SUBJECT',
  'WORKER_CONCURRENCY',
  'REPLICAS',
  'MODEL_THREADS',
  'CTX_SIZE',
  'BATCH_SIZE',
  'GPU_LAYERS',
  'DB_PATH',
  'NATS_URL',
  'JETSTREAM',
  'MAX_QUEUE',
  'API_KEY',
] as const;

export interface WorkerConfig {
  /** From the file name: envs/worker.<name>.env. */
  name: string;
  file: string;
  modelName: string;
  modelPath: string;
  modelUrl: string | null;
  modelSha256: string | null;
  httpAddr: ListenAddress;
  subject: string;
  concurrency: number;
  replicas: number;
  threads: number;
  contextSize: number;
  /** Tokens per decode step (n_batch = n_ubatch); 0: the engine's default, max(512, WORKER_CONCURRENCY). */
  batchSize: number;
  gpuLayers: number | 'auto';
  dbPath: string;
  natsUrl: string | null;
  jetstream: boolean;
  maxQueue: number;
  apiKey: string | null;
  promptTemplate: PromptTemplate | null;
  /** Keys in the file that are not configuration keys (reported as warnings). */
  unknownKeys: string[];
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
  const keys = ['user_prefix', 'user_suffix', 'model_prefix', 'model_suffix'] as const;
  const obj = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  for (const key of keys) {
    if (obj[key] !== undefined && typeof obj[key] !== 'string') {
      throw new LmError('INVALID_REQUEST', `invalid ${key} in ${file}: must be a string`, { field: key });
    }
  }
  const get = (key: (typeof keys)[number]) => (obj[key] as string | undefined) ?? '';
  return {
    userPrefix: get('user_prefix'),
    userSuffix: get('user_suffix'),
    modelPrefix: get('model_prefix'),
    modelSuffix: get('model_suffix'),
  };
}

export function parseWorkerConfig(name: string, file: string, text: string, paths: ServicePaths): WorkerConfig {
  const r: ConfigReader = new ConfigReader(file, parseEnvFile(text, file));
  const modelName = r.matching('MODEL_NAME', name, /^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'must be letters, digits, . _ : -');
  let httpAddr: ListenAddress;
  try {
    httpAddr = parseListenAddress(r.string('HTTP_ADDR', '127.0.0.1:0'), 'HTTP_ADDR');
  } catch {
    r.fail('HTTP_ADDR', 'must be host:port');
  }
  const gpuRaw = r.string('GPU_LAYERS', 'auto').toLowerCase();
  if (gpuRaw !== 'auto' && !/^\d+$/.test(gpuRaw)) r.fail('GPU_LAYERS', 'must be auto or a number of layers (0 = CPU only)');
  const gpuLayers = gpuRaw === 'auto' ? 'auto' : r.int('GPU_LAYERS', 0, 0, 100000);
  const sha = r.matching('MODEL_SHA256', '-', /^(-|[0-9a-fA-F]{64})$/, 'must be 64 hex digits');
  return {
    name,
    file,
    modelName,
    modelPath: resolve(paths.root, r.string('MODEL_PATH', `data/models/${name}/model.gguf`)),
    modelUrl: r.url('MODEL_URL', ['http:', 'https:']),
    modelSha256: sha === '-' ? null : sha.toLowerCase(),
    httpAddr,
    subject: r.matching('SUBJECT', `inference.request.${name}`, /^[^\s*>]+$/, 'must be a NATS subject without wildcards'),
    concurrency: r.int('WORKER_CONCURRENCY', 4, 1, 256),
    replicas: r.int('REPLICAS', 1, 1, 64),
    threads: r.int('MODEL_THREADS', 0, 0, 1024),
    contextSize: r.int('CTX_SIZE', 4096, 64, 1 << 24),
    batchSize: r.int('BATCH_SIZE', 0, 0, 1 << 20),
    gpuLayers,
    dbPath: resolve(paths.root, r.string('DB_PATH', join(paths.dataDir, 'logs', `${name}.sqlite`))),
    natsUrl: r.url('NATS_URL', ['nats:', 'tls:', 'ws:', 'wss:']),
    jetstream: r.choice('JETSTREAM', 'off', ['on', 'off'] as const) === 'on',
    maxQueue: r.int('MAX_QUEUE', 64, 0, 1_000_000),
    apiKey: r.string('API_KEY', '') || null,
    promptTemplate: readPromptTemplate(join(paths.dataDir, 'models', modelName, 'prompt_template.json')),
    unknownKeys: r.unknownKeys(WORKER_KEYS),
  };
}

export function loadWorkerConfig(name: string, file: string, paths: ServicePaths): WorkerConfig | WorkerConfigError {
  try {
    return parseWorkerConfig(name, file, readFileSync(file, 'utf8'), paths);
  } catch (err) {
    return { name, file, error: toLmError(err, 'INVALID_REQUEST') };
  }
}

export function isConfigError(value: WorkerConfig | WorkerConfigError): value is WorkerConfigError {
  return 'error' in value;
}

export function hostSpec(config: WorkerConfig, drainGraceMs: number): HostSpec {
  return {
    name: config.name,
    model: config.modelName,
    modelPath: config.modelPath,
    gpuLayers: config.gpuLayers,
    replicas: config.replicas,
    slots: config.concurrency,
    contextSize: config.contextSize,
    batchSize: config.batchSize,
    threads: config.threads,
    maxQueue: config.maxQueue,
    promptTemplate: config.promptTemplate,
    drainGraceMs,
  };
}
