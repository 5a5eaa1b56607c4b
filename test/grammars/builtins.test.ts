/**
 * Each built-in's language is what its name says.
 *
 * 1. Strings that must and must not be in it, decided by an exact recognizer of the GBNF text
 *    (gbnf-matcher.ts).
 * 2. The real llama.cpp grammar machinery: the tiny model (random weights) generates under each
 *    built-in, 8 seeds as they come and 8 steered towards finishing (a logit bias on the
 *    end-of-generation token, and for `code` and `list` on line breaks and backticks); every
 *    output that finished ("stop") must conform, checked with JSON.parse or a regular
 *    expression and with the recognizer, and some must finish.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BUILTIN_GRAMMARS } from '@lmserve/grammars';
import { loadModel, type Engine, type Model } from '@lmserve/engine';
import { modelPath } from '../helpers.js';
import { GbnfMatcher } from './gbnf-matcher.js';

function builtin(name: string): { content: string; root: string } {
  const found = BUILTIN_GRAMMARS.find((b) => b.name === name);
  assert.ok(found, `no built-in ${name}`);
  return found;
}

function parses(text: string): unknown {
  try {
    return { value: JSON.parse(text) as unknown };
  } catch {
    return undefined;
  }
}

/** What each built-in promises, independently of its GBNF. */
const CONFORMS: Record<string, (text: string) => boolean> = {
  json: (t) => parses(t) !== undefined,
  json_array: (t) => Array.isArray((parses(t) as { value: unknown } | undefined)?.value),
  number: (t) => typeof (parses(t) as { value: unknown } | undefined)?.value === 'number' && /^-?\d/.test(t),
  yes_no: (t) => /^(yes|no)$/.test(t),
  code: (t) => /^```[A-Za-z0-9_+#.-]{0,32}\n(?:(?!```)[^\n]*\n)*```$/.test(t),
  list: (t) => /^(?:[^\n]+\n)+$/.test(t),
};

const SAMPLES: Record<string, { match: string[]; reject: string[] }> = {
  json: {
    match: [
      '{}', '[]', '0', '-0.5e+10', '12', 'true', 'false', 'null', '""', '"x\\n\\u00e9\\"\\\\\\/"', '"héllo 🎉 \u007f"',
      '{"a": 1, "b": [true, false, null]}', '{"a":{"b":{"c":[]}}}', '[1,2,3]', '{\n  "k": "v",\n  "n": [\n    1\n  ]\n}', '[ 1 , 2 ]',
      '{"tab\\t": -1.25E-3}',
    ],
    reject: [
      '', ' {}', '{} ', '{}\n', '{a: 1}', '[1,]', '01', "'x'", '{"a" 1}', '"tab\there"', '"nl\nhere"', '[1,  2]', '[1,\n\n2]',
      'true false', 'NaN', '"\\x41"', '"\\u12"', '+1', '.5', '1.', '{"a":1,}', '"unterminated', '"nul\u0000"', 'True',
    ],
  },
  json_array: {
    match: ['[]', '[ ]', '[1, "a", {"b": null}]', '[\n  1,\n  2\n]', '[[[]]]', '["x"]'],
    reject: ['{}', '1', '"[]"', '[1 2]', '[', '[]]', ' []', '[1,]'],
  },
  number: {
    match: ['0', '-0', '12', '3.14', '-1e5', '2E-3', '1.5e+10', '9007199254740993', '0.0000000000000001'],
    reject: ['', '01', '+1', '1.', '.5', '1e', '1 ', '--1', '1e1000', '0x10', 'NaN', 'Infinity', '1,5', '12345678901234567'],
  },
  yes_no: {
    match: ['yes', 'no'],
    reject: ['', 'Yes', 'NO', 'yes ', ' no', 'yesno', 'y', 'n', 'yes\n', 'maybe'],
  },
  code: {
    match: [
      '```\n```', '```python\nprint(1)\n```', '```c++\nint x;\n\n`a` ``b`` ```c\n```', '```objective-c\n\n\n```', '```\n  indented\n\ttab\n```',
      '```\n`\n``\n```',
    ],
    reject: [
      '', '```', '```\nx```', '```py thon\nx\n```', '```\n```\n```', 'x```\n```', '```\nno end\n', '```\n```\n', ' ```\n```', '```python```',
      `\`\`\`${'x'.repeat(33)}\n\`\`\``,
    ],
  },
  list: {
    match: ['a\n', 'first item\nsecond\n', '- x\n- y\n', '1. one\n2. two\n3. three\n', ' \n', 'tabs\tand spaces \n'],
    reject: ['', '\n', 'a', 'a\n\nb\n', 'a\nb', '\na\n', 'a\n\n'],
  },
};

