/**
 * One model host child process: forked with an IPC channel (JSON serialization) for control
 * messages, one relay pipe per replica for generation events (binary frames written straight
 * from the replica threads: relay-frame.ts), its stderr forwarded line by line to the
 * supervisor's and its last lines kept. A narrow facade (send, kill, pid, exited, relayFds) so
 * ModelWorker never touches the ChildProcess itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Socket } from 'node:net';
import { hostMainPath } from '@lmserve/host';
import { FrameDecoder, type HostToSupervisor, type SupervisorToHost } from '@lmserve/protocol';
import { StderrTail } from './stderr-tail.js';

export interface HostExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why the process could not be started or signalled (a failed spawn has no pid). */
  error?: string;
}

export interface HostProcessOptions {
  name: string;
  onMessage: (message: HostToSupervisor) => void;
  onExit: (exit: HostExit) => void;
  /** Where each stderr line of the host goes (default: the supervisor's stderr). */
  forwardLine?: (line: string) => void;
  /** The Node.js binary that runs the host (default: the supervisor's own). */
  execPath?: string;
  /** Relay pipes to open (one per replica); their events arrive as `events` messages. */
  relays?: number;
  /** The service's models ask for more CPU threads than there are cores (hostEnvironment). */
  sharedCpus?: boolean;
}

/** GOMP_SPINCOUNT for model hosts whose CPU threads share the cores with other busy ones. */
export const SHARED_CPU_SPIN_COUNT = '300';

/**
 * The host's environment. How llama.cpp's OpenMP threads wait at each barrier of a decode: by
 * default libgomp spins a while before it sleeps, which is fastest while the process has its
 * cores to itself and ruinous when two busy processes share them (each spins on a core the other
 * needs). Measured on 2 cores, the bench model, 2 threads per process, one stream each
 * (ours and llama-server each streaming at once, a throwaway script): libgomp's default 173 tok/s alone, 9 tok/s each with a second busy
 * process; OMP_WAIT_POLICY=passive 121 alone, 100 each together; GOMP_SPINCOUNT=300 170 alone,
 * 87 each together (100: 129 alone; 2000: 48 together). So `sharedCpus` (the service's models
 * ask for more threads than the machine has cores) gets GOMP_SPINCOUNT=300; a model alone on its
 * cores keeps libgomp's default, as llama-server runs. OMP_WAIT_POLICY or GOMP_SPINCOUNT set by
 * the operator always win.
 */
export function hostEnvironment(env: NodeJS.ProcessEnv, sharedCpus = false): NodeJS.ProcessEnv {
  if (env.OMP_WAIT_POLICY !== undefined || env.GOMP_SPINCOUNT !== undefined || !sharedCpus) return { ...env };
  return { ...env, GOMP_SPINCOUNT: SHARED_CPU_SPIN_COUNT };
}

/** The host's fd of its first relay pipe: stdio 0-2, then the IPC channel (3). */
const FIRST_RELAY_FD = 4;

/**
 * The host's own lines are JSON already; anything else it prints (llama.cpp's native log, a
 * crash report) is wrapped, so the supervisor's output stays one JSON object per line, each
 * with the worker it came from.
 */
export function asJsonLine(line: string, worker: string): string {
  if (line.startsWith('{') && line.endsWith('}')) return line;
  return JSON.stringify({ ts: new Date().toISOString(), level: 'info', component: 'host', worker, msg: line, raw: true });
}

/** How long after the exit the pipes may stay open (held by a grandchild) before we stop waiting. */
const PIPE_CLOSE_TIMEOUT_MS = 2000;

export class HostProcess {
  readonly #child: ChildProcess;
  readonly #tail = new StderrTail();
  readonly exited: Promise<HostExit>;
  #exit: HostExit | undefined;
  #reported = false;
  /** Connections the host holds a descriptor of (sendDirect), by the number it knows them by. */
  readonly #lent = new WeakMap<Socket, number>();
  #lastConnection = 0;
  /** The host's file descriptors of its relay pipes (HostSpec.relayFds). */
  readonly relayFds: number[];

