/**
 * What recordRequest costs the caller's thread, in µs per call:
 *   sync   the call itself (mapping to a row tuple, two JSON.stringify, a push);
 *   turn   everything the caller's thread spends per row when 1,000 rows are recorded per
 *          event-loop turn: the calls plus the batch's postMessage (its structured clone).
 * And the writer thread's throughput (rows committed per second), for scale.
 *
 *   npx tsc -b packages/store && node --import tsx packages/store/bench/record-cost.ts [rows]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestEnd } from '@lmserve/core';
import { AuditStore } from '@lmserve/store';

const rows = Number(process.argv[2] ?? 20_000);
const dir = mkdtempSync(join(tmpdir(), 'lmserve-store-bench-'));

function end(i: number): RequestEnd {
  const startedAt = Date.now();
  return {
    reqId: `http-${i.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`,
    clientId: null,
    transport: 'http',
    worker: 'demo',
    model: 'demo',
    hostPid: 1234,
    startedAt,
    endedAt: startedAt + 120,
    status: 'completed',
    httpStatus: 200,
    errorCode: null,
    error: null,
    finishReason: 'stop',
    input: 'p'.repeat(500),
    inputLen: 500,
    params: { maxTokens: 128, temperature: 0.7, topP: 0.9, seed: i, stop: ['\n\n'] },
    output: 'o'.repeat(1000),
    usage: { tokensIn: 120, tokensOut: 128, cachedTokens: 0 },
    timings: { queueMs: 0.4, ttftMs: 12.5, totalMs: 120.25 },
    interTokenMs: Array.from({ length: 128 }, () => 0.9),
  };
}

/** One repetition: `rows` calls at 1,000 per turn; returns µs per row (sync part, whole turn), writer ms. */
async function once(store: AuditStore, ends: RequestEnd[]): Promise<{ sync: number; turn: number; commitMs: number }> {
  let syncNs = 0n;
  const elu = performance.eventLoopUtilization();
  const started = process.hrtime.bigint();
  for (let done = 0; done < rows; done += 1000) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) store.recordRequest(ends[i] as RequestEnd);
    syncNs += process.hrtime.bigint() - t0;
    await new Promise((r) => setImmediate(r));
  }
  // Active (non-idle) time of this thread's loop: the calls, the posts, the turns themselves.
  const active = performance.eventLoopUtilization(elu).active;
  await store.flush();
  const commitMs = Number(process.hrtime.bigint() - started) / 1e6;
  return { sync: Number(syncNs) / 1000 / rows, turn: (active * 1000) / rows, commitMs };
}

async function measure(logBodies: boolean): Promise<void> {
  const store = AuditStore.open({ path: join(dir, `bench-${logBodies}.db`), model: 'demo', logBodies });
  await store.flush();
  const ends = Array.from({ length: 1000 }, (_, i) => end(i));
  // Warm-up: JIT and the writer's prepared statements.
  for (let i = 0; i < 5000; i++) store.recordRequest(ends[i % 1000] as RequestEnd);
  await store.flush();
  const reps: Array<{ sync: number; turn: number; commitMs: number }> = [];
  for (let r = 0; r < 5; r++) reps.push(await once(store, ends));
  await store.close();
  const stats = store.stats();
  const pick = (key: 'sync' | 'turn' | 'commitMs') => {
    const sorted = reps.map((x) => x[key]).sort((a, b) => a - b);
    return { min: sorted[0] as number, median: sorted[2] as number };
  };
  const sync = pick('sync');
  const turn = pick('turn');
  const commit = pick('commitMs');
  console.log(
    `logBodies=${logBodies} (${rows} rows x 5): recordRequest ${sync.median.toFixed(2)} µs/call (min ${sync.min.toFixed(2)}); ` +
      `caller thread per row incl. the batch post ${turn.median.toFixed(2)} µs (min ${turn.min.toFixed(2)}); ` +
      `writer committed ${Math.round(rows / (commit.median / 1000))} rows/s; written ${stats.written}, dropped ${stats.dropped}`,
  );
}

try {
  await measure(true);
  await measure(false);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
