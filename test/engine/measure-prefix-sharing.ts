/**
 * Not a test (no assertions on time): what sharing a prompt prefix between slots saves when N
 * clients send the same long system prompt with short distinct questions to a cold engine.
 * Run: node --import tsx test/engine/measure-prefix-sharing.ts [rounds]
 * (bench model, `node scripts/gen-model.mjs --preset bench`; MEASURE_THREADS=n to pin threads).
 *
 * Each round creates a fresh engine per configuration (prefixSharing on/off, kvUnified off/on),
 * submits 8 requests at once (~530-token shared prefix, 32 tokens out, greedy) and reports the
 * wall time until all are done, the prompt tokens prefilled and the mean time to first token.
 */
import { loadModel, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

const CLIENTS = 8;
const SYSTEM =
  'You are the assistant of the harbour museum. Answer briefly and name the gallery; never invent opening hours or prices. ' +
  'The museum has four galleries: ships, lighthouses, maps and the fishing fleet; each has its own guide and audio tour. '.repeat(18);

interface Figures {
  wallMs: number;
  prefilled: number;
  tokensIn: number;
  copies: number;
  waits: number;
  ttftMs: number;
}

async function round(model: Model, prefixSharing: boolean, kvUnified: boolean): Promise<Figures> {
  const threads = process.env.MEASURE_THREADS ? Number(process.env.MEASURE_THREADS) : undefined;
  const engine = await model.createEngine({ slots: CLIENTS, contextSize: 2048, kvUnified, prefixSharing, ...(threads ? { threads } : {}) });
  try {
    const start = performance.now();
    const results = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) =>
        engine.submit({
          prompt: `${SYSTEM}\nUser: question ${i}: which gallery shows item ${i * 13}?\nAssistant:`,
          params: { maxTokens: 32, temperature: 0, ignoreEos: true },
        }).result,
      ),
    );
    const wallMs = performance.now() - start;
    const stats = engine.stats();
    return {
      wallMs,
      prefilled: stats.promptTokensProcessed,
      tokensIn: results.reduce((n, r) => n + r.usage.tokensIn, 0),
      copies: stats.prefixCopies,
      waits: stats.prefixWaits,
      ttftMs: results.reduce((n, r) => n + r.timings.ttftMs, 0) / results.length,
    };
  } finally {
    engine.dispose();
  }
}

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 2);
  const model = await loadModel(await modelPath('bench'));
  try {
    console.log(`shared prefix: ${model.tokenize(SYSTEM).length} tokens; ${CLIENTS} clients, 32 tokens out, cold engine per run`);
    await round(model, false, false); // warm-up: weights paged in
    console.log('| kvUnified | prefixSharing | wall ms | prompt tokens prefilled / in | copies | waits | mean TTFT ms |');
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    for (let r = 0; r < rounds; r++) {
      for (const kvUnified of [false, true]) {
        for (const sharing of [true, false]) {
          const f = await round(model, sharing, kvUnified);
          console.log(
            `| ${kvUnified} | ${sharing} | ${f.wallMs.toFixed(0)} | ${f.prefilled} / ${f.tokensIn} | ${f.copies} | ${f.waits} | ${f.ttftMs.toFixed(0)} |`,
          );
        }
      }
    }
  } finally {
    model.dispose();
  }
}

await main();
