/**
 * The engine's sampler reads only a step's best logits when its chain allows it (top-k or
 * greedy after the repetition penalties, no grammar: EngineOptions.bestLogitsOnly, on by
 * default). That must choose exactly the tokens llama.cpp's chain chooses over the whole
 * vocabulary, with the same seed, with logit biases, EOG bans and penalties, on a small and a
 * large vocabulary; and only requests whose chain allows it may take that way.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Engine, type GenerationParams, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';
import { coldRun, run } from './generation-helpers.js';

for (const preset of ['tiny', 'tiny-bpe'] as const) {
  describe(`sampling from the best logits only (${preset})`, () => {
    let model: Model;
    let best: Engine;
    let whole: Engine;
    const options = { slots: 2, contextSize: 256, threads: 1 };

    before(async () => {
      model = await loadModel(await modelPath(preset));
      best = await model.createEngine(options);
      whole = await model.createEngine({ ...options, bestLogitsOnly: false });
    });
    after(() => {
      best?.dispose();
      whole?.dispose();
      model?.dispose();
    });

    /** The same request on both engines, one at a time (one sequence a step: the same logits). */
    async function both(prompt: string, params: GenerationParams): Promise<{ tokens: number[]; fromBest: number; fromBestWhole: number }> {
      const b0 = best.stats().bestLogitsSamples;
      const w0 = whole.stats().bestLogitsSamples;
      const a = await run(best.submit({ prompt, params }));
      const b = await run(whole.submit({ prompt, params }));
      assert.deepEqual(a.tokens, b.tokens, `${preset} ${JSON.stringify(params)}: the same tokens`);
      assert.ok(a.tokens.length > 0);
      return { tokens: a.tokens, fromBest: best.stats().bestLogitsSamples - b0, fromBestWhole: whole.stats().bestLogitsSamples - w0 };
    }

    test('top-k chains and greedy choose the tokens the whole-vocabulary chain chooses', async () => {
      const chains: GenerationParams[] = [
        { temperature: 0 },
        { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 },
        { temperature: 1.5, topK: 40, topP: 1, minP: 0 },
        { temperature: 2, topK: 128 },
        { temperature: 1, topK: 1 },
        { temperature: 1.2, topK: 3, minP: 0 },
      ];
      for (const chain of chains) {
        for (const seed of [1, 2, 3]) {
          const params = { ...chain, seed, maxTokens: 40, ignoreEos: true };
          const { tokens, fromBest, fromBestWhole } = await both(`Sample ${seed}: once upon a time`, params);
          assert.equal(tokens.length, 40);
          assert.equal(fromBest, 40, `${JSON.stringify(params)}: every token from the best logits`);
          assert.equal(fromBestWhole, 0, 'bestLogitsOnly: false reads the whole vocabulary');
        }
      }
    });

    test('logit biases: a boosted token, a banned one, EOG allowed or banned', async () => {
      // The greedy answer, then the same with its first token banned and another boosted.
      const prompt = 'The harbour town woke slowly';
      const plain = await both(prompt, { temperature: 0, maxTokens: 16, ignoreEos: true });
      const banned = plain.tokens[0]!;
      const boosted = plain.tokens.find((t) => t !== banned) ?? banned + 1;
      for (const chain of [{ temperature: 0 }, { temperature: 0.9, topK: 20 }, { temperature: 1.5, topK: 5, minP: 0 }]) {
        for (const seed of [4, 5]) {
          for (const ignoreEos of [true, false]) {
            const logitBias = { [banned]: -100, [boosted]: 3 };
            const params: GenerationParams = { ...chain, seed, maxTokens: 32, ignoreEos, logitBias };
            const { tokens, fromBest } = await both(prompt, params);
            assert.ok(!tokens.includes(banned), `${JSON.stringify(params)}: the banned token never comes`);
            assert.equal(fromBest, tokens.length);
          }
        }
      }
      // A bias that lifts a token far above the rest: greedy takes it every time.
      const lifted = await both(prompt, { temperature: 0, maxTokens: 8, ignoreEos: true, logitBias: { [boosted]: 1000 } });
      assert.deepEqual(lifted.tokens, Array(8).fill(boosted));
    });

    test('repetition penalties: the window tokens are candidates too, whatever the signs of the penalties', async () => {
      const chains: GenerationParams[] = [
        { temperature: 0, repeatPenalty: 2 },
        { temperature: 0.8, topK: 40, repeatPenalty: 1.3 },
        { temperature: 1, topK: 10, frequencyPenalty: 1, repeatLastN: 4 },
        { temperature: 1, topK: 10, presencePenalty: 1.5, repeatLastN: -1 },
        { temperature: 0.9, topK: 5, presencePenalty: -2, frequencyPenalty: -1 },
        { temperature: 0, repeatPenalty: 0.5, repeatLastN: 8 },
      ];
      for (const chain of chains) {
        for (const seed of [6, 7]) {
          const params = { ...chain, seed, maxTokens: 48, ignoreEos: true };
          const { tokens, fromBest } = await both(`Repeat ${seed}: la la la la`, params);
          assert.equal(fromBest, tokens.length, `${JSON.stringify(params)}: every token from the best logits`);
        }
      }
    });

    test('repeatLastN -1 penalizes the whole sequence (llama.cpp alone would read it as no penalty)', async () => {
      // Greedy decoding of a small random model repeats itself; a strong penalty over the whole
      // sequence must change that, and equal an explicit window of the context size.
      const distinct = (t: number[]) => new Set(t).size;
      let prompt = '';
      let free = { tokens: [] as number[] };
      for (const candidate of ['la la la la', 'Loop:', 'Once upon a time', 'The end. The end.']) {
        free = await both(candidate, { temperature: 0, maxTokens: 64, ignoreEos: true });
        prompt = candidate;
        if (distinct(free.tokens) < free.tokens.length) break;
      }
      assert.ok(distinct(free.tokens) < free.tokens.length, 'a prompt whose greedy answer repeats a token');
      const params = { temperature: 0, maxTokens: 64, ignoreEos: true, repeatPenalty: 3 };
      const whole = await both(prompt, { ...params, repeatLastN: -1 });
      const explicit = await both(prompt, { ...params, repeatLastN: options.contextSize });
      const none = await both(prompt, { ...params, repeatLastN: 0 });
      assert.deepEqual(whole.tokens, explicit.tokens);
      assert.deepEqual(none.tokens, free.tokens, 'a window of 0 is no penalty');
      assert.notDeepEqual(whole.tokens, free.tokens, 'the penalty changed the greedy answer');
      assert.ok(distinct(whole.tokens) > distinct(free.tokens), `${distinct(whole.tokens)} distinct tokens with the penalty, ${distinct(free.tokens)} without`);
    });

    test('chains that read every logit keep the whole vocabulary', async () => {
      const chains: GenerationParams[] = [
        { temperature: 0.8, topK: 0, topP: 0.9 },
        { temperature: 0.8, topK: 200 },
        { temperature: 0.8, topK: 0, repeatPenalty: 1.2 },
      ];
      for (const chain of chains) {
        const { fromBest } = await both('Count to ten:', { ...chain, seed: 9, maxTokens: 24, ignoreEos: true });
        assert.equal(fromBest, 0, `${JSON.stringify(chain)}: not from the best logits only`);
      }
    });
  });
}

