import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test, describe, before, after } from 'node:test';
import { addonPath, jsonSchemaToGrammar, loadModel, LmError, type Engine, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';

/** `root ::= "w0" | "w1" | ...`: n alternatives in one rule. */
function words(n: number, prefix = 'w'): string {
  return Array.from({ length: n }, (_, i) => `"${prefix}${i}"`).join(' | ');
}

describe('grammar verdicts name what is wrong', () => {
  let model: Model;
  before(async () => {
    model = await loadModel(await modelPath('tiny'), { vocabOnly: true });
  });
  after(() => model.dispose());

  test('a syntax error gives the parser message with line, column and the text there', () => {
    const reason = model.checkGrammar('root ::= "a" | b\nb ::= "b"\nfoo = "c"\n');
    assert.ok(reason !== null);
    assert.match(reason, /expecting ::=/);
    assert.match(reason, /line 3, column 5/);
    assert.match(reason, /`= "c"`/);
    assert.doesNotMatch(reason, /failed to parse grammar/);

    const open = model.checkGrammar('root ::= ("a" | "b"');
    assert.match(open ?? '', /expecting '\)' at line 1, column 20 \(the end of the grammar\)/);

    assert.match(model.checkGrammar('root ::= "unterminated') ?? '', /unexpected end of input: a string .* is not closed/);

    const stray = model.checkGrammar('root ::= "x" ::= "y"');
    assert.match(stray ?? '', /expecting newline or end at line 1, column 14: `::= "y"`/);
  });

  test('the excerpt is short even when the rest of the grammar is long', () => {
    const reason = model.checkGrammar(`root ::= "a"\nbad rule here ${'x'.repeat(5000)}\n`);
    assert.ok(reason !== null && reason.length < 200, reason ?? '');
    assert.match(reason, /line 2, column 5/);
  });

  test('a missing root rule names the rule', () => {
    const reason = model.checkGrammar('answer ::= "yes" | "no"');
    assert.match(reason ?? '', /root rule 'root' is not defined/);
    assert.match(reason ?? '', /'answer'/);
    assert.equal(model.checkGrammar('answer ::= "yes" | "no"', 'answer'), null);
    assert.match(model.checkGrammar('root ::= "x"', 'start') ?? '', /'start'/);
  });

  test('an undefined rule and left recursion are named', () => {
    assert.match(model.checkGrammar('root ::= item ("," item)*') ?? '', /rule 'item' is used but never defined/);
    assert.match(model.checkGrammar('root ::= item') ?? '', /rule 'item' is used but never defined/);
    assert.match(model.checkGrammar('root ::= "a" <[99999]>') ?? '', /rule 'root' refers to token 99999, outside the vocabulary \(0\.\.31999\)/);
    assert.equal(model.checkGrammar('root ::= <[2]> | "x"'), null);
    assert.match(model.checkGrammar('root ::= root "a" | "a"') ?? '', /rule 'root' is left-recursive/);
    assert.match(model.checkGrammar('root ::= list\nlist ::= list "," "x" | "x"') ?? '', /rule 'list' is left-recursive/);
  });

  test('valid grammars give null, and their width', () => {
    assert.equal(model.checkGrammar('root ::= "a" | "b"'), null);
    const report = model.inspectGrammar('root ::= "a" | "b" | "c"');
    assert.deepEqual(
      { valid: report.valid, verdict: report.verdict, reason: report.reason, width: report.width, widestRule: report.widestRule },
      { valid: true, verdict: 'valid', reason: null, width: 3, widestRule: 'root' },
    );
    assert.equal(report.rules, 1);
    assert.equal(report.alternatives, 3);
    assert.equal(report.maxWidth, 1024);
    // A rule referenced first counts with its own alternatives; after a nullable one, the next one too.
    assert.equal(model.inspectGrammar('root ::= a | "z"\na ::= "x" | "y"').width, 3);
    assert.equal(model.inspectGrammar('root ::= a? b\na ::= "x" | "y"\nb ::= "p" | "q" | "r"').width, 5);
    const json = jsonSchemaToGrammar({
      type: 'object',
      properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } }, n: { type: 'number' } },
    });
    const jsonReport = model.inspectGrammar(json);
    assert.ok(jsonReport.valid && jsonReport.width < 64, JSON.stringify(jsonReport));
    // Long repetitions expand into many rules, each narrow.
    const rep = model.inspectGrammar('root ::= [a-z]{0,900} "."');
    assert.ok(rep.valid && rep.rules > 100 && rep.width <= 4, JSON.stringify(rep));
  });

  test('a grammar too wide to sample from is refused, naming the widest rule', () => {
    const flat = model.checkGrammar(`root ::= ${words(2000)}`);
    assert.match(flat ?? '', /too complex: rule 'root' can open 2000 alternatives at one point; at most 1024/);
    // The same width spread over nested rules, or behind a prefix, is found too.
    const nested = model.inspectGrammar(`root ::= a | b\na ::= ${words(700, 'a')}\nb ::= ${words(700, 'b')}`);
    assert.deepEqual([nested.verdict, nested.width, nested.widestRule], ['too-complex', 1400, 'root']);
    const behind = model.inspectGrammar(`root ::= "x" (" " word)*\nword ::= ${words(1500)}`);
    assert.deepEqual([behind.verdict, behind.widestRule], ['too-complex', 'word']);
    assert.equal(model.checkGrammar(`root ::= ${words(1000)}`), null);
  });

  test('checking a grammar prints nothing to stderr', () => {
    const script = `
      const { ModelLoader, checkGrammar } = require(${JSON.stringify(addonPath())});
      new ModelLoader(process.argv[1], { vocabOnly: true }).load().then((m) => {
        const reasons = ['root ::= (', 'nope ::= "x"', 'root ::= root "a"', 'root ::= ' + Array.from({ length: 1500 }, (_, i) => '"w' + i + '"').join(' | ')]
          .map((g) => checkGrammar(m, g, 'root'));
        process.stdout.write(JSON.stringify(reasons));
      });`;
    const child = spawnSync(process.execPath, ['-e', script, model.path], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const reasons = JSON.parse(child.stdout) as string[];
    assert.equal(reasons.length, 4);
    assert.ok(reasons.every((r) => typeof r === 'string' && r.length > 0));
    assert.equal(child.stderr, '');
  });
});

