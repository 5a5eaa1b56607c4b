import { LmError } from '@lmserve/protocol';

/**
 * Parses a dotenv-style file: KEY=VALUE lines, `#` comments, optional `export `, values in
 * single or double quotes (double quotes understand \n, \t, \", \\). No interpolation.
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

function unquote(raw: string, where: string): string {
  const quote = raw[0];
  if (quote !== '"' && quote !== "'") return raw.replace(/\s+#.*$/, '').trim();
  const end = raw.lastIndexOf(quote);
  if (end === 0) throw new LmError('INVALID_REQUEST', `${where}: unterminated quoted value`, { field: where });
  const inner = raw.slice(1, end);
  if (quote === "'") return inner;
  return inner.replace(/\\([nrt"\\])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '"': '"', '\\': '\\' })[c] ?? c);
}