describe('sampling a step\'s sequences on several threads', () => {
  let model: Model;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
  });
  after(() => model?.dispose());

  test('12 sequences at once: each gives the tokens it gives alone, sampled in parallel or not', async () => {
    const request = (i: number) => ({
      prompt: `Parallel ${i}: the harbour town woke slowly`,
      params: { maxTokens: 24, temperature: 0.9, topK: 40, seed: 300 + i, ignoreEos: true, ...(i % 3 === 0 ? { repeatPenalty: 1.2 } : {}) },
    });
    const alone: number[][] = [];
    for (let i = 0; i < 12; i++) alone.push((await coldRun(model, { slots: 1, contextSize: 256, threads: 2 }, request(i))).tokens);
    for (const parallelSampling of [true, false]) {
      const engine = await model.createEngine({ slots: 12, contextSize: 256, threads: 2, parallelSampling });
      try {
        const runs = await Promise.all(Array.from({ length: 12 }, (_, i) => run(engine.submit(request(i)))));
        runs.forEach((r, i) => assert.deepEqual(r.tokens, alone[i], `sequence ${i} (parallelSampling ${parallelSampling})`));
        const steps = engine.stats().parallelSamplingSteps;
        // engine.options.parallelSampling is false in a build without OpenMP.
        if (engine.options.parallelSampling) assert.ok(steps > 0, 'some steps were sampled on several threads');
        else assert.equal(steps, 0);
        if (parallelSampling && process.platform === 'linux') assert.ok(engine.options.parallelSampling, 'the Linux build has OpenMP');
      } finally {
        engine.dispose();
      }
    }
  });
});
