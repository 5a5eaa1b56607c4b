/**
 * The grammar library with the real checker (llama.cpp's parser in the host's checker process,
 * over the tiny model's vocabulary): every built-in parses, invalid GBNF is refused with the
 * parser's reason, valid GBNF is stored.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BUILTIN_GRAMMARS, GrammarLibrary } from '@lmserve/grammars';
import { GrammarChecker } from '@lmserve/host';
import { modelPath } from '../helpers.js';
import { lmError, log, tempFiles } from './fixtures.js';

const files = tempFiles('lmserve-grammars-checker-');

describe('with the real grammar checker', () => {
  let checker: GrammarChecker;
  let library: GrammarLibrary;

  before(async () => {
    checker = new GrammarChecker({ modelPath: await modelPath('tiny'), log, timeoutMs: 20_000 });
  });

  after(async () => {
    await library?.close();
    checker?.close();
    files.cleanup();
  });

  test('every built-in parses', async () => {
    for (const b of BUILTIN_GRAMMARS) assert.equal(await checker.check(b.content, b.root), null, b.name);
  });

  test('the library opens with it (each built-in checked at open)', async () => {
    const asked: string[] = [];
    library = await GrammarLibrary.open({
      path: files.file(),
      check: (c, r) => {
        asked.push(c);
        return checker.check(c, r);
      },
      log,
    });
    assert.deepEqual(library.list().grammars.map((g) => g.name), ['code', 'json', 'json_array', 'list', 'number', 'yes_no']);
    assert.deepEqual(asked.sort(), BUILTIN_GRAMMARS.map((b) => b.content).sort());
  });

  test("invalid GBNF is refused with the parser's reason", async () => {
    for (const content of ['root ::= item', 'root ::= "a" )', 'root ::= "a"\nthing :== "b"', 'root ::= [a-z']) {
      const reason = await checker.check(content, 'root');
      assert.equal(typeof reason, 'string', content);
      await assert.rejects(library.create({ name: 'broken', content }), (err: unknown) => {
        lmError('INVALID_GRAMMAR', 'content')(err);
        const message = (err as Error).message;
        // The guard refuses an unterminated class before the parser sees it; the others carry the parser's words.
        if (!content.endsWith('[a-z')) assert.ok(message.includes(reason as string), `${message} carries ${reason}`);
        return true;
      });
      assert.equal(library.has('broken'), false);
    }
  });

  test('valid GBNF is stored, and an update is parsed again', async () => {
    const created = await library.create({ name: 'digits', description: 'Ten to twenty digits.', content: 'root ::= [0-9]{10,20}' });
    assert.equal(created.version, 1);
    await assert.rejects(library.update('digits', { content: 'root ::= [0-9]{10,20} tail' }), lmError('INVALID_GRAMMAR', 'content', /tail/));
    assert.equal((await library.update('digits', { content: 'root ::= [0-9]{10,20} tail\ntail ::= "!"' })).version, 2);
  });
});
