/** parseEnvFile: the dotenv subset the service reads, and errors that name the file and line. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import { parseEnvFile } from '../../packages/supervisor/src/env-file.js';

const parse = (text: string) => Object.fromEntries(parseEnvFile(text, 'f.env'));

/** Asserts that parsing fails with INVALID_REQUEST whose message starts with `f.env:<line>:` and matches `reason`. */
function rejects(text: string, line: number, reason: RegExp): void {
  assert.throws(
    () => parseEnvFile(text, 'f.env'),
    (err: unknown) => {
      assert.ok(err instanceof LmError, String(err));
      assert.equal(err.code, 'INVALID_REQUEST');
      assert.ok(err.message.startsWith(`f.env:${line}: `), err.message);
      assert.match(err.message, reason);
      return true;
    },
    text,
  );
}

describe('env files', () => {
  test('KEY=VALUE lines; blank lines and comment lines are skipped', () => {
    assert.deepEqual(parse('A=1\n\n# B=2\n   # C=3\nD = four\n  E=5  \n'), { A: '1', D: 'four', E: '5' });
  });

  test('a comment after an unquoted value needs whitespace before the #', () => {
    assert.deepEqual(parse('A=plain # comment\nB=a#b\nC=x\t# tab\n'), { A: 'plain', B: 'a#b', C: 'x' });
  });

  test('an empty value, also when only a comment follows the =', () => {
    assert.deepEqual(parse('A=\nB= # no value\nC=#\n'), { A: '', B: '', C: '' });
  });

  test('the export prefix is allowed and dropped; a key named export is still a key', () => {
    assert.deepEqual(parse('export A=1\nexport   B=2\nexport=3\n'), { A: '1', B: '2', export: '3' });
  });

  test('double quotes: escapes \\n \\r \\t \\" \\\\, other backslashes kept, # and spaces kept', () => {
    const vars = parse(String.raw`A="x\ny" ` + '\n' + String.raw`B="tab\there\r" ` + '\n' + String.raw`C="say \"hi\" \\ \q"` + '\nD="  # not a comment  "\n');
    assert.deepEqual(vars, { A: 'x\ny', B: 'tab\there\r', C: 'say "hi" \\ \\q', D: '  # not a comment  ' });
  });

  test('single quotes: the text as it is, no escapes', () => {
    assert.deepEqual(parse(String.raw`A='raw\n \" # x'` + '\n'), { A: String.raw`raw\n \" # x` });
  });

  test('empty quotes, and a comment after the closing quote', () => {
    assert.deepEqual(parse(`A=""\nB=''\nC="v" # note\nD='w'# note\n`), { A: '', B: '', C: 'v', D: 'w' });
  });

  test('a # in a comment after a quoted value does not end the value early', () => {
    assert.deepEqual(parse('A="a" # say "hi"\n'), { A: 'a' });
  });

  test('CRLF line endings; the last of repeated keys wins', () => {
    assert.deepEqual(parse('A=1\r\nB="two"\r\nA=3\r\n'), { A: '3', B: 'two' });
  });

  test('unterminated quotes name the file and line', () => {
    rejects('A=1\nB="open\n', 2, /unterminated quoted value/);
    rejects("A='open\n", 1, /unterminated quoted value/);
    // An escaped quote does not close the value.
    rejects('A=1\n\nC="ends with \\"\n', 3, /unterminated quoted value/);
  });

  test('text after a closing quote is an error, not silently dropped', () => {
    rejects('A="x" y\n', 1, /unexpected "y" after the closing quote/);
  });

  test('a line that is not KEY=VALUE names the file and line', () => {
    rejects('A=1\nnot a line\n', 2, /expected KEY=VALUE, got "not a line"/);
    rejects('# ok\n1A=2\n', 2, /expected KEY=VALUE/);
    rejects('A B=1\n', 1, /expected KEY=VALUE/);
    rejects('=1\n', 1, /expected KEY=VALUE/);
    rejects('A=1\n\n\nA-B=2\n', 4, /expected KEY=VALUE/);
  });
});
