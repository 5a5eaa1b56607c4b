/**
 * Not a test (no assertions on time): what keeping only the window in a sliding-window model's
 * window layers (swaFull: false, the default) saves against keeping every position (true), at a
 * long prompt. Run: node --import tsx test/engine/measure-sliding-window.ts [rounds] [promptTokens]
 * (the bench-swa model: gemma3 architecture, the bench model's size, window 512 on 5 layers of 6;
 * generated on first use; MEASURE_THREADS=n to pin threads, default 2).
 *
 * Each round creates a fresh engine per setting, in alternating order, sends one greedy request
 * with a prompt of about promptTokens (default 3000) and 128 tokens out, and reports the prefill
 * time (to the first token), the decode rate after it and how much the process grew while the
 * engine lived (its KV buffers, mostly; 4 slots x 4096 positions).
 */
import { loadModel, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

const SENTENCE = 'The harbour town woke slowly that morning. Fishermen checked their nets while the baker pulled the first loaves from a stone oven. ';

async function once(model: Model, text: string, swaFull: boolean, tag: string): Promise<{ prefillMs: number; decodeTps: number; rssMiB: number }> {
  const threads = Number(process.env.MEASURE_THREADS ?? 2);
  const rss = process.memoryUsage().rss;
  const engine = await model.createEngine({ slots: 4, contextSize: 4096, threads, swaFull });
  try {
    const started = performance.now();
    const generation = engine.submit({ prompt: `${tag} ${text}`, params: { maxTokens: 128, temperature: 0, ignoreEos: true } });
    let first = 0;
    let tokens = 0;
    for await (const chunk of generation) {
      if (first === 0) first = performance.now();
      tokens += chunk.tokens.length;
    }
    const end = performance.now();
    // The process's growth while this engine lives: mostly its KV buffers (indicative only).
    const rssMiB = (process.memoryUsage().rss - rss) / 2 ** 20;
    return { prefillMs: first - started, decodeTps: (tokens - 1) / ((end - first) / 1000), rssMiB };
  } finally {
    engine.dispose();
  }
}

const rounds = Number(process.argv[2] ?? 2);
const promptTokens = Number(process.argv[3] ?? 3000);
const model = await loadModel(await modelPath('bench-swa'));
try {
  let text = '';
  while (model.tokenize(text).length < promptTokens) text += SENTENCE;
  console.log(`prompt: ${model.tokenize(text).length} tokens, 128 out, greedy`);
  console.log('| round | swaFull | prefill ms | decode tok/s | RSS growth MiB |');
  console.log('|---|---|---|---|---|');
  for (let r = 1; r <= rounds; r++) {
    const order = r % 2 === 1 ? [false, true] : [true, false];
    for (const swaFull of order) {
      const f = await once(model, text, swaFull, `round ${r} ${swaFull}`);
      console.log(`| ${r} | ${swaFull} | ${f.prefillMs.toFixed(0)} | ${f.decodeTps.toFixed(1)} | ${f.rssMiB.toFixed(0)} |`);
    }
  }
} finally {
  model.dispose();
}