  constructor(options: HostProcessOptions) {
    const forward = options.forwardLine ?? ((line: string) => process.stderr.write(`${asJsonLine(line, options.name)}\n`));
    let report!: (exit: HostExit) => void;
    this.exited = new Promise((resolve) => {
      report = (exit) => {
        if (this.#reported) return;
        this.#reported = true;
        try {
          options.onExit(exit);
        } finally {
          resolve(exit);
        }
      };
    });
    const relays = options.relays ?? 0;
    this.relayFds = Array.from({ length: relays }, (_, i) => FIRST_RELAY_FD + i);
    this.#child = fork(hostMainPath(), ['--lmserve-host', options.name], {
      stdio: ['pipe', 'pipe', 'pipe', 'ipc', ...this.relayFds.map(() => 'pipe' as const)],
      serialization: 'json',
      // The supervisor may run under a loader (tsx in tests); the host is plain JS.
      execArgv: [],
      ...(options.execPath !== undefined ? { execPath: options.execPath } : {}),
      env: { ...hostEnvironment(process.env, options.sharedCpus ?? false), LMSERVE_WORKER: options.name },
    });
    const lines = (stream: NodeJS.ReadableStream | null) => {
      if (!stream) return;
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
        this.#tail.push(line);
        try {
          forward(line);
        } catch {
          // our own stderr is gone: the tail still explains the host's death
        }
      });
    };
    lines(this.#child.stdout);
    lines(this.#child.stderr);
    // Writing to a dead host's stdin must not crash the supervisor.
    this.#child.stdin?.on('error', () => undefined);
    this.#child.on('message', (message: HostToSupervisor) => options.onMessage(message));
    for (const fd of this.relayFds) {
      const pipe = this.#child.stdio[fd] as NodeJS.ReadableStream | null | undefined;
      if (!pipe) continue;
      const decoder = new FrameDecoder((events) => options.onMessage({ type: 'events', events }));
      pipe.on('error', () => undefined);
      pipe.on('data', (chunk: Buffer) => {
        try {
          decoder.push(chunk);
        } catch (err) {
          // A corrupt frame means a broken host: its requests cannot be trusted to finish.
          forward(`relay pipe ${fd}: ${(err as Error).message}; killing the host`);
          this.kill('SIGKILL');
        }
      });
    }
    // 'error': the spawn failed (no pid, no 'exit' will follow), or a kill/send failed.
    this.#child.on('error', (err) => {
      if (this.#child.pid === undefined) {
        this.#exit = { code: null, signal: null, error: err.message };
        report(this.#exit);
      }
    });
    // The exit is reported once stdout and stderr have closed ('close'), so the last lines a
    // dying host wrote are in the tail; a pipe held open by someone else only delays it a bit.
    this.#child.once('exit', (code, signal) => {
      this.#exit = { code, signal };
      const timer = setTimeout(() => report({ code, signal }), PIPE_CLOSE_TIMEOUT_MS);
      this.#child.once('close', () => {
        clearTimeout(timer);
        report({ code, signal });
      });
    });
  }

  get pid(): number | null {
    return this.#child.pid ?? null;
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  /**
   * How deep the channel is for a message with a socket: 0 when it would leave now, else 1 (a
   * handle awaits the host's acknowledgement) plus the messages waiting behind it. Node sends one
   * handle at a time and holds every later message until the host acknowledged it, so the n-th
   * handed-over request of a burst waits n round trips (ModelWorker bounds it: LMSERVE_DIRECT_QUEUE).
   * Node's private `_handleQueue`; were it renamed, this reads 0 and every stream is handed over.
   */
  get handleQueueDepth(): number {
    const queue = (this.#child as unknown as { _handleQueue?: unknown[] | null })._handleQueue;
    return queue == null ? 0 : 1 + queue.length;
  }

  /**
   * Sends a direct stream's `generate`. The first stream of a connection sends the connection
   * along (a handle: one at a time, each acknowledged); the host keeps its descriptor, so the
   * connection's later streams only name it (`direct.conn`) and leave at once. When the
   * connection closes here, the host is told to close its descriptor (`release`).
   */
  sendDirect(message: Extract<SupervisorToHost, { type: 'generate' }>, socket: Socket, onError: (err: Error) => void): boolean {
    const held = this.#lent.get(socket);
    const conn = held ?? ++this.#lastConnection;
    message.request.direct = { ...message.request.direct!, conn };
    if (held !== undefined) return this.send(message, undefined, onError);
    this.#lent.set(socket, conn);
    socket.once('close', () => {
      this.#lent.delete(socket);
      this.send({ type: 'release', conn });
    });
    return this.send(message, socket, (err) => {
      // The host never got it: the connection's next stream brings it again.
      if (this.#lent.get(socket) === conn) this.#lent.delete(socket);
      onError(err);
    });
  }

  /** Whether a direct stream on this connection goes without a handle (the host holds it already). */
  holds(socket: Socket): boolean {
    return this.#lent.has(socket);
  }

  /**
   * Sends a message; with `socket`, the connection goes along (the host gets its own descriptor
   * of it; this process keeps its own). `onError`: the message with its socket could not be sent.
   */
  send(message: SupervisorToHost, socket?: Socket, onError?: (err: Error) => void): boolean {
    if (!this.alive || !this.#child.connected) return false;
    // send() returns false while messages wait (behind a handle's acknowledgement, or a full
    // pipe): that is backpressure, not a failure. Only the callback tells a failure.
    const done = (err: Error | null) => {
      if (err) onError?.(err);
    };
    try {
      if (socket) this.#child.send(message, socket, { keepOpen: true }, done);
      else this.#child.send(message, done);
      return true;
    } catch {
      return false;
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.alive) return;
    try {
      this.#child.kill(signal);
    } catch {
      // already gone
    }
  }

  stderrTail(lines?: number): string {
    return this.#tail.text(lines);
  }
}