describe('sampling under a grammar', () => {
  let model: Model;
  let engine: Engine;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
    engine = await model.createEngine({ slots: 8, contextSize: 512, maxQueue: 64 });
  });
  after(() => {
    engine.dispose();
    model.dispose();
  });

  test('an invalid grammar fails the submit with INVALID_GRAMMAR naming params.grammar and the reason', () => {
    assert.throws(
      () => engine.submit({ prompt: 'x', params: { grammar: 'answer ::= "yes"' } }),
      (err: unknown) => {
        assert.ok(err instanceof LmError);
        assert.equal(err.code, 'INVALID_GRAMMAR');
        assert.equal(err.field, 'params.grammar');
        assert.match(err.message, /^params\.grammar is not valid: the root rule 'root' is not defined/);
        return true;
      },
    );
    assert.throws(() => engine.submit({ prompt: 'x', params: { grammar: `root ::= ${words(5000)}` } }), (err: unknown) => {
      assert.ok(err instanceof LmError && err.code === 'INVALID_GRAMMAR' && err.field === 'params.grammar');
      assert.match(err.message, /too complex: rule 'root' can open 5000 alternatives/);
      return true;
    });
  });

  test('20 seeded generations under yes/no all conform', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, seed) =>
        engine.submit({ prompt: `Question ${seed}?`, params: { grammar: 'root ::= ("yes" | "no")', seed, temperature: 1, maxTokens: 16 } }).result,
      ),
    );
    for (const [seed, r] of results.entries()) {
      assert.ok(r.text === 'yes' || r.text === 'no', `seed ${seed}: ${JSON.stringify(r.text)}`);
      assert.equal(r.finishReason, 'stop');
    }
  });

  test('20 seeded generations under a JSON grammar all parse', async () => {
    const grammar = jsonSchemaToGrammar({
      type: 'object',
      properties: {
        id: { type: 'integer', minimum: 0, maximum: 999 },
        label: { type: 'string', maxLength: 8 },
        flags: { type: 'array', items: { enum: ['x', 'y'] }, maxItems: 2 },
      },
      required: ['id', 'label', 'flags'],
      additionalProperties: false,
    });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, seed) =>
        engine.submit({ prompt: 'JSON:', params: { grammar, seed: 100 + seed, temperature: 1, maxTokens: 200 } }).result,
      ),
    );
    for (const [seed, r] of results.entries()) {
      assert.equal(r.finishReason, 'stop', `seed ${seed}: ${r.text}`);
      const value = JSON.parse(r.text) as { id: number; label: string; flags: string[] };
      assert.ok(Number.isInteger(value.id) && value.id >= 0 && value.id <= 999, r.text);
      assert.equal(typeof value.label, 'string');
      assert.ok(value.flags.every((f) => f === 'x' || f === 'y'), r.text);
    }
  });

  test('a logit bias and penalties still apply under a grammar', async () => {
    // Every token that could begin "no" under the grammar ("n", "no", the byte <0x6E>), and
    // any that only looks like one once detokenized alone: banned, so every answer is "yes".
    const spells = (prefixes: string[]) => {
      const ids: number[] = [];
      for (let id = 0; id < model.info.vocabSize; id++) {
        const text = model.detokenize([id]);
        if (text.length > 0 && prefixes.some((p) => p.startsWith(text.trimStart()) && text.trimStart().length > 0)) ids.push(id);
      }
      return ids;
    };
    const noIds = spells(['no']);
    assert.ok(noIds.length > 0);
    const banNo = Object.fromEntries(noIds.map((id) => [id, -100]));
    for (let seed = 0; seed < 8; seed++) {
      const r = await engine.submit({
        prompt: 'Answer:',
        params: { grammar: 'root ::= "yes" | "no"', seed, temperature: 1.5, logitBias: banNo, repeatPenalty: 1.2 },
      }).result;
      assert.equal(r.text, 'yes', `seed ${seed}`);
    }
    // A bias that bans everything the grammar allows fails that request, and only it.
    const banAll = Object.fromEntries(spells(['no', 'yes']).map((id) => [id, -100]));
    await assert.rejects(
      engine.submit({ prompt: 'Answer:', params: { grammar: 'root ::= "yes" | "no"', logitBias: banAll } }).result,
      (err: unknown) => {
        assert.ok(err instanceof LmError && err.code === 'INVALID_GRAMMAR', String(err));
        assert.match(err.message, /allows no token/);
        return true;
      },
    );
    const after = await engine.submit({ prompt: 'Answer:', params: { grammar: 'root ::= "yes" | "no"', seed: 1 } }).result;
    assert.ok(after.text === 'yes' || after.text === 'no');
  });

  test('a grammar never leaks into the unconstrained sequences beside it', async () => {
    const grammar = 'root ::= [0-9]{8,16}';
    for (const round of [0, 1, 2]) {
      const free = (i: number) => ({ maxTokens: 24, seed: 1000 + round * 10 + i, temperature: 0.9, ignoreEos: true });
      const alone: string[] = [];
      for (let i = 0; i < 4; i++) alone.push((await engine.submit({ prompt: `Free ${i}`, params: free(i) }).result).text);
      const generations = Array.from({ length: 8 }, (_, i) =>
        i % 2 === 0
          ? engine.submit({ prompt: `Digits ${i}:`, params: { grammar, seed: round * 10 + i, temperature: 1, maxTokens: 32 } })
          : engine.submit({ prompt: `Free ${(i - 1) / 2}`, params: free((i - 1) / 2) }),
      );
      const results = await Promise.all(generations.map((g) => g.result));
      for (let i = 0; i < 8; i++) {
        const text = results[i]!.text;
        if (i % 2 === 0) {
          assert.match(text, /^[0-9]{8,16}$/, `round ${round}, constrained ${i}`);
        } else {
          assert.equal(text, alone[(i - 1) / 2], `round ${round}: unconstrained ${i} is what it is alone`);
          assert.match(text, /[^0-9]/, `round ${round}: unconstrained ${i} has characters the grammar forbids`);
        }
      }
    }
  });

  test('a resample in a known grammar state samples exactly what llama.cpp\'s full pass samples', () => {
    // The same requests in two processes: with the known states (default) and with every
    // resample done as llama.cpp does it (LMSERVE_GRAMMAR_STATES=off). Same seeds, same texts.
    const json = jsonSchemaToGrammar({
      type: 'object',
      properties: { id: { type: 'integer' }, tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 } },
      required: ['id', 'tags'],
      additionalProperties: false,
    });
    const script = `
      import { loadModel } from '@lmserve/engine';
      const [path, json] = process.argv.slice(1);
      const model = await loadModel(path);
      const engine = await model.createEngine({ slots: 2, contextSize: 512 });
      const grammars = [json, 'root ::= [0-9]{12} ("," [0-9]{1,4})*', 'root ::= ("yes" | "no" | "maybe") (" " [a-z]{2,6}){0,6}'];
      const ban = Object.fromEntries(Array.from({ length: 259 }, (_, i) => [i, -50]));
      const settings = [{ temperature: 1, logitBias: ban }, { temperature: 0 }, { temperature: 0.9, topK: 0, topP: 0.9 }, { temperature: 1.2, topK: 5, repeatPenalty: 1.3, logitBias: { 15: -2, 29900: 3 } }];
      const texts = [];
      for (const grammar of grammars) for (const s of settings) for (let seed = 0; seed < 6; seed++) {
        texts.push((await engine.submit({ prompt: 'Out ' + seed + ':', params: { grammar, seed, maxTokens: 60, ...s } }).result).text);
      }
      const st = engine.stats();
      process.stdout.write(JSON.stringify({ texts, full: st.grammarFullSamples, known: st.grammarKnownStates }));
      engine.dispose(); model.dispose();`;
    const run = (env: Record<string, string>) => {
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script, model.path, json], {
        encoding: 'utf8',
        env: { ...process.env, ...env },
      });
      assert.equal(child.status, 0, child.stderr);
      return JSON.parse(child.stdout) as { texts: string[]; full: number; known: number };
    };
    const reference = run({ LMSERVE_GRAMMAR_STATES: 'off' });
    const known = run({});
    assert.equal(reference.known, 0);
    assert.ok(reference.full >= 100, `resamples: ${reference.full}`);
    assert.equal(known.full, reference.full);
    // Most resamples meet a state seen before (the start, after a digit, inside a string).
    assert.ok(known.known * 2 >= known.full, `known ${known.known} of ${known.full}`);
    assert.equal(known.texts.length, 72);
    known.texts.forEach((text, i) => assert.equal(text, reference.texts[i], `request ${i}`));
    for (const text of known.texts.slice(0, 24)) {
      const value = JSON.parse(text) as { id: number; tags: string[] };
      assert.ok(Number.isInteger(value.id) && Array.isArray(value.tags), text);
    }
    for (const text of known.texts.slice(24, 48)) assert.match(text, /^[0-9]{12}(,[0-9]{1,4})*$/);
  });

  test('a grammar the model mostly follows takes the fast path', async () => {
    const fresh = await model.createEngine({ slots: 2, contextSize: 256 });
    try {
      // Any text: the grammar accepts nearly every token the chain chooses.
      for (let seed = 0; seed < 4; seed++) {
        await fresh.submit({ prompt: 'Anything:', params: { grammar: 'root ::= [^\\x00]*', seed, maxTokens: 32, ignoreEos: true } }).result;
      }
      const loose = fresh.stats();
      assert.ok(loose.grammarFastSamples >= 100, JSON.stringify(loose));
      assert.ok(loose.grammarFullSamples * 10 <= loose.grammarFastSamples, JSON.stringify(loose));
      // Digits only: random weights almost never choose one, so the full grammar is applied.
      const r = await fresh.submit({ prompt: 'Digits:', params: { grammar: 'root ::= [0-9]{20}', seed: 1, maxTokens: 32 } }).result;
      assert.match(r.text, /^[0-9]{20}$/);
      const strict = fresh.stats();
      assert.ok(strict.grammarFullSamples - loose.grammarFullSamples >= 10, JSON.stringify(strict));
      // Unconstrained sampling is not counted.
      await fresh.submit({ prompt: 'Free:', params: { maxTokens: 16, ignoreEos: true } }).result;
      const free = fresh.stats();
      assert.equal(free.grammarFastSamples + free.grammarFullSamples, strict.grammarFastSamples + strict.grammarFullSamples);
    } finally {
      fresh.dispose();
    }
  });

  test('a wide grammar beside plain requests: all finish, each as it would alone', async () => {
    const grammar = `root ::= word (" " word)*\nword ::= ${words(1000)}`;
    const heavyParams = { grammar, seed: 9, maxTokens: 24 };
    const free = (i: number) => ({ maxTokens: 32, seed: 500 + i, ignoreEos: true });
    const alone: string[] = [];
    for (let i = 0; i < 3; i++) alone.push((await engine.submit({ prompt: `Plain ${i}`, params: free(i) }).result).text);
    const heavyAlone = await engine.submit({ prompt: 'Words:', params: heavyParams }).result;
    assert.match(heavyAlone.text, /^w\d*( w\d*)* ?$/);
    const before = engine.stats();
    const heavy = engine.submit({ prompt: 'Words:', params: heavyParams });
    const plain = await Promise.all([0, 1, 2].map((i) => engine.submit({ prompt: `Plain ${i}`, params: free(i) }).result));
    plain.forEach((r, i) => assert.equal(r.text, alone[i]));
    // Sampled on the sampling thread, sitting out steps or not: the same tokens.
    assert.equal((await heavy.result).text, heavyAlone.text);
    assert.ok(engine.stats().grammarFullSamples > before.grammarFullSamples);
  });

  test('cancelling and disposing while a grammar samples beside others end cleanly', async () => {
    const grammar = `root ::= word (" " word)*\nword ::= ${words(200)}`;
    const own = await model.createEngine({ slots: 3, contextSize: 4096 });
    // Company, so that the grammar's full sampling runs on the sampling thread.
    const runner = own.submit({ prompt: 'Runner', params: { maxTokens: 100000, ignoreEos: true } });
    for (let round = 0; round < 3; round++) {
      const cancelled = own.submit({ prompt: 'Words:', params: { grammar, seed: 2 + round, maxTokens: 100000, ignoreEos: true } });
      let n = 0;
      for await (const chunk of cancelled) {
        n += chunk.tokens.length;
        if (n >= 2 + round) cancelled.cancel();
      }
      assert.equal((await cancelled.result).finishReason, 'cancelled');
    }
    const running = own.submit({ prompt: 'Words:', params: { grammar, seed: 7, maxTokens: 100000, ignoreEos: true } });
    await running[Symbol.asyncIterator]().next();
    own.dispose();
    await assert.rejects(running.result, { code: 'DISPOSED' });
    await assert.rejects(runner.result, { code: 'DISPOSED' });
  });
});
