/**
 * The built-in grammars: present in every library, read-only, and written (upserted) at every
 * open, so an upgrade that changes one gives it a new version.
 *
 * Written for this project (not copied from llama.cpp's grammars/). Rule names use only
 * letters, digits and '-', the characters llama.cpp's parser accepts in a name. Whitespace is
 * bounded everywhere (the `ws` rule: nothing, one space, or one line break with at most 20
 * spaces or tabs of indentation), so a model cannot spend its whole budget on whitespace; a
 * backtick is written \x60.
 */
import type { BuiltinSeed } from './grammar-db.js';

/** A JSON number: no leading zeros, at most 16 integer digits, 16 fraction digits, 3 exponent digits. */
const NUMBER_RULES = String.raw`integer ::= "0" | [1-9] [0-9]{0,15}
fraction ::= "." [0-9]{1,16}
exponent ::= [eE] [-+]? [0-9]{1,3}`;

/**
 * Every JSON value. A string's characters are U+0020 and above except `"` and `\` (a class
 * written as ranges: a NUL may not appear in a grammar, not even as \x00), or one of JSON's
 * escapes.
 */
const JSON_RULES = String.raw`value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( member ( "," ws member )* )? "}"
member ::= string ws ":" ws value ws
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char ::= [ !#-\[\]-\U0010FFFF] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= "-"? integer fraction? exponent?
${NUMBER_RULES}
ws ::= ( " " | "\n" [ \t]{0,20} )?`;

export const BUILTIN_GRAMMARS: readonly BuiltinSeed[] = Object.freeze(
  [
    {
      name: 'json',
      description: 'Any JSON value: an object, array, string, number, true, false or null, with bounded whitespace between tokens.',
      content: `# Any JSON value (whitespace between tokens: at most one space, or one line break and 20 spaces or tabs)\nroot ::= value\n${JSON_RULES}\n`,
      root: 'root',
    },
    {
      name: 'json_array',
      description: 'A JSON array of any JSON values, with bounded whitespace between tokens.',
      content: `# A JSON array of any JSON values (whitespace as in the json grammar)\nroot ::= array\n${JSON_RULES}\n`,
      root: 'root',
    },
    {
      name: 'code',
      description: 'A fenced Markdown code block: ``` and an optional language word, a line break, lines of code, and a closing ```.',
      content: String.raw`# A fenced Markdown code block: three backticks, an optional language word, a line break,
# lines of code (none of them starting with three backticks), three closing backticks.
root ::= fence lang? "\n" line* fence
fence ::= "\x60\x60\x60"
lang ::= [a-zA-Z0-9_+#.-]{1,32}
line ::= ( [^\x60\n] [^\n]* | "\x60" ( [^\x60\n] [^\n]* )? | "\x60\x60" ( [^\x60\n] [^\n]* )? )? "\n"
`,
      root: 'root',
    },
    {
      name: 'yes_no',
      description: 'Exactly "yes" or "no".',
      content: '# Exactly "yes" or "no"\nroot ::= "yes" | "no"\n',
      root: 'root',
    },
    {
      name: 'number',
      description: 'A JSON number: an optional minus, an integer without leading zeros, an optional fraction and exponent.',
      content: `# A JSON number (at most 16 integer digits, 16 fraction digits, 3 exponent digits)\nroot ::= "-"? integer fraction? exponent?\n${NUMBER_RULES}\n`,
      root: 'root',
    },
    {
      name: 'list',
      description: 'One item per line: one or more lines of non-empty text, each ending with a line break.',
      content: '# One or more lines of non-empty text, each ending with a line break\nroot ::= item+\nitem ::= [^\\n]+ "\\n"\n',
      root: 'root',
    },
  ].map((b) => Object.freeze(b)),
);

/** The built-ins' names. */
export const BUILTIN_NAMES: ReadonlySet<string> = new Set(BUILTIN_GRAMMARS.map((b) => b.name));
