import type { WorkerInfo } from '@lmserve/protocol';

/** Left-aligned columns, two spaces apart. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

function duration(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
}

export function workersTable(workers: WorkerInfo[]): string {
  const header = ['NAME', 'STATE', 'PID', 'PORT', 'MODEL', 'SLOTS', 'QUEUE', 'UPTIME', 'RESTARTS', 'REASON'];
  const rows = workers.map((w) => [
    w.name,
    w.state,
    w.pid === null ? '-' : String(w.pid),
    w.port === null ? '-' : String(w.port),
    w.model,
    `${w.slots.busy}/${w.slots.total}`,
    String(w.queue),
    duration(w.uptime_s),
    String(w.restarts),
    (w.reason ?? '').split('\n')[0] ?? '',
  ]);
  return table([header, ...rows]);
}
