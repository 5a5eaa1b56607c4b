import { LmError } from '@lmserve/protocol';

/**
 * Parses a dotenv-style file: KEY=VALUE lines, `#` comments (whole lines, or after whitespace
 * following a value), optional `export `, values in single or double quotes (double quotes
 * understand \n, \r, \t, \", \\; any other backslash is kept). No interpolation, no multi-line
 * values. Errors name the file and line.
 */
export function parseEnvFile(text: string, file: string): Map<string, string> {
  const vars = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!match) {
      throw new LmError('INVALID_REQUEST', `${file}:${i + 1}: expected KEY=VALUE, got "${line}"`, { field: file });
    }
    const key = match[1] as string;
    vars.set(key, unquote(match[2] as string, `${file}:${i + 1}`));
  }
  return vars;
}

const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', '"': '"', '\\': '\\' };

function unquote(raw: string, where: string): string {
  const quote = raw[0];
  // `KEY= # note` is an empty value with a comment, not the value "# note".
  if (quote !== '"' && quote !== "'") return raw.replace(/(^|\s+)#.*$/, '').trim();
  let value = '';
  let i = 1;
  for (; i < raw.length && raw[i] !== quote; i++) {
    const c = raw[i] as string;
    // An escaped quote does not end a double-quoted value.
    if (quote === '"' && c === '\\' && i + 1 < raw.length) {
      const next = raw[++i] as string;
      value += ESCAPES[next] ?? `\\${next}`;
    } else {
      value += c;
    }
  }
  if (i >= raw.length) throw new LmError('INVALID_REQUEST', `${where}: unterminated quoted value`, { field: where });
  const rest = raw.slice(i + 1).trim();
  if (rest !== '' && !rest.startsWith('#')) {
    throw new LmError('INVALID_REQUEST', `${where}: unexpected "${rest}" after the closing quote`, { field: where });
  }
  return value;
}
