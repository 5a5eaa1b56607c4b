/**
 * `supervisor start`: runs the supervisor in the foreground until SIGTERM/SIGINT (or an admin
 * shutdown), then drains within the grace period and exits 0. A second signal exits at once.
 */
import { createLogger, toLmError } from '@lmserve/protocol';
import { Supervisor, type ServicePaths } from '@lmserve/supervisor';

export async function runSupervisor(paths: ServicePaths, start: 'all' | string[]): Promise<void> {
  const log = createLogger({ component: 'supervisor', pid: process.pid });
  let supervisor: Supervisor | undefined;
  let stopping = false;

  const stop = (reason: string) => {
    if (stopping) {
      log.warn('second stop request, exiting now', { reason });
      supervisor?.killAll();
      process.exit(1);
    }
    stopping = true;
    log.info('stop requested', { reason });
    if (!supervisor) return;
    supervisor.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { error: String(err) });
        supervisor?.killAll();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Nothing a client or a fault does may take the supervisor down: a rejection that escaped its
  // handling is logged as a bug and the service keeps serving.
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled rejection', { error: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) });
  });
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception', { error: err.stack ?? String(err) });
    supervisor?.killAll();
    process.exit(1);
  });

  try {
    supervisor = await Supervisor.start({ paths, start, onShutdownRequest: () => stop('admin shutdown') });
  } catch (err) {
    const error = toLmError(err);
    log.error('cannot start', { code: error.code, reason: error.message });
    process.stderr.write(`supervisor: ${error.message}\n`);
    process.exit(1);
  }
  if (stopping) {
    stopping = false;
    stop('signal during start');
  }
}
