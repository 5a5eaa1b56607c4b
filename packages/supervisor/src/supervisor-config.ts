/**
 * The supervisor's settings: the gateway/admin address, the admin token, timings of restarts and
 * drains. A process environment variable of the same name overrides envs/supervisor.env, which
 * overrides the built-in default (so a container or a systemd unit needs no file of its own).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isLogLevel, type LogLevel } from '@lmserve/protocol';
import { isLoopback, parseListenAddress, type ListenAddress } from '@lmserve/http';
import { ConfigReader, environmentLayer, fileLayer, type Environment } from './config-values.js';
import { parseEnvFile } from './env-file.js';
import type { ServicePaths } from './service-paths.js';

/** NATS settings of supervisor.env that are every worker's default (NATS_URL aside). */
export const SUPERVISOR_NATS_KEYS = [
  'NATS_TOKEN',
  'NATS_USER',
  'NATS_PASSWORD',
  'NATS_CREDS',
  'NATS_NKEY_SEED',
  'NATS_TLS_CA',
  'NATS_TLS_CERT',
  'NATS_TLS_KEY',
] as const;
export type SupervisorNatsKey = (typeof SUPERVISOR_NATS_KEYS)[number];

export const SUPERVISOR_KEYS = [
  'GATEWAY_ADDR',
  'ADMIN_TOKEN',
  'API_KEY',
  'LOG_LEVEL',
  'NATS_URL',
  ...SUPERVISOR_NATS_KEYS,
  'SHUTDOWN_GRACE_MS',
  'RESTART_BACKOFF_MS',
  'RESTART_BACKOFF_MAX_MS',
  'AUDIT',
  'LOG_BODIES',
  'LOG_RETENTION_DAYS',
  'LOG_MAX_ROWS',
  'METRICS',
  'GRAMMARS_DB',
] as const;

/** URL schemes a NATS_URL may have (the supervisor's and every worker's). */
export const NATS_PROTOCOLS = ['nats:', 'tls:', 'ws:', 'wss:'] as const;

export interface SupervisorConfig {
  file: string;
  gatewayAddr: ListenAddress;
  /** From ADMIN_TOKEN, else generated at start and written to <data>/run/admin.token. */
  adminToken: string;
  adminTokenGenerated: boolean;
  /** The gateway-wide API key of the OpenAI and Ollama routes on GATEWAY_ADDR (null: each model's own API_KEY only). */
  apiKey: string | null;
  logLevel: LogLevel;
  natsUrl: string | null;
  /** The other NATS keys, as set (workers check them: files must exist, TLS cert and key go together). */
  nats: Record<SupervisorNatsKey, string | null>;
  /** How long stop/restart/shutdown let in-flight requests finish before cancelling them. */
  shutdownGraceMs: number;
  restartBackoffMs: number;
  restartBackoffMaxMs: number;
  /** Record every request and event in each worker's SQLite file (DB_PATH). */
  audit: boolean;
  /** Store input and output text in the audit trail (off: NULL). */
  logBodies: boolean;
  /** Audit rows older than this are pruned in the background. */
  logRetentionDays: number;
  /** At most this many rows per table and worker (the oldest go first). */
  logMaxRows: number;
  /** Prometheus metrics on every model port and the gateway (GET /metrics). */
  metrics: boolean;
  /** The service's grammar library (one SQLite file shared by every model). */
  grammarsDb: string;
  /** Keys in the file that are not configuration keys (reported as warnings). */
  unknownKeys: string[];
  /** Environment variables that set a value (they win over the file). */
  environmentOverrides: string[];
}

export function adminTokenFile(paths: ServicePaths): string {
  return join(paths.dataDir, 'run', 'admin.token');
}

/**
 * Reads envs/supervisor.env under the variables of `env` named like its keys. Throws LmError
 * naming the key and where its value came from (the file, or the environment variable).
 */
export function loadSupervisorConfig(paths: ServicePaths, env: Environment = process.env): SupervisorConfig {
  const file = join(paths.envsDir, 'supervisor.env');
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const r: ConfigReader = new ConfigReader([environmentLayer(env), fileLayer(file, parseEnvFile(text, file))]);
  let gatewayAddr: ListenAddress;
  try {
    gatewayAddr = parseListenAddress(r.string('GATEWAY_ADDR', '127.0.0.1:5760'), 'GATEWAY_ADDR');
  } catch {
    r.fail('GATEWAY_ADDR', 'must be host:port');
  }
  const token = r.string('ADMIN_TOKEN', '');
  if (token === '' && !isLoopback(gatewayAddr.host)) {
    r.fail('ADMIN_TOKEN', 'must be set when GATEWAY_ADDR is not a loopback address');
  }
  const logLevel = r.string('LOG_LEVEL', 'info');
  if (!isLogLevel(logLevel)) r.fail('LOG_LEVEL', 'must be debug, info, warn or error');
  return {
    file,
    gatewayAddr,
    adminToken: token || randomBytes(24).toString('base64url'),
    adminTokenGenerated: token === '',
    apiKey: r.string('API_KEY', '') || null,
    logLevel,
    natsUrl: r.urlList('NATS_URL', NATS_PROTOCOLS),
    nats: Object.fromEntries(SUPERVISOR_NATS_KEYS.map((key) => [key, r.string(key, '') || null])) as Record<SupervisorNatsKey, string | null>,
    shutdownGraceMs: r.int('SHUTDOWN_GRACE_MS', 10_000, 0, 3_600_000),
    restartBackoffMs: r.int('RESTART_BACKOFF_MS', 500, 10, 600_000),
    restartBackoffMaxMs: r.int('RESTART_BACKOFF_MAX_MS', 30_000, 10, 3_600_000),
    audit: r.choice('AUDIT', 'on', ['on', 'off'] as const) === 'on',
    logBodies: r.choice('LOG_BODIES', 'on', ['on', 'off'] as const) === 'on',
    logRetentionDays: r.int('LOG_RETENTION_DAYS', 30, 1, 36_500),
    logMaxRows: r.int('LOG_MAX_ROWS', 1_000_000, 1000, 1_000_000_000),
    metrics: r.choice('METRICS', 'on', ['on', 'off'] as const) === 'on',
    grammarsDb: resolve(paths.root, r.string('GRAMMARS_DB', join(paths.dataDir, 'grammars.sqlite'))),
    unknownKeys: r.unknownKeys(SUPERVISOR_KEYS),
    // Last: it lists what the reads above took from the environment.
    environmentOverrides: r.environmentOverrides(),
  };
}

/** Lets the CLI on this machine find a generated token (owner-only file). */
export function writeAdminToken(paths: ServicePaths, token: string): string {
  const file = adminTokenFile(paths);
  mkdirSync(join(paths.dataDir, 'run'), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return file;
}
