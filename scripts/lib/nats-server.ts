/**
 * A real nats-server for the tests and the bench (the Debian package, 2.9.x): started on a free port with
 * JetStream and a temporary store directory, restartable on the same port and store (the
 * "NATS restarted mid-run" cases), stopped and cleaned up at the end. Never a mock.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './service-harness.js';

export interface NatsServerOptions {
  /** Client token (`authorization { token }`); absent: no auth. */
  token?: string;
  /** JetStream on (default true). */
  jetstream?: boolean;
  /** Listen on this port (default: a free one), e.g. one a supervisor was told about before the server ran. */
  port?: number;
  /** Serve the monitoring endpoint (/connz, /varz) on a free port. */
  monitor?: boolean;
}

/** Which nats-server binary to run (NATS_SERVER_BIN overrides; .ci/run installs the Debian package). */
export function natsServerBinary(): string {
  return process.env.NATS_SERVER_BIN ?? 'nats-server';
}

export function natsServerAvailable(): boolean {
  const r = spawnSync(natsServerBinary(), ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

export class NatsServer {
  readonly port: number;
  readonly storeDir: string;
  /** Port of the monitoring endpoint (0: off). */
  monitorPort = 0;
  readonly #dir: string;
  readonly #options: NatsServerOptions;
  #child: ChildProcess | null = null;
  #output = '';

  private constructor(port: number, dir: string, options: NatsServerOptions) {
    this.port = port;
    this.#dir = dir;
    this.storeDir = join(dir, 'store');
    this.#options = options;
  }

  /** Starts a server on a free port and waits until it accepts connections. */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const dir = mkdtempSync(join(tmpdir(), 'lmserve-nats-'));
    const server = new NatsServer(options.port ?? (await freePort()), dir, options);
    if (options.monitor) server.monitorPort = await freePort();
    await server.restart();
    return server;
  }

  /** The server's process id while it runs. */
  get pid(): number | undefined {
    return this.#child?.exitCode === null ? this.#child.pid : undefined;
  }

  /** nats://127.0.0.1:<port> (no credentials in it). */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** What the server wrote (for failure messages). */
  get output(): string {
    return this.#output;
  }

  get running(): boolean {
    return this.#child !== null && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** (Re)starts the server on the same port and store directory. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    const config = join(this.#dir, 'nats.conf');
    const lines = [`listen: 127.0.0.1:${this.port}`, `server_name: lmserve_test_${this.port}`];
    if (this.#options.jetstream !== false) lines.push(`jetstream { store_dir: ${JSON.stringify(this.storeDir)} }`);
    if (this.#options.token) lines.push(`authorization { token: ${JSON.stringify(this.#options.token)} }`);
    if (this.monitorPort > 0) lines.push(`http: 127.0.0.1:${this.monitorPort}`);
    writeFileSync(config, `${lines.join('\n')}\n`);
    const child = spawn(natsServerBinary(), ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    const collect = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString('utf8')).slice(-64 * 1024);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`nats-server exited at start:\n${this.#output}`);
      if (await accepts(this.port)) {
        // JetStream is enabled a little after the port opens.
        if (this.#options.jetstream === false || /Server is ready/.test(this.#output)) return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`nats-server did not start on ${this.port}:\n${this.#output}`);
  }

  /** The client connections the server has now, with their names (monitoring on). */
  async connections(): Promise<Array<{ name?: string; subscriptions: number }>> {
    if (this.monitorPort === 0) throw new Error('start the server with { monitor: true }');
    const res = await fetch(`http://127.0.0.1:${this.monitorPort}/connz`);
    const body = (await res.json()) as { connections?: Array<{ name?: string; subscriptions: number }> };
    return body.connections ?? [];
  }

  /** Stops it (SIGTERM, then SIGKILL after 5 s); the store directory stays for a restart. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.#child;
    if (!child || !this.running) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const force = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(force);
  }

  /** Stops it and removes its store. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
