/**
 * The grammar checker process on its own, fed grammars that bypass the edge's guard: whatever
 * llama.cpp's parser does with them (abort, stack overflow, runaway allocation), the caller
 * gets a verdict, the checker comes back, and verdicts are cached by content.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { GrammarChecker } from '@lmserve/host';
import { createLogger } from '@lmserve/protocol';
import { modelPath } from '../helpers.js';

describe('the grammar checker process', () => {
  let checker: GrammarChecker;
  const warnings: string[] = [];

  before(async () => {
    const log = createLogger({ test: 'grammar-checker' }, { level: 'warn', write: (line) => warnings.push(line) });
    checker = new GrammarChecker({ modelPath: await modelPath('tiny'), log, timeoutMs: 20_000 });
  });

  after(() => checker.close());

  test('a valid grammar passes; an invalid one gets the parser\'s reason', async () => {
    assert.equal(await checker.check('root ::= "yes" | "no"', 'root'), null);
    const reason = await checker.check('root ::= "unterminated', 'root');
    assert.equal(typeof reason, 'string');
    assert.ok((reason as string).length > 0);
    const noRoot = await checker.check('answer ::= "yes"', 'root');
    assert.equal(typeof noRoot, 'string');
    assert.equal(await checker.check('answer ::= "yes"', 'answer'), null);
  });

  test('200,000 nested parentheses crash the parser, not the caller; the checker comes back', async () => {
    const deep = `root ::= ${'('.repeat(200_000)}"x"${')'.repeat(200_000)}`;
    const reason = await checker.check(deep, 'root');
    assert.match(reason ?? '', /SIGSEGV|SIGBUS|SIGABRT|exit|killed|parse|deep|stack/i, String(reason));
    assert.equal(await checker.check('root ::= "after the crash"', 'root'), null);
    assert.ok(checker.stats().crashes >= 1);
  });

  test('a NUL character and a reversed repetition are refused without harm', async () => {
    const nul = await checker.check('root ::= "\u0000"', 'root');
    assert.equal(typeof nul, 'string');
    const reversed = await checker.check('root ::= "a"{5,2}', 'root');
    assert.equal(typeof reversed, 'string');
    assert.equal(await checker.check('root ::= [a-z]+', 'root'), null);
  });

  test('a verdict is cached by content: the same grammar is not parsed twice', async () => {
    const grammar = 'root ::= ("a" | "b"){1,8}';
    const before = checker.stats();
    const verdicts = await Promise.all(Array.from({ length: 20 }, () => checker.check(grammar, 'root')));
    assert.ok(verdicts.every((v) => v === null));
    for (let i = 0; i < 20; i++) assert.equal(await checker.check(grammar, 'root'), null);
    const now = checker.stats();
    assert.equal(now.parsed - before.parsed, 1, 'parsed once');
    assert.equal(now.cacheHits - before.cacheHits, 20, 'then answered from the cache');
    // Another root is another grammar.
    assert.equal(typeof (await checker.check(grammar, 'other')), 'string');
    assert.equal(checker.stats().parsed - before.parsed, 2);
  });
});
