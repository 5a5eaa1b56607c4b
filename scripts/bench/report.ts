/** The printed comparison table and the batching gain lines. */
import type { LevelSummary } from './runner.js';

const fmt = (v: number | null | undefined, digits = 0) => (v === null || v === undefined ? '-' : v.toFixed(digits));

export interface ComparisonRow {
  concurrency: number;
  oursTps: number | null;
  serverTps: number | null;
  ratio: number | null;
  oursTtftP50: number | null;
  oursTtftP95: number | null;
  serverTtftP50: number | null;
  serverTtftP95: number | null;
  ttftP50DeltaMs: number | null;
  flagged: boolean;
  notes: string[];
}

export function comparisonRows(summaries: readonly LevelSummary[], ours: string, server: string): ComparisonRow[] {
  return summaries.map((s) => {
    const a = s.perTarget[ours];
    const b = s.perTarget[server];
    const oursTps = a?.tokensPerSecondMedian ?? null;
    const serverTps = b?.tokensPerSecondMedian ?? null;
    return {
      concurrency: s.concurrency,
      oursTps,
      serverTps,
      ratio: oursTps !== null && serverTps ? oursTps / serverTps : null,
      oursTtftP50: a?.ttftP50 ?? null,
      oursTtftP95: a?.ttftP95 ?? null,
      serverTtftP50: b?.ttftP50 ?? null,
      serverTtftP95: b?.ttftP95 ?? null,
      ttftP50DeltaMs: a?.ttftP50 != null && b?.ttftP50 != null ? a.ttftP50 - b.ttftP50 : null,
      flagged: s.flagged,
      notes: s.notes,
    };
  });
}

export function formatTable(rows: readonly ComparisonRow[]): string {
  const header = ['concurrency', 'ours tok/s', 'llama-server tok/s', 'ratio', 'ours TTFT p50/p95 ms', 'server TTFT p50/p95 ms', 'TTFT p50 delta ms', ''];
  const body = rows.map((r) => [
    String(r.concurrency),
    fmt(r.oursTps, 1),
    fmt(r.serverTps, 1),
    r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
    `${fmt(r.oursTtftP50)} / ${fmt(r.oursTtftP95)}`,
    `${fmt(r.serverTtftP50)} / ${fmt(r.serverTtftP95)}`,
    r.ttftP50DeltaMs === null ? '-' : `${r.ttftP50DeltaMs >= 0 ? '+' : ''}${r.ttftP50DeltaMs.toFixed(0)}`,
    r.flagged ? 'FLAGGED' : '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const out = [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)];
  for (const r of rows) for (const n of r.notes) out.push(`  ! c=${r.concurrency}: ${n}`);
  return out.join('\n');
}

/** Aggregate tokens/s at the highest concurrency divided by that at the lowest, per side. */
export function batchingGain(rows: readonly ComparisonRow[]): { from: number; to: number; ours: number | null; server: number | null } | null {
  if (rows.length < 2) return null;
  const lo = rows.reduce((a, b) => (b.concurrency < a.concurrency ? b : a));
  const hi = rows.reduce((a, b) => (b.concurrency > a.concurrency ? b : a));
  const gain = (x: number | null, y: number | null) => (x !== null && y ? x / y : null);
  return { from: lo.concurrency, to: hi.concurrency, ours: gain(hi.oursTps, lo.oursTps), server: gain(hi.serverTps, lo.serverTps) };
}
