/**
 * One model host child process: forked with an IPC channel (JSON serialization: cheaper than
 * 'advanced' per message, which matters when every decode step is one message), its
 * stderr forwarded line by line to the supervisor's and its last lines kept. A narrow facade
 * (send, kill, pid, exited) so ModelWorker never touches the ChildProcess itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { hostMainPath } from '@lmserve/host';
import type { HostToSupervisor, SupervisorToHost } from '@lmserve/protocol';
import { StderrTail } from './stderr-tail.js';

export interface HostExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface HostProcessOptions {
  name: string;
  onMessage: (message: HostToSupervisor) => void;
  onExit: (exit: HostExit) => void;
  /** Where each stderr line of the host goes (default: the supervisor's stderr). */
  forwardLine?: (line: string) => void;
}

export class HostProcess {
  readonly #child: ChildProcess;
  readonly #tail = new StderrTail();
  readonly exited: Promise<HostExit>;
  #exit: HostExit | undefined;

  constructor(options: HostProcessOptions) {
    const forward = options.forwardLine ?? ((line: string) => process.stderr.write(`${line}\n`));
    this.#child = fork(hostMainPath(), ['--lmserve-host', options.name], {
      stdio: ['pipe', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
      // The supervisor may run under a loader (tsx in tests); the host is plain JS.
      execArgv: [],
      env: { ...process.env, LMSERVE_WORKER: options.name },
    });
    const lines = (stream: NodeJS.ReadableStream | null) => {
      if (!stream) return;
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
        this.#tail.push(line);
        forward(line);
      });
    };
    lines(this.#child.stdout);
    lines(this.#child.stderr);
    // Writing to a dead host's stdin must not crash the supervisor.
    this.#child.stdin?.on('error', () => undefined);
    this.#child.on('message', (message: HostToSupervisor) => options.onMessage(message));
    this.#child.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        // Let the last stderr lines arrive before reporting the exit.
        setTimeout(() => {
          options.onExit({ code, signal });
          resolve({ code, signal });
        }, 50);
      });
    });
  }

  get pid(): number | null {
    return this.#child.pid ?? null;
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  send(message: SupervisorToHost): boolean {
    if (!this.alive || !this.#child.connected) return false;
    try {
      return this.#child.send(message);
    } catch {
      return false;
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.alive) this.#child.kill(signal);
  }

  stderrTail(lines?: number): string {
    return this.#tail.text(lines);
  }
}
