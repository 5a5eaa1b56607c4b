/** envs/supervisor.env: the gateway/admin address, the admin token, timings of restarts and drains. */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isLogLevel, type LogLevel } from '@lmserve/protocol';
import { isLoopback, parseListenAddress, type ListenAddress } from '@lmserve/http';
import { ConfigReader } from './config-values.js';
import { parseEnvFile } from './env-file.js';
import type { ServicePaths } from './service-paths.js';

export const SUPERVISOR_KEYS = [
  'GATEWAY_ADDR',
  'ADMIN_TOKEN',
  'LOG_LEVEL',
  'NATS_URL',
  'SHUTDOWN_GRACE_MS',
  'RESTART_BACKOFF_MS',
  'RESTART_BACKOFF_MAX_MS',
] as const;

export interface SupervisorConfig {
  file: string;
  gatewayAddr: ListenAddress;
  /** From ADMIN_TOKEN, else generated at start and written to <data>/run/admin.token. */
  adminToken: string;
  adminTokenGenerated: boolean;
  logLevel: LogLevel;
  natsUrl: string | null;
  /** How long stop/restart/shutdown let in-flight requests finish before cancelling them. */
  shutdownGraceMs: number;
  restartBackoffMs: number;
  restartBackoffMaxMs: number;
  unknownKeys: string[];
}

export function adminTokenFile(paths: ServicePaths): string {
  return join(paths.dataDir, 'run', 'admin.token');
}

/** Throws LmError naming the key and the file on a bad value. */
export function loadSupervisorConfig(paths: ServicePaths): SupervisorConfig {
  const file = join(paths.envsDir, 'supervisor.env');
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const r: ConfigReader = new ConfigReader(file, parseEnvFile(text, file));
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
    logLevel,
    natsUrl: r.url('NATS_URL', ['nats:', 'tls:', 'ws:', 'wss:']),
    shutdownGraceMs: r.int('SHUTDOWN_GRACE_MS', 10_000, 0, 3_600_000),
    restartBackoffMs: r.int('RESTART_BACKOFF_MS', 500, 10, 600_000),
    restartBackoffMaxMs: r.int('RESTART_BACKOFF_MAX_MS', 30_000, 10, 3_600_000),
    unknownKeys: r.unknownKeys(SUPERVISOR_KEYS),
  };
}

/** Lets the CLI on this machine find a generated token (owner-only file). */
export function writeAdminToken(paths: ServicePaths, token: string): string {
  const file = adminTokenFile(paths);
  mkdirSync(join(paths.dataDir, 'run'), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return file;
}
