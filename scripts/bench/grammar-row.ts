/**
 * The grammar row: after the main table, in the same session and with the same two servers (ours
 * and llama-server; never ours-bare), requests constrained by the built-in `json` grammar. Our
 * service gets `params.grammar: "json"` (resolved by its grammar library); llama-server's
 * /completion gets `grammar` with that library's GBNF text, read from our own GET /grammars/json,
 * so both sides sample under the same grammar. EOS is not ignored (the output ends when the JSON
 * value closes) and EOS is not banned (with the grammar complete, EOS is the only allowed token);
 * the other control and byte tokens stay banned, as in the main workload. Throughput counts the
 * tokens each server reports as generated.
 */
import { sleep } from '../lib/service-harness.js';
import { runLevel } from './runner.js';
import { markdownTable } from './report.js';
import { median, percentile } from './stats.js';
import type { BenchRequest, BenchTarget, RequestOutcome } from './target.js';
import { roundRequests, type WorkloadSpec } from './workload.js';

/** The llama SPM vocab's EOS id: allowed in the grammar row (see the file comment). */
export const EOS_ID = 2;

export interface GrammarRowPlan {
  grammarName: string;
  concurrency: number[];
  rounds: number;
  requestsPerClient: number;
  maxTokens: number;
  workload: WorkloadSpec;
  log: (line: string) => void;
}

export interface GrammarLevelRun {
  target: string;
  round: number;
  concurrency: number;
  requests: number;
  wallMs: number;
  tokensOut: number;
  tokensPerSecond: number;
  ttftMs: number[];
  /** Outputs that JSON.parse accepted. */
  parsed: number;
  /** Finish reason -> count, as each server names them. */
  finishReasons: Record<string, number>;
  failures: string[];
  /** The first few outputs, for the JSON (what the grammar let through). */
  sampleOutputs: string[];
}

export interface GrammarRow {
  concurrency: number;
  oursTps: number | null;
  serverTps: number | null;
  ratio: number | null;
  oursTtftP50: number | null;
  serverTtftP50: number | null;
  oursParsed: number;
  oursRequests: number;
  serverParsed: number;
  serverRequests: number;
  oursTokensPerRequestMedian: number | null;
  serverTokensPerRequestMedian: number | null;
  flagged: boolean;
  notes: string[];
}

export interface GrammarRowResult {
  grammarName: string;
  grammarContent: string;
  rows: GrammarRow[];
  runs: GrammarLevelRun[];
}

