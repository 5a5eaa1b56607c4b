/**
 * Not a test (no assertions on time): how much a heavy grammar slows a plain request that shares
 * its engine. Run: node --import tsx test/engine/measure-grammar-isolation.ts [alternatives...]
 * (LMSERVE_ADDON_PATH=... to measure another build of the addon).
 *
 * For each size N it builds `root ::= word (" " word)*` with N alternatives in `word`, starts a
 * constrained request with it, and times a plain 32-token request beside it, against the same
 * request alone on the same engine.
 */
import { loadModel, type Engine } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

function heavyGrammar(n: number): string {
  const words = Array.from({ length: n }, (_, i) => `"w${i.toString(36)}x${(i * 7919).toString(36)}"`);
  return `root ::= word (" " word)*\nword ::= ${words.join(' | ')}\n`;
}

async function plain(engine: Engine, seed: number): Promise<number> {
  const start = performance.now();
  const result = await engine.submit({ prompt: 'Plain request', params: { maxTokens: 32, seed, ignoreEos: true } }).result;
  if (result.usage.tokensOut !== 32) throw new Error(`plain request gave ${result.usage.tokensOut} tokens`);
  return performance.now() - start;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

async function main(): Promise<void> {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  const model = await loadModel(await modelPath('tiny'));
  const engine = await model.createEngine({ slots: 4, contextSize: 2048, ...(process.env.MEASURE_THREADS ? { threads: Number(process.env.MEASURE_THREADS) } : {}) });
  try {
    await plain(engine, 1); // warm-up
    const alone: number[] = [];
    for (let i = 0; i < 5; i++) alone.push(await plain(engine, 10 + i));
    console.log(`plain 32-token request alone: median ${median(alone).toFixed(1)} ms (${alone.map((t) => t.toFixed(0)).join(', ')})`);
    for (const n of sizes.length > 0 ? sizes : [1000, 20000]) {
      const grammar = heavyGrammar(n);
      let width = '?';
      try {
        width = String(model.inspectGrammar(grammar).width);
      } catch {
        // an addon from before inspectGrammar
      }
      const heavy = (() => {
        try {
          return engine.submit({ prompt: 'Words:', params: { maxTokens: 100000, seed: 3, grammar, ignoreEos: true } });
        } catch (err) {
          console.log(`N=${n} (${(grammar.length / 1024).toFixed(0)} KiB, width ${width}): refused: ${(err as Error).message.slice(0, 160)}`);
          return undefined;
        }
      })();
      if (!heavy) continue;
      let heavyTokens = 0;
      const counting = (async () => {
        for await (const chunk of heavy) heavyTokens += chunk.tokens.length;
      })();
      // Let it get past its prompt.
      while (heavyTokens === 0 && engine.stats().slotsBusy > 0) await new Promise((r) => setTimeout(r, 5));
      // Its own pace alone, for a second.
      const aloneStart = heavyTokens;
      await new Promise((r) => setTimeout(r, 1000));
      const heavyAlone = heavyTokens - aloneStart;
      const beside: number[] = [];
      const before = engine.stats();
      const startTokens = heavyTokens;
      const t0 = performance.now();
      for (let i = 0; i < 3; i++) beside.push(await plain(engine, 10 + i));
      const elapsed = (performance.now() - t0) / 1000;
      const after = engine.stats();
      heavy.cancel();
      await heavy.result;
      await counting;
      console.log(
        `N=${n} (${(grammar.length / 1024).toFixed(0)} KiB, width ${width}): plain beside it: median ${median(beside).toFixed(1)} ms ` +
          `(${beside.map((t) => t.toFixed(0)).join(', ')}); heavy sequence ${heavyAlone} tokens/s alone, ${((heavyTokens - startTokens) / elapsed).toFixed(1)} beside; ` +
          `grammar fast/full samples ${(after.grammarFastSamples ?? 0) - (before.grammarFastSamples ?? 0)}/` +
          `${(after.grammarFullSamples ?? 0) - (before.grammarFullSamples ?? 0)}, skipped steps ` +
          `${(after.grammarSkippedSteps ?? 0) - (before.grammarSkippedSteps ?? 0)}`,
      );
    }
  } finally {
    engine.dispose();
    model.dispose();
  }
}

await main();