describe('each built-in accepts what it says and nothing else (its GBNF, recognized exactly)', () => {
  test('the recognizer itself', () => {
    const m = new GbnfMatcher('root ::= ("a" | "ab") "b"? x{2,3}\nx ::= [^a-c]');
    assert.ok(m.matches('abdd'));
    assert.ok(m.matches('abbzzz'));
    assert.ok(!m.matches('abzzzz'));
    assert.ok(!m.matches('ac'));
    assert.throws(() => new GbnfMatcher('root ::= missing'), /undefined rule/);
  });

  assert.deepEqual(Object.keys(SAMPLES).sort(), BUILTIN_GRAMMARS.map((b) => b.name).sort(), 'samples for every built-in');
  for (const [name, { match, reject }] of Object.entries(SAMPLES)) {
    test(name, () => {
      const { content, root } = builtin(name);
      const grammar = new GbnfMatcher(content, root);
      for (const text of match) {
        assert.ok(grammar.matches(text), `${name} must accept ${JSON.stringify(text)}`);
        assert.ok(CONFORMS[name]?.(text), `${name}'s own check must accept ${JSON.stringify(text)}`);
      }
      for (const text of reject) assert.ok(!grammar.matches(text), `${name} must refuse ${JSON.stringify(text)}`);
    });
  }
});

describe('generation under each built-in with the tiny model (llama.cpp\'s grammar sampler)', () => {
  let model: Model;
  let engine: Engine;
  const steer: Record<string, Array<[number, number]>> = {};

  before(async () => {
    model = await loadModel(await modelPath('tiny'));
    engine = await model.createEngine({ slots: 8, contextSize: 512, maxQueue: 64 });
    const eos = model.info.specialTokens.eos?.id;
    assert.ok(eos !== undefined, 'the tiny model has an end-of-generation token');
    const newlines: number[] = [];
    const backticks: number[] = [];
    for (let id = 0; id < model.info.vocabSize; id++) {
      const piece = model.detokenize([id]);
      if (piece === '\n') newlines.push(id);
      else if (/^`+$/.test(piece)) backticks.push(id);
    }
    assert.ok(newlines.length > 0, 'a line-break token');
    const bias = (ids: number[], by: number) => ids.map((id): [number, number] => [id, by]);
    // Strong enough to finish often, mild enough that lists have several lines and code blocks
    // a language word and lines of their own (tuned on the tiny model).
    for (const name of ['json', 'json_array', 'number', 'yes_no']) steer[name] = [[eos, 8]];
    steer.list = [[eos, 2], ...bias(newlines, 4)];
    steer.code = [[eos, 2], ...bias(newlines, 2), ...bias(backticks, 3)];
  });

  after(() => {
    engine?.dispose();
    model?.dispose();
  });

  for (const { name } of BUILTIN_GRAMMARS) {
    test(name, async (t) => {
      const { content, root } = builtin(name);
      const recognizer = new GbnfMatcher(content, root);
      const runs = [];
      for (const steered of [false, true]) {
        for (let seed = 1; seed <= 8; seed++) {
          const params = { maxTokens: 200, seed, temperature: 1, grammar: content, grammarRoot: root, ...(steered ? { logitBias: steer[name] } : {}) };
          runs.push({ steered, seed, generation: engine.submit({ prompt: `${name}:`, params }) });
        }
      }
      let finished = 0;
      const seen: string[] = [];
      for (const run of runs) {
        const result = await run.generation.result;
        const label = `${run.steered ? 'steered ' : ''}seed ${run.seed}`;
        if (result.finishReason !== 'stop') {
          assert.equal(result.finishReason, 'length', `${label}: ${result.finishReason}`);
          continue;
        }
        finished++;
        seen.push(`${label}: ${JSON.stringify(result.text).slice(0, 120)}`);
        assert.ok(CONFORMS[name]?.(result.text), `${name}, ${label}: ${JSON.stringify(result.text)} does not conform`);
        assert.ok(recognizer.matches(result.text), `${name}, ${label}: ${JSON.stringify(result.text)} is not in the grammar's language`);
      }
      t.diagnostic(`${name}: ${finished} of ${runs.length} finished\n${seen.join('\n')}`);
      assert.ok(finished > 0, `${name}: no output finished within 200 tokens`);
    });
  }
});
