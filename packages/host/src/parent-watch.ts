/**
 * A host must never outlive its supervisor, even one killed with SIGKILL: it watches the IPC
 * channel, its stdin pipe and its parent pid, and calls `onOrphaned` on the first sign.
 */
export function watchParent(onOrphaned: (reason: string) => void, pollMs = 1000): void {
  const parent = process.ppid;
  let fired = false;
  const fire = (reason: string) => {
    if (fired) return;
    fired = true;
    clearInterval(timer);
    onOrphaned(reason);
  };
  process.on('disconnect', () => fire('ipc channel closed'));
  process.stdin.on('end', () => fire('stdin closed'));
  process.stdin.on('error', () => fire('stdin failed'));
  process.stdin.resume();
  const timer = setInterval(() => {
    if (process.ppid !== parent) fire('parent process is gone');
  }, pollMs);
  timer.unref();
}