/** GET /grammars/<name> on a model port; 503 (the library not open yet) is retried until `timeoutMs`. */
export async function fetchGrammarContent(port: number, name: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const res = await fetch(`http://127.0.0.1:${port}/grammars/${encodeURIComponent(name)}`).catch((err: unknown) => {
      last = String(err);
      return null;
    });
    if (res?.status === 200) {
      const body = (await res.json()) as { content?: unknown };
      if (typeof body.content !== 'string' || body.content === '') throw new Error(`GET /grammars/${name}: no content in ${JSON.stringify(body).slice(0, 200)}`);
      return body.content;
    }
    if (res && res.status !== 503) throw new Error(`GET /grammars/${name}: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
    if (res) last = `HTTP 503 ${(await res.text()).slice(0, 200)}`;
    await sleep(250);
  }
  throw new Error(`GET /grammars/${name} did not answer 200 within ${timeoutMs} ms (last: ${last})`);
}

function parses(text: string | undefined): boolean {
  if (text === undefined) return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function grammarRequests(plan: GrammarRowPlan, gbnf: string, count: number, firstSequence: number, maxTokens = plan.maxTokens): BenchRequest[] {
  return roundRequests({ ...plan.workload, maxTokens }, count, firstSequence).map((r) => ({
    ...r,
    ignoreEos: false,
    bannedTokenIds: r.bannedTokenIds.filter((id) => id !== EOS_ID),
    grammar: { name: plan.grammarName, gbnf },
  }));
}

function summarizeLevel(target: BenchTarget, round: number, concurrency: number, wallMs: number, outcomes: RequestOutcome[]): GrammarLevelRun {
  const tokensOut = outcomes.reduce((n, o) => n + (o.tokensOut ?? 0), 0);
  const finishReasons: Record<string, number> = {};
  for (const o of outcomes) {
    const key = o.ok ? (o.finishReason ?? 'unknown') : 'failed';
    finishReasons[key] = (finishReasons[key] ?? 0) + 1;
  }
  return {
    target: target.label,
    round,
    concurrency,
    requests: outcomes.length,
    wallMs,
    tokensOut,
    tokensPerSecond: (tokensOut * 1000) / wallMs,
    ttftMs: outcomes.flatMap((o) => (o.ttftMs === null ? [] : [o.ttftMs])),
    parsed: outcomes.filter((o) => o.ok && parses(o.output)).length,
    finishReasons,
    failures: outcomes.filter((o) => !o.ok).map((o) => o.error ?? 'failed'),
    sampleOutputs: outcomes.slice(0, 3).map((o) => o.output ?? ''),
  };
}

/** `ours` must be our service (its /grammars gives the GBNF); `server` is llama-server. */
export async function measureGrammarRow(ours: BenchTarget, server: BenchTarget, oursPort: number, plan: GrammarRowPlan): Promise<GrammarRowResult> {
  const gbnf = await fetchGrammarContent(oursPort, plan.grammarName);
  plan.log(`grammar row: "${plan.grammarName}" (${gbnf.length} bytes of GBNF from our GET /grammars/${plan.grammarName}); ` +
    `levels ${plan.concurrency.join(',')}; max ${plan.maxTokens} tokens, EOS not ignored; ${plan.rounds} rounds`);
  const targets = [ours, server];
  // One short constrained request per side first (grammar parsing, first-use costs), not measured.
  for (const t of targets) {
    const [warm] = grammarRequests(plan, gbnf, 1, 800_000, Math.min(8, plan.maxTokens));
    const outcome = await t.run(warm!);
    if (!outcome.ok) throw new Error(`grammar warm-up request to ${t.label} failed: ${outcome.error}`);
  }
  const runs: GrammarLevelRun[] = [];
  let sequence = 700_000;
  for (let round = 0; round < plan.rounds; round++) {
    for (const concurrency of plan.concurrency) {
      // At least 32 requests per level: constrained requests end at EOS, many after a few tokens
      // (a random model), so their lengths vary; 16 at c1 ran about 7 s and the ratio moved from
      // 0.85x to 1.02x between rounds.
      const requests = grammarRequests(plan, gbnf, Math.max(32, concurrency * plan.requestsPerClient), sequence);
      sequence += requests.length;
      // ABBA, as in the main rounds: odd rounds run llama-server first.
      for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
        const { wallMs, outcomes } = await runLevel(t, requests, concurrency);
        const run = summarizeLevel(t, round, concurrency, wallMs, outcomes);
        runs.push(run);
        plan.log(
          `grammar round ${round + 1}/${plan.rounds} c=${concurrency} ${t.label}: ${run.tokensPerSecond.toFixed(1)} tok/s, ` +
            `${run.tokensOut} tokens in ${(run.wallMs / 1000).toFixed(2)} s, TTFT p50 ${percentile(run.ttftMs, 50)?.toFixed(0) ?? '-'} ms, ` +
            `${run.parsed}/${run.requests} parse as JSON, finish ${JSON.stringify(run.finishReasons)}` +
            (run.failures.length ? `, ${run.failures.length} FAILED (${run.failures[0]})` : ''),
        );
      }
    }
  }
  const rows = plan.concurrency.map((c): GrammarRow => {
    const of = (label: string) => runs.filter((r) => r.concurrency === c && r.target === label);
    const a = of(ours.label);
    const b = of(server.label);
    const oursTps = median(a.map((r) => r.tokensPerSecond));
    const serverTps = median(b.map((r) => r.tokensPerSecond));
    const notes: string[] = [];
    for (const [label, mine] of [[ours.label, a], [server.label, b]] as const) {
      const failures = mine.flatMap((r) => r.failures);
      if (failures.length) notes.push(`${label}: ${failures.length} failed requests (${failures[0]})`);
    }
    const perRequest = (mine: GrammarLevelRun[]) => (mine.length ? median(mine.map((r) => r.tokensOut / r.requests)) : null);
    return {
      concurrency: c,
      oursTps,
      serverTps,
      ratio: oursTps !== null && serverTps ? oursTps / serverTps : null,
      oursTtftP50: percentile(a.flatMap((r) => r.ttftMs), 50),
      serverTtftP50: percentile(b.flatMap((r) => r.ttftMs), 50),
      oursParsed: a.reduce((n, r) => n + r.parsed, 0),
      oursRequests: a.reduce((n, r) => n + r.requests, 0),
      serverParsed: b.reduce((n, r) => n + r.parsed, 0),
      serverRequests: b.reduce((n, r) => n + r.requests, 0),
      oursTokensPerRequestMedian: perRequest(a),
      serverTokensPerRequestMedian: perRequest(b),
      flagged: notes.length > 0,
      notes,
    };
  });
  return { grammarName: plan.grammarName, grammarContent: gbnf, rows, runs };
}

const fmt = (v: number | null, digits = 0) => (v === null ? '-' : v.toFixed(digits));

export function formatGrammarTable(result: GrammarRowResult, maxTokens: number): string {
  const header = ['concurrency', 'ours tok/s', 'llama-server tok/s', 'ratio', 'ours TTFT p50 ms', 'server TTFT p50 ms', 'ours JSON ok', 'server JSON ok', 'tokens/request ours / server', ''];
  const body = result.rows.map((r) => [
    String(r.concurrency),
    fmt(r.oursTps, 1),
    fmt(r.serverTps, 1),
    r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
    fmt(r.oursTtftP50),
    fmt(r.serverTtftP50),
    `${r.oursParsed}/${r.oursRequests}`,
    `${r.serverParsed}/${r.serverRequests}`,
    `${fmt(r.oursTokensPerRequestMedian, 1)} / ${fmt(r.serverTokensPerRequestMedian, 1)}`,
    r.flagged ? 'FLAGGED' : '',
  ]);
  const out = [
    `grammar row: built-in "${result.grammarName}" grammar on both sides (ours: params.grammar "${result.grammarName}"; ` +
      `llama-server: grammar = the same GBNF text); max ${maxTokens} tokens, EOS ends the output; ` +
      `tok/s = generated tokens / wall time; JSON ok = outputs JSON.parse accepted`,
    markdownTable(header, body),
  ];
  for (const r of result.rows) for (const n of r.notes) out.push(`  ! c=${r.concurrency}: ${n}`);
  return out.join('\n');
}
