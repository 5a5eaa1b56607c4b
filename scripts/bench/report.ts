/** The printed comparison table and the batching gain lines. */
import type { LevelRun, LevelSummary } from './runner.js';
import { median } from './stats.js';

const fmt = (v: number | null | undefined, digits = 0) => (v === null || v === undefined ? '-' : v.toFixed(digits));

/** Each round's tok/s of `a` over `b` (the two ran back to back in that round); rounds `b` lacks are skipped. */
function roundRatios(a: LevelSummary['perTarget'][string] | undefined, b: LevelSummary['perTarget'][string] | undefined): number[] {
  const aRounds = a?.tokensPerSecondRounds ?? [];
  const bRounds = b?.tokensPerSecondRounds ?? [];
  return aRounds.flatMap((x, i) => (bRounds[i] ? [x / bRounds[i]!] : []));
}

export interface ComparisonRow {
  concurrency: number;
  oursTps: number | null;
  serverTps: number | null;
  ratio: number | null;
  /**
   * Each round's ratio (ours / llama-server in that round: the two ran back to back, in ABBA
   * order), and their median. On a shared machine whose speed drifts between rounds this paired
   * figure is the steadier one; `ratio` (the ratio of the medians) is kept beside it.
   */
  ratioRounds: number[];
  pairedRatio: number | null;
  oursTtftP50: number | null;
  oursTtftP95: number | null;
  serverTtftP50: number | null;
  serverTtftP95: number | null;
  ttftP50DeltaMs: number | null;
  /**
   * CPU seconds per 1,000 generated tokens, pooled over rounds (null where not measured: in-process,
   * or a row whose runs carry no CPU figures): our supervisor process alone, our model host
   * process(es), llama-server's process(es). Ours' supervisor + host is the whole service.
   */
  oursSupervisorCpuPer1k: number | null;
  oursHostCpuPer1k: number | null;
  serverCpuPer1k: number | null;
  /** The supervisor's CPU per streamed token in microseconds (the same figure as oursSupervisorCpuPer1k, in the unit of the issue's goal: <= 50 us at 1 stream). */
  supervisorUsPerToken: number | null;
  /** The same per round, and their median (the level's usual cost, without a major GC that happened to land in one round). */
  supervisorUsPerTokenRounds: number[] | null;
  supervisorUsPerTokenMedian: number | null;
  /** What the row is, where it is not a concurrency level (a scenario's phase: "cold", "warm", ...). */
  label?: string;
  flagged: boolean;
  notes: string[];
}

export function comparisonRows(summaries: readonly LevelSummary[], ours: string, server: string): ComparisonRow[] {
  return summaries.map((s) => {
    const a = s.perTarget[ours];
    const b = s.perTarget[server];
    const oursTps = a?.tokensPerSecondMedian ?? null;
    const serverTps = b?.tokensPerSecondMedian ?? null;
    const supervisor = a?.supervisorCpuSecondsPer1kTokens ?? null;
    const all = a?.ownCpuSecondsPer1kTokens ?? null;
    const ratioRounds = roundRatios(a, b);
    return {
      concurrency: s.concurrency,
      oursTps,
      serverTps,
      ratio: oursTps !== null && serverTps ? oursTps / serverTps : null,
      ratioRounds,
      pairedRatio: median(ratioRounds),
      oursTtftP50: a?.ttftP50 ?? null,
      oursTtftP95: a?.ttftP95 ?? null,
      serverTtftP50: b?.ttftP50 ?? null,
      serverTtftP95: b?.ttftP95 ?? null,
      ttftP50DeltaMs: a?.ttftP50 != null && b?.ttftP50 != null ? a.ttftP50 - b.ttftP50 : null,
      oursSupervisorCpuPer1k: supervisor,
      oursHostCpuPer1k: supervisor !== null && all !== null ? all - supervisor : null,
      serverCpuPer1k: b?.ownCpuSecondsPer1kTokens ?? null,
      // s per 1,000 tokens -> us per token: x 1e6 / 1e3.
      supervisorUsPerToken: supervisor === null ? null : supervisor * 1000,
      supervisorUsPerTokenRounds: a?.supervisorUsPerTokenRounds ?? null,
      supervisorUsPerTokenMedian: a?.supervisorUsPerTokenRounds ? median(a.supervisorUsPerTokenRounds) : null,
      flagged: s.flagged,
      notes: s.notes,
    };
  });
}

/**
 * The supervisor's CPU per generated token over every run of `label` that measured it: all of its
 * work, collections included, spread over all the tokens (null when none did).
 */
export function supervisorUsPerTokenOverall(runs: readonly LevelRun[], label: string): number | null {
  const measured = runs.filter((r) => r.target === label && r.supervisorCpuSeconds !== null);
  const tokens = measured.reduce((n, r) => n + r.tokensOut, 0);
  return tokens > 0 ? (measured.reduce((s, r) => s + (r.supervisorCpuSeconds as number), 0) * 1e6) / tokens : null;
}

