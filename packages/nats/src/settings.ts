/**
 * A worker's NATS settings turned into what the client connects with. The v3 client ignores
 * credentials inside a server URL, so `nats://user:pass@host` and `nats://token@host` are parsed
 * here into user/password or token (the explicit NATS_TOKEN / NATS_USER / NATS_PASSWORD keys win).
 * Workers whose settings give the same `key` share one connection. Secrets never leave this
 * module in a printable form: `describe()` masks them.
 */
import type { TransportSettings } from '@lmserve/core';
import type { NatsConnectionSettings } from '@lmserve/protocol';

/** The settings one connection is made with (the model host's replicas get them too: HostSpec.nats). */
export type ConnectionSettings = NatsConnectionSettings;

/** Credentials found in a list of server URLs, and the URLs without them. */
export interface ParsedServers {
  servers: string[];
  token: string | null;
  user: string | null;
  password: string | null;
  /** True when one of them is `tls://`. */
  tls: boolean;
}

const DEFAULT_PORT = 4222;

/**
 * Splits a comma-separated NATS_URL into servers and the credentials their URLs carry (the first
 * URL that carries any wins). `nats://token@host` is a token, `nats://user:pass@host` a user.
 */
export function parseServers(natsUrl: string): ParsedServers {
  const out: ParsedServers = { servers: [], token: null, user: null, password: null, tls: false };
  let found = false;
  for (const part of natsUrl.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const withScheme = /^[a-z]+:\/\//i.test(part) ? part : `nats://${part}`;
    const url = new URL(withScheme);
    const host = url.hostname.includes(':') && !url.hostname.startsWith('[') ? `[${url.hostname}]` : url.hostname;
    out.servers.push(`${url.protocol}//${host}:${url.port || DEFAULT_PORT}`);
    if (url.protocol === 'tls:') out.tls = true;
    if (!found && url.username !== '') {
      found = true;
      const user = decodeURIComponent(url.username);
      if (url.password !== '') {
        out.user = user;
        out.password = decodeURIComponent(url.password);
      } else {
        out.token = user;
      }
    }
  }
  return out;
}

/** The connection a worker's settings describe; null when NATS is off for it (NATS_URL empty). */
export function connectionSettings(settings: TransportSettings): ConnectionSettings | null {
  if (!settings.natsUrl) return null;
  const parsed = parseServers(settings.natsUrl);
  if (parsed.servers.length === 0) return null;
  const explicitUser = settings.natsUser !== null;
  const wantsTls = parsed.tls || settings.natsTlsCa !== null || settings.natsTlsCert !== null;
  return {
    servers: parsed.servers,
    token: settings.natsToken ?? parsed.token,
    user: explicitUser ? settings.natsUser : parsed.user,
    password: explicitUser ? settings.natsPassword : parsed.password,
    creds: settings.natsCreds,
    nkeySeed: settings.natsNkeySeed,
    tls: wantsTls ? { ca: settings.natsTlsCa, cert: settings.natsTlsCert, key: settings.natsTlsKey } : null,
  };
}

/** Equal for settings that may share one connection (secrets included: it never leaves memory). */
export function connectionKey(settings: ConnectionSettings): string {
  return JSON.stringify([settings.servers, settings.token, settings.user, settings.password, settings.creds, settings.nkeySeed, settings.tls]);
}

/** The settings as logs and events may show them: servers and which kinds of credentials, no secret. */
export function describe(settings: ConnectionSettings): Record<string, unknown> {
  const auth: string[] = [];
  if (settings.token !== null) auth.push('token');
  if (settings.user !== null) auth.push('user');
  if (settings.creds !== null) auth.push('creds');
  if (settings.nkeySeed !== null) auth.push('nkey');
  return { servers: settings.servers, auth, tls: settings.tls !== null };
}
