/**
 * Entry point of a model host child process (forked by the supervisor with an IPC channel).
 * The first message is `init`; the host then serves until `shutdown` or until it is orphaned.
 */
import { Socket } from 'node:net';
import { createLogger, type HostSpec, type HostToSupervisor, type SupervisorToHost } from '@lmserve/protocol';
import { ModelHost } from './model-host.js';
import { watchParent } from './parent-watch.js';

const ORPHAN_EXIT_MS = 2000;

let log = createLogger({ component: 'host', pid: process.pid });
let host: ModelHost | undefined;
let spec: HostSpec | undefined;

function send(message: HostToSupervisor): void {
  if (process.connected) process.send?.(message);
}

if (!process.send) {
  process.stderr.write('lmserve host: must be started by the supervisor (no IPC channel)\n');
  process.exit(2);
}

watchParent((reason) => {
  log.warn('supervisor is gone, exiting', { reason });
  const timer = setTimeout(() => process.kill(process.pid, 'SIGKILL'), ORPHAN_EXIT_MS);
  timer.unref();
  if (!host) process.exit(0);
  void host.shutdown(0).finally(() => process.exit(0));
});

process.on('uncaughtException', (err) => {
  log.error('uncaught exception', { error: err.stack ?? String(err) });
  process.exit(1);
});

// A rejection nobody handled is a bug to report, not a reason to drop every running request.
process.on('unhandledRejection', (reason) => {
  log.error('unhandled rejection', { error: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) });
});

// The supervisor decides when a host ends; a terminal's Ctrl-C reaches it through the supervisor.
process.on('SIGINT', () => undefined);
// A SIGTERM to the whole process group (systemd, `timeout`) drains like a supervisor's shutdown.
process.on('SIGTERM', () => {
  if (host && spec) void host.shutdown(spec.drainGraceMs);
  else process.exit(0);
});

process.on('message', (message: SupervisorToHost, handle?: unknown) => {
  switch (message.type) {
    case 'init':
      if (host) return;
      spec = message.spec;
      log = createLogger({ component: 'host', pid: process.pid, worker: message.spec.name }, { level: message.spec.logLevel });
      host = new ModelHost({ spec: message.spec, send, log, onExit: (code) => process.exit(code) });
      host.start();
      break;
    case 'generate': {
      // A direct stream's connection arrives with the message (our own descriptor of it).
      const socket = handle instanceof Socket ? handle : undefined;
      if (host) host.generate(message.request, socket);
      else socket?.destroy();
      break;
    }
    case 'cancel':
      host?.cancel(message.id);
      break;
    case 'release':
      host?.release(message.conn);
      break;
    case 'shutdown':
      if (host) void host.shutdown(message.graceMs);
      else process.exit(0);
      break;
  }
});
