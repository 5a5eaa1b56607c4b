import { LmError } from '@lmserve/protocol';

export interface ListenAddress {
  host: string;
  port: number;
}

/** Parses "host:port", "[v6]:port" or ":port" (loopback); port 0 picks a free one. */
export function parseListenAddress(value: string, field = 'address'): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new LmError('INVALID_REQUEST', `${field} must be host:port (got "${value}")`, { field });
  }
  return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
}

export function formatAddress({ host, port }: ListenAddress): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