/** A Markdown table with padded columns (every table the bench prints). */
export function markdownTable(header: readonly string[], body: readonly string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

/**
 * The comparison table: the main one (a row per concurrency level) and each scenario's (a row per
 * phase, `first` = "phase", the row's `label`). The CPU columns are seconds per 1,000 generated
 * tokens: the work each side did for the same tokens, much steadier than tok/s on a shared machine.
 */
export function formatTable(rows: readonly ComparisonRow[], first = 'concurrency'): string {
  const header = [
    first, 'ours tok/s', 'llama-server tok/s', 'ratio', 'per round (median)', 'ours TTFT p50/p95 ms', 'server TTFT p50/p95 ms', 'TTFT p50 delta ms',
    'CPU s/1k tok: ours supervisor / ours host / llama-server', 'supervisor µs/token pooled (median round)', '',
  ];
  const body = rows.map((r) => [
    r.label ?? String(r.concurrency),
    fmt(r.oursTps, 1),
    fmt(r.serverTps, 1),
    r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
    r.ratioRounds.length < 2 ? '-' : `${r.ratioRounds.map((x) => x.toFixed(2)).join(' / ')} (${(r.pairedRatio as number).toFixed(2)}x)`,
    `${fmt(r.oursTtftP50)} / ${fmt(r.oursTtftP95)}`,
    `${fmt(r.serverTtftP50)} / ${fmt(r.serverTtftP95)}`,
    r.ttftP50DeltaMs === null ? '-' : `${r.ttftP50DeltaMs >= 0 ? '+' : ''}${r.ttftP50DeltaMs.toFixed(0)}`,
    `${fmt(r.oursSupervisorCpuPer1k, 2)} / ${fmt(r.oursHostCpuPer1k, 2)} / ${fmt(r.serverCpuPer1k, 2)}`,
    r.supervisorUsPerToken === null ? '-' : `${fmt(r.supervisorUsPerToken)}${r.supervisorUsPerTokenMedian !== null && (r.supervisorUsPerTokenRounds?.length ?? 0) > 1 ? ` (${fmt(r.supervisorUsPerTokenMedian)})` : ''}`,
    r.flagged ? 'FLAGGED' : '',
  ]);
  const out = [markdownTable(header, body)];
  for (const r of rows) for (const n of r.notes) out.push(`  ! ${r.label ?? `c=${r.concurrency}`}: ${n}`);
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

/**
 * One level of the audit + metrics cost table: our service as configured by default (AUDIT=on,
 * METRICS=on) against the same service with both off (`ours-bare`), measured in the same rounds.
 */
export interface OverheadRow {
  concurrency: number;
  oursTps: number | null;
  bareTps: number | null;
  /** ours / ours-bare, from the medians over rounds. */
  ratio: number | null;
  /** 1 - ratio, in percent: the throughput the audit trail and metrics cost (negative: ours was faster). */
  costPercent: number | null;
  /** ours / ours-bare per round (the two ran back to back in the same round and level). */
  ratioRounds: number[];
  /** Median of ratioRounds: the paired estimate (each round's two runs saw the same machine state). */
  ratioRoundsMedian: number | null;
  /**
   * The supervisor CPU the audit trail and metrics add, as a share of all the CPU the same tokens
   * take without them: (ours - bare supervisor CPU per 1k tokens) / (bare supervisor + host CPU
   * per 1k tokens), in percent. A work measure, far less noisy than tok/s on a shared machine.
   */
  supervisorCpuSharePercent: number | null;
  oursTtftP50: number | null;
  bareTtftP50: number | null;
  ttftP50DeltaMs: number | null;
  oursTtftP95: number | null;
  bareTtftP95: number | null;
  /** Supervisor process CPU seconds per 1,000 generated tokens. */
  oursSupervisorCpuPer1k: number | null;
  bareSupervisorCpuPer1k: number | null;
  /** Supervisor + model host CPU seconds per 1,000 generated tokens. */
  oursCpuPer1k: number | null;
  bareCpuPer1k: number | null;
  flagged: boolean;
  notes: string[];
}

/** `summaries` must come from summarize() over these two labels only (their flags and notes). */
export function overheadRows(summaries: readonly LevelSummary[], ours: string, bare: string): OverheadRow[] {
  return summaries.map((s) => {
    const a = s.perTarget[ours];
    const b = s.perTarget[bare];
    const oursTps = a?.tokensPerSecondMedian ?? null;
    const bareTps = b?.tokensPerSecondMedian ?? null;
    const ratio = oursTps !== null && bareTps ? oursTps / bareTps : null;
    const ratioRounds = roundRatios(a, b);
    const supA = a?.supervisorCpuSecondsPer1kTokens ?? null;
    const supB = b?.supervisorCpuSecondsPer1kTokens ?? null;
    const allB = b?.ownCpuSecondsPer1kTokens ?? null;
    return {
      concurrency: s.concurrency,
      oursTps,
      bareTps,
      ratio,
      costPercent: ratio === null ? null : (1 - ratio) * 100,
      ratioRounds,
      ratioRoundsMedian: median(ratioRounds),
      supervisorCpuSharePercent: supA !== null && supB !== null && allB ? ((supA - supB) / allB) * 100 : null,
      oursTtftP50: a?.ttftP50 ?? null,
      bareTtftP50: b?.ttftP50 ?? null,
      ttftP50DeltaMs: a?.ttftP50 != null && b?.ttftP50 != null ? a.ttftP50 - b.ttftP50 : null,
      oursTtftP95: a?.ttftP95 ?? null,
      bareTtftP95: b?.ttftP95 ?? null,
      oursSupervisorCpuPer1k: a?.supervisorCpuSecondsPer1kTokens ?? null,
      bareSupervisorCpuPer1k: b?.supervisorCpuSecondsPer1kTokens ?? null,
      oursCpuPer1k: a?.ownCpuSecondsPer1kTokens ?? null,
      bareCpuPer1k: b?.ownCpuSecondsPer1kTokens ?? null,
      flagged: s.flagged,
      notes: s.notes,
    };
  });
}

export function formatOverheadTable(rows: readonly OverheadRow[]): string {
  const signed = (v: number | null, digits: number, unit = '') =>
    v === null ? '-' : `${v >= 0 ? '+' : ''}${v.toFixed(digits)}${unit}`;
  const ms = (v: number | null) => (v === null ? '-' : (v * 1000).toFixed(0));
  const header = [
    'concurrency', 'ours tok/s', 'ours-bare tok/s', 'ours/bare', 'audit+metrics cost', 'per round', 'median of rounds',
    'ours TTFT p50 ms', 'bare TTFT p50 ms', 'TTFT p50 delta ms', 'supervisor CPU ms/1k tok ours / bare', 'added CPU share', '',
  ];
  const body = rows.map((r) => [
    String(r.concurrency),
    fmt(r.oursTps, 1),
    fmt(r.bareTps, 1),
    r.ratio === null ? '-' : `${r.ratio.toFixed(3)}x`,
    signed(r.costPercent, 1, '%'),
    r.ratioRounds.map((x) => x.toFixed(3)).join(', ') || '-',
    r.ratioRoundsMedian === null ? '-' : `${r.ratioRoundsMedian.toFixed(3)}x`,
    fmt(r.oursTtftP50),
    fmt(r.bareTtftP50),
    signed(r.ttftP50DeltaMs, 0),
    `${ms(r.oursSupervisorCpuPer1k)} / ${ms(r.bareSupervisorCpuPer1k)}`,
    signed(r.supervisorCpuSharePercent, 2, '%'),
    r.flagged ? 'FLAGGED' : '',
  ]);
  const out = [markdownTable(header, body)];
  for (const r of rows) for (const n of r.notes) out.push(`  ! c=${r.concurrency}: ${n}`);
  return out.join('\n');
}

/** The largest throughput cost and TTFT p50 change over the levels (null when nothing was measured). */
export function overheadWorst(rows: readonly OverheadRow[]): {
  costPercent: number;
  costAt: number;
  ttftP50DeltaMs: number | null;
  ttftAt: number | null;
  /** The largest 1 - median(per-round ratio), in percent, and the largest added supervisor CPU share. */
  pairedCostPercent: number | null;
  pairedCostAt: number | null;
  cpuSharePercent: number | null;
} | null {
  const costs = rows.filter((r) => r.costPercent !== null);
  if (costs.length === 0) return null;
  const worst = costs.reduce((a, b) => (b.costPercent! > a.costPercent! ? b : a));
  const ttfts = rows.filter((r) => r.ttftP50DeltaMs !== null);
  const ttft = ttfts.length ? ttfts.reduce((a, b) => (b.ttftP50DeltaMs! > a.ttftP50DeltaMs! ? b : a)) : null;
  const paired = rows.filter((r) => r.ratioRoundsMedian !== null);
  const worstPaired = paired.length ? paired.reduce((a, b) => (b.ratioRoundsMedian! < a.ratioRoundsMedian! ? b : a)) : null;
  const shares = rows.flatMap((r) => (r.supervisorCpuSharePercent === null ? [] : [r.supervisorCpuSharePercent]));
  return {
    pairedCostPercent: worstPaired ? (1 - worstPaired.ratioRoundsMedian!) * 100 : null,
    pairedCostAt: worstPaired?.concurrency ?? null,
    cpuSharePercent: shares.length ? Math.max(...shares) : null,
    costPercent: worst.costPercent!, costAt: worst.concurrency, ttftP50DeltaMs: ttft?.ttftP50DeltaMs ?? null, ttftAt: ttft?.concurrency ?? null };
}
