/**
 * A host must never outlive its supervisor, even one killed with SIGKILL: it watches the IPC
 * channel, its stdin pipe and its parent pid, and calls `onOrphaned` on the first sign. The IPC
 * channel and stdin end at once when the supervisor dies; the pid poll is the fallback for a pipe
 * some other process still holds, every 5 s (each poll wakes the host, and on a small machine each
 * wake-up costs a decode thread its core).
 */
export function watchParent(onOrphaned: (reason: string) => void, pollMs = 5000): void {
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
