import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkGrammarText, MAX_GRAMMAR_BYTES, MAX_GRAMMAR_DEPTH, MAX_GRAMMAR_REPEAT } from '@lmserve/core';

function refused(text: string, why: RegExp): void {
  assert.throws(() => checkGrammarText(text, 'params.grammar'), (err: any) => {
    assert.equal(err.code, 'INVALID_GRAMMAR');
    assert.equal(err.field, 'params.grammar');
    assert.match(err.message, why);
    return true;
  });
}

describe('grammar text that could harm llama.cpp is refused before any parser sees it', () => {
  test('ordinary grammars pass, with parentheses, classes, literals and comments', () => {
    checkGrammarText('root ::= ("yes" | "no") # a choice\n');
    checkGrammarText('root ::= [a-z(]+ "(" ")" ("(" [)] ")"){0,3}');
    checkGrammarText('root ::= "a"{2} "b"{1,} "c"{0,4} "\\"("');
    checkGrammarText(`root ::= ${'('.repeat(MAX_GRAMMAR_DEPTH)}"x"${')'.repeat(MAX_GRAMMAR_DEPTH)}`);
    checkGrammarText(`root ::= "x"{${MAX_GRAMMAR_REPEAT}}`);
  });

  test('a NUL character, raw or escaped', () => {
    refused('root ::= "\u0000"', /NUL/);
    refused('root ::= "\\x00"', /NUL/);
    refused('root ::= [\\u0000-\\u0010]', /NUL/);
    refused('root ::= "\\U00000000"', /NUL/);
  });

  test('nesting deeper than the limit (200,000 parentheses overflowed the stack)', () => {
    refused(`root ::= ${'('.repeat(200_000)}"x"${')'.repeat(200_000)}`, /nests parentheses|larger than/);
    refused(`root ::= ${'('.repeat(60_000)}"x"${')'.repeat(60_000)}`, /nests parentheses/);
    refused(`root ::= ${'('.repeat(MAX_GRAMMAR_DEPTH + 1)}"x"${')'.repeat(MAX_GRAMMAR_DEPTH + 1)}`, /nests parentheses/);
  });

  test('parentheses inside literals, classes and comments do not count', () => {
    checkGrammarText(`root ::= "${'('.repeat(500)}" [${'('.repeat(500)}] # ${'('.repeat(500)}\n`);
  });

  test('a repetition whose minimum is above its maximum (it allocated until the kernel killed the host)', () => {
    refused('root ::= "a"{5,2}', /minimum is above its maximum/);
  });

  test('repetition counts above the limit, and malformed ones', () => {
    refused(`root ::= "a"{${MAX_GRAMMAR_REPEAT + 1}}`, /repeats more than/);
    refused('root ::= "a"{0,99999999999}', /repeats more than/);
    refused('root ::= "a"{x}', /malformed repetition/);
  });

  test('size above the limit', () => {
    refused(`root ::= "${'a'.repeat(MAX_GRAMMAR_BYTES)}"`, /larger than/);
  });

  test('unterminated literals and classes', () => {
    refused('root ::= "abc', /unterminated string/);
    refused('root ::= [abc', /unterminated character class/);
  });
});
