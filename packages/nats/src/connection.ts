/**
 * NATS connections shared by the workers whose settings are the same: one connection per
 * distinct settings, counted references, closed when the last worker lets go.
 *
 * A connection never makes a worker fail: while NATS is unreachable at start, a loop keeps trying
 * every RETRY_MS in the background (each new reason is reported once, e.g. an authorization
 * violation); once connected, the client reconnects by itself without limit; should the client
 * give up and close anyway, the loop starts again. The first connect is our own loop rather than
 * the client's `waitOnFirstConnect` so that its failures can be reported and a release can stop it.
 */
import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import type { Logger } from '@lmserve/protocol';
import { connectionKey, describe, type ConnectionSettings } from './settings.js';

/** Delay between two connection attempts while no server has been reached. */
const RETRY_MS = 1000;
/** How long a closing connection may take to flush what it holds before it is dropped. */
const CLOSE_TIMEOUT_MS = 3000;

export type ConnectionChange =
  | { type: 'connected'; server: string; nc: NatsConnection }
  | { type: 'disconnected'; server: string }
  | { type: 'reconnected'; server: string }
  | { type: 'error'; message: string };

export type ChangeListener = (change: ConnectionChange) => void;

/** One NATS connection and the workers that use it. */
export class SharedConnection {
  readonly key: string;
  readonly settings: ConnectionSettings;
  readonly #log: Logger;
  readonly #onIdle: (connection: SharedConnection) => void;
  readonly #name: string;
  readonly #listeners = new Set<ChangeListener>();
  #refs = 0;
  #nc: NatsConnection | null = null;
  #connected = false;
  #server: string | null = null;
  #closed = false;
  #wake: (() => void) | null = null;
  #closing: Promise<void> | null = null;

  /** `name`: the client name the server shows (its /connz): the supervisor's are `lmserve`. */
  constructor(settings: ConnectionSettings, log: Logger, onIdle: (connection: SharedConnection) => void, name = 'lmserve') {
    this.settings = settings;
    this.#name = name;
    this.key = connectionKey(settings);
    this.#log = log.child({ nats: settings.servers.join(',') });
    this.#onIdle = onIdle;
    void this.#connectLoop();
  }

