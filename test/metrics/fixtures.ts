/** Request ends, events and worker snapshots for the metrics tests. */
import type { RequestEnd, RequestStatus } from '@lmserve/core';
import type { WorkerSnapshot } from '@lmserve/metrics';

export const STATUSES: RequestStatus[] = ['completed', 'failed', 'cancelled', 'rejected'];

let seq = 0;

export function requestEnd(overrides: Partial<RequestEnd> & Pick<RequestEnd, 'worker' | 'model'>): RequestEnd {
  seq += 1;
  const transport = overrides.transport ?? 'http';
  return {
    reqId: `${transport}-${seq}`,
    clientId: null,
    transport,
    hostPid: 4242,
    startedAt: 1_700_000_000_000,
    endedAt: 1_700_000_000_500,
    status: 'completed',
    httpStatus: 200,
    errorCode: null,
    error: null,
    finishReason: 'stop',
    input: 'Hello',
    inputLen: 5,
    params: null,
    output: 'world',
    usage: { tokensIn: 7, tokensOut: 3, cachedTokens: 0 },
    timings: { queueMs: 2, ttftMs: 40, totalMs: 500 },
    interTokenMs: [12, 15],
    ...overrides,
  };
}

export function snapshot(overrides: Partial<WorkerSnapshot> & Pick<WorkerSnapshot, 'name' | 'model'>): WorkerSnapshot {
  return {
    state: 'ready',
    up: true,
    slotsBusy: 0,
    slotsTotal: 4,
    queued: 0,
    inFlight: 0,
    kvUsedRatio: 0,
    promptCacheBytes: 6_400_000,
    restarts: 0,
    host: { pid: 4242, cpuSecondsTotal: 1.5, residentBytes: 200_000_000, heapUsedBytes: 30_000_000, eventLoopLagSeconds: 0.002 },
    transports: { nats: { connected: true }, jobs: { connected: true, pending: 3 } },
    download: { bytes: 1 << 20, totalBytes: 4 << 20, bytesPerSecond: 1 << 18 },
    ...overrides,
  };
}

/** A deterministic pseudo-random sequence (mulberry32), so the tests publish the same numbers each run. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
