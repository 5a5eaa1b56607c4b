/**
 * Checks on GBNF text before any llama.cpp parser sees it. The parser is recursive and trusts
 * its input: a NUL character aborts the process, 200,000 nested parentheses overflow its stack,
 * and `"a"{5,2}` (minimum above maximum) makes it allocate until the kernel kills it. Those are
 * refused here, cheaply, on every transport. What this scan cannot rule out is caught by the
 * host's grammar checker process, where a crash costs one 400 and not a model.
 */
import { LmError } from '@lmserve/protocol';
import { MAX_GRAMMAR_BYTES } from './params.js';

/** Deepest nesting of parentheses a grammar may have. */
export const MAX_GRAMMAR_DEPTH = 64;
/** Largest repetition count (`x{m}`, `x{m,n}`, `x{m,}`): each count unrolls into rules. */
export const MAX_GRAMMAR_REPEAT = 1024;

function refuse(field: string, why: string): never {
  throw new LmError('INVALID_GRAMMAR', `${field} ${why}`, { field });
}

/** Skips a "..." literal or a [...] class starting at `i` (its opening char); returns the index after it. */
function skipQuoted(text: string, i: number, close: string, field: string): number {
  let j = i + 1;
  while (j < text.length) {
    const c = text[j];
    if (c === '\\') {
      checkEscape(text, j, field);
      j += 2;
      continue;
    }
    if (c === close) return j + 1;
    if (close === '"' && (c === '\n' || c === '\r')) refuse(field, `has a line break inside a string literal (offset ${j})`);
    j++;
  }
  return refuse(field, `has an unterminated ${close === '"' ? 'string literal' : 'character class'} (offset ${i})`);
}

/** A \x, \u or \U escape that decodes to U+0000 is a NUL in disguise. */
function checkEscape(text: string, at: number, field: string): void {
  const kind = text[at + 1];
  const digits = kind === 'x' ? 2 : kind === 'u' ? 4 : kind === 'U' ? 8 : 0;
  if (digits === 0) return;
  const hex = text.slice(at + 2, at + 2 + digits);
  if (/^[0-9a-fA-F]+$/.test(hex) && parseInt(hex, 16) === 0) refuse(field, `escapes a NUL character (offset ${at})`);
}

/**
 * Throws INVALID_GRAMMAR naming `field` when the text could harm a parser: too large, a NUL
 * character, nesting deeper than MAX_GRAMMAR_DEPTH, or a repetition count that is reversed or
 * above MAX_GRAMMAR_REPEAT. A grammar that passes may still be invalid GBNF.
 */
export function checkGrammarText(text: string, field = 'grammar'): void {
  if (typeof text !== 'string') refuse(field, 'must be a string');
  if (Buffer.byteLength(text) > MAX_GRAMMAR_BYTES) refuse(field, `is larger than ${MAX_GRAMMAR_BYTES} bytes`);
  const nul = text.indexOf('\0');
  if (nul >= 0) refuse(field, `contains a NUL character (offset ${nul})`);
  let depth = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '#') {
      const eol = text.indexOf('\n', i);
      i = eol < 0 ? text.length : eol + 1;
    } else if (c === '"') {
      i = skipQuoted(text, i, '"', field);
    } else if (c === '[') {
      i = skipQuoted(text, i, ']', field);
    } else if (c === '(') {
      depth++;
      if (depth > MAX_GRAMMAR_DEPTH) refuse(field, `nests parentheses deeper than ${MAX_GRAMMAR_DEPTH} levels`);
      i++;
    } else if (c === ')') {
      depth = Math.max(0, depth - 1);
      i++;
    } else if (c === '{') {
      const end = text.indexOf('}', i);
      const body = end < 0 ? text.slice(i + 1) : text.slice(i + 1, end);
      const match = /^\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?$/.exec(body);
      if (!match) refuse(field, `has a malformed repetition {${body.slice(0, 20)}} (offset ${i})`);
      const min = Number(match[1]);
      const max = match[3] !== undefined && match[3] !== '' ? Number(match[3]) : match[2] ? Infinity : min;
      if (min > MAX_GRAMMAR_REPEAT || (Number.isFinite(max) && max > MAX_GRAMMAR_REPEAT)) {
        refuse(field, `repeats more than ${MAX_GRAMMAR_REPEAT} times (offset ${i})`);
      }
      if (min > max) refuse(field, `has a repetition whose minimum is above its maximum {${min},${max}} (offset ${i})`);
      i = end < 0 ? text.length : end + 1;
    } else {
      i++;
    }
  }
}