  /** The live client (null until the first connect, and after close). */
  get nc(): NatsConnection | null {
    return this.#nc;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** host:port of the server it is (or was last) connected to. */
  get server(): string | null {
    return this.#server;
  }

  /** Listens to connection changes; returns the unsubscribe function. */
  onChange(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** One more worker uses it. */
  retain(): void {
    this.#refs += 1;
  }

  /** A worker lets go; the last one closes the connection (flushing what is pending). */
  release(): Promise<void> {
    this.#refs -= 1;
    if (this.#refs > 0) return Promise.resolve();
    this.#onIdle(this);
    return this.close();
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    this.#listeners.clear();
    const nc = this.#nc;
    const wasConnected = this.#connected;
    this.#nc = null;
    this.#connected = false;
    if (!nc || nc.isClosed()) return;
    // drain() flushes what is pending but needs a server; a disconnected client just closes.
    const done = wasConnected ? nc.drain() : nc.close();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
    });
    await Promise.race([done.catch(() => undefined), timeout]);
    clearTimeout(timer);
    if (!nc.isClosed()) await nc.close().catch(() => undefined);
  }

  #emit(change: ConnectionChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        this.#log.error('a NATS connection listener failed', { error: (err as Error)?.message ?? String(err) });
      }
    }
  }

  async #connectLoop(): Promise<void> {
    let lastReason: string | null = null;
    while (!this.#closed) {
      let nc: NatsConnection;
      try {
        nc = await connect(this.#options());
      } catch (err) {
        const reason = errorText(err);
        if (reason !== lastReason) {
          lastReason = reason;
          this.#log.warn('NATS unreachable; retrying in the background', { ...describe(this.settings), reason });
          this.#emit({ type: 'error', message: reason });
        }
        await this.#sleep(RETRY_MS);
        continue;
      }
      if (this.#closed) {
        await nc.close().catch(() => undefined);
        return;
      }
      this.#nc = nc;
      this.#connected = true;
      this.#server = nc.getServer();
      this.#log.info('NATS connected', { ...describe(this.settings), server: this.#server });
      this.#emit({ type: 'connected', server: this.#server, nc });
      const closedWith = await this.#watch(nc);
      if (this.#closed) return;
      // The client gave up (e.g. repeated authorization errors): start over with a new one.
      this.#nc = null;
      if (this.#connected) {
        this.#connected = false;
        this.#emit({ type: 'disconnected', server: this.#server ?? '' });
      }
      const reason = closedWith ? errorText(closedWith) : 'the connection closed';
      this.#log.warn('NATS connection closed; connecting again', { reason });
      this.#emit({ type: 'error', message: reason });
      lastReason = reason;
      await this.#sleep(RETRY_MS);
    }
  }

  /** Follows the client's status until it closes; resolves with the error it closed with, if any. */
  async #watch(nc: NatsConnection): Promise<Error | void> {
    let lastError: string | null = null;
    const statuses = (async () => {
      for await (const status of nc.status()) {
        if (this.#closed || this.#nc !== nc) return;
        switch (status.type) {
          case 'disconnect':
            if (!this.#connected) break;
            this.#connected = false;
            this.#log.warn('NATS disconnected; reconnecting', { server: status.server });
            this.#emit({ type: 'disconnected', server: status.server });
            break;
          case 'reconnect':
            lastError = null;
            this.#connected = true;
            this.#server = nc.getServer();
            this.#log.info('NATS reconnected', { server: this.#server });
            this.#emit({ type: 'reconnected', server: this.#server });
            break;
          case 'error': {
            // The same error at every reconnect attempt (e.g. a revoked token) is reported once.
            const reason = errorText(status.error);
            if (reason === lastError) break;
            lastError = reason;
            this.#log.warn('NATS error', { reason });
            this.#emit({ type: 'error', message: reason });
            break;
          }
          case 'ldm':
            this.#log.info('the NATS server is entering lame duck mode', { server: status.server });
            break;
          default:
            break;
        }
      }
    })().catch(() => undefined);
    const closed = await nc.closed();
    await statuses;
    return closed;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  #options(): NodeConnectionOptions {
    const s = this.settings;
    const authenticators: Authenticator[] = [];
    // Files are read at each (re)connect, so a rotated creds file is picked up.
    if (s.creds !== null) authenticators.push(credsAuthenticator(() => readFileSync(s.creds as string)));
    if (s.nkeySeed !== null) authenticators.push(nkeyAuthenticator(() => new TextEncoder().encode(readFileSync(s.nkeySeed as string, 'utf8').trim())));
    const options: NodeConnectionOptions = {
      servers: s.servers,
      name: this.#name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: RETRY_MS,
      pingInterval: 10_000,
      timeout: 5_000,
    };
    if (s.token !== null) options.token = s.token;
    if (s.user !== null) options.user = s.user;
    if (s.password !== null) options.pass = s.password;
    if (authenticators.length > 0) options.authenticator = authenticators;
    if (s.tls) {
      options.tls = {};
      if (s.tls.ca !== null) options.tls.caFile = s.tls.ca;
      if (s.tls.cert !== null) options.tls.certFile = s.tls.cert;
      if (s.tls.key !== null) options.tls.keyFile = s.tls.key;
    }
    return options;
  }
}

/** The connections of one transport, by settings. */
export class ConnectionPool {
  readonly #connections = new Map<string, SharedConnection>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** The connection for these settings (created and connecting in the background if new), retained once. */
  acquire(settings: ConnectionSettings): SharedConnection {
    const key = connectionKey(settings);
    let connection = this.#connections.get(key);
    if (!connection) {
      connection = new SharedConnection(settings, this.#log, (idle) => {
        if (this.#connections.get(idle.key) === idle) this.#connections.delete(idle.key);
      });
      this.#connections.set(key, connection);
    }
    connection.retain();
    return connection;
  }

  /** How many distinct connections are open (for tests and status). */
  get size(): number {
    return this.#connections.size;
  }

  /** Closes every connection (their workers are gone). */
  async closeAll(): Promise<void> {
    const all = [...this.#connections.values()];
    this.#connections.clear();
    await Promise.all(all.map((c) => c.close()));
  }
}

/** A client error as one line, without credentials (the client never puts them in messages). */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error && err.cause.message !== err.message ? `: ${err.cause.message}` : '';
    return `${err.message}${cause}`;
  }
  return String(err);
}
