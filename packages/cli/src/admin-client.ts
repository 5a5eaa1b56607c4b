/** Talks to a running supervisor through its admin REST, with the token from envs/supervisor.env. */
import { existsSync, readFileSync } from 'node:fs';
import { LmError, isErrorCode, type SupervisorStatus, type WorkerInfo } from '@lmserve/protocol';
import { adminTokenFile, loadSupervisorConfig, type ServicePaths } from '@lmserve/supervisor';

/** A host to connect to for an address a server listens on (wildcards mean this machine). */
export function connectHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

export class AdminClient {
  readonly baseUrl: string;
  readonly #token: string;

  constructor(baseUrl: string, token: string) {
    this.baseUrl = baseUrl;
    this.#token = token;
  }

  static fromConfig(paths: ServicePaths): AdminClient {
    const config = loadSupervisorConfig(paths);
    let token = config.adminToken;
    if (config.adminTokenGenerated) {
      const file = adminTokenFile(paths);
      token = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
    }
    return new AdminClient(`http://${connectHost(config.gatewayAddr.host)}:${config.gatewayAddr.port}`, token);
  }

  async request<T>(method: 'GET' | 'POST', path: string): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, { method, headers: { authorization: `Bearer ${this.#token}` } });
    } catch (err) {
      throw new LmError('MODEL_NOT_READY', `no supervisor is answering at ${this.baseUrl} (start one with \`supervisor start --all\`)`, { cause: err });
    }
    const body = (await res.json().catch(() => ({}))) as { error?: { code?: unknown; message?: string } };
    if (!res.ok) {
      const code = isErrorCode(body.error?.code) ? body.error.code : 'INTERNAL';
      throw new LmError(code, body.error?.message ?? `${method} ${path}: HTTP ${res.status}`);
    }
    return body as T;
  }

  status(): Promise<SupervisorStatus> {
    return this.request('GET', '/admin/status');
  }

  async workers(): Promise<WorkerInfo[]> {
    return (await this.request<{ workers: WorkerInfo[] }>('GET', '/admin/workers')).workers;
  }

  async action(name: string, action: 'start' | 'stop' | 'restart'): Promise<WorkerInfo> {
    return (await this.request<{ worker: WorkerInfo }>('POST', `/admin/workers/${encodeURIComponent(name)}/${action}`)).worker;
  }

  shutdown(): Promise<unknown> {
    return this.request('POST', '/admin/shutdown');
  }
}
