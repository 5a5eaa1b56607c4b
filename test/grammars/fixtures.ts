/** Shared pieces of the grammar library tests: temp files, a fake parser check, error matchers. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { GrammarLibrary, type GrammarLibraryOptions } from '@lmserve/grammars';
import { ErrorStatus, LmError, createLogger, type ErrorCode } from '@lmserve/protocol';
import { tempDir } from '../helpers.js';

/** Lines the libraries logged at warn and above. */
export const logged: string[] = [];
export const log = createLogger({ test: 'grammars' }, { level: 'warn', write: (line) => logged.push(line) });

/**
 * Stands in for llama.cpp's parser: refuses content containing "@bad" with a reason, and
 * counts its calls. `delayMs` makes it slow (a real checker takes milliseconds).
 */
export function fakeCheck(delayMs = 0): GrammarLibraryOptions['check'] & { calls: Array<{ content: string; root: string }> } {
  const calls: Array<{ content: string; root: string }> = [];
  const check = async (content: string, root: string): Promise<string | null> => {
    calls.push({ content, root });
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs * (0.5 + Math.random())));
    return content.includes('@bad') ? 'expecting name at @bad (fake parser)' : null;
  };
  return Object.assign(check, { calls });
}

export function tempFiles(prefix: string): { file: (name?: string) => string; cleanup: () => void } {
  const dir = tempDir(prefix);
  let n = 0;
  return { file: (name) => join(dir.path, name ?? `grammars-${++n}.sqlite`), cleanup: dir.cleanup };
}

export function openLibrary(path: string, options: Partial<GrammarLibraryOptions> = {}): Promise<GrammarLibrary> {
  return GrammarLibrary.open({ path, check: fakeCheck(), log, ...options });
}

/** An assert.rejects / assert.throws validator: an LmError with this code, its status, and (when given) field and message. */
export function lmError(code: ErrorCode, field?: string | null, message?: RegExp): (err: unknown) => true {
  return (err: unknown) => {
    assert.ok(err instanceof LmError, `expected an LmError, got ${String(err)}`);
    assert.equal(err.code, code, `code of: ${err.message}`);
    assert.equal(err.status, ErrorStatus[code]);
    if (field !== undefined) assert.equal(err.field, field ?? undefined, `field of: ${err.message}`);
    if (message) assert.match(err.message, message);
    return true;
  };
}
