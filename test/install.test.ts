/**
 * What a fresh `npm install` depends on, read from package.json and package-lock.json:
 * - npm 12 runs a dependency's install script only when the root's `allowScripts` names it (npm
 *   11.16+ only warns). Without better-sqlite3's the audit store has no native binding.
 * - `npm ci` refuses a lock file that does not match the workspaces' package.json files.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');

interface LockEntry {
  version?: string;
  hasInstallScript?: boolean;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

const readJson = <T>(path: string): T => JSON.parse(readFileSync(join(root, path), 'utf8')) as T;
const manifest = readJson<{ allowScripts?: Record<string, boolean> } & LockEntry>('package.json');
const lock = readJson<{ lockfileVersion: number; packages: Record<string, LockEntry> }>('package-lock.json');

/** node_modules/a/node_modules/@b/c -> @b/c */
const packageName = (path: string) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);

test('every dependency with an install script is allowed to run it (allowScripts)', () => {
  assert.ok(lock.lockfileVersion >= 2, 'the lock file lists packages by path');
  const needed = Object.entries(lock.packages)
    .filter(([path, entry]) => path.includes('node_modules/') && entry.hasInstallScript === true)
    .map(([path]) => packageName(path));
  assert.ok(needed.includes('better-sqlite3'), `better-sqlite3 builds its binding at install: ${needed.join(', ')}`);
  const allowed = manifest.allowScripts ?? {};
  for (const name of needed) {
    const entry = Object.entries(allowed).find(([key]) => key === name || key.startsWith(`${name}@`));
    assert.ok(entry, `${name} has an install script that npm 12 skips unless package.json's allowScripts names it`);
    assert.equal(entry[1], true, `allowScripts.${entry[0]} must be true`);
  }
  // Nothing allowed that no longer needs it (a stale name would hide a renamed package).
  for (const key of Object.keys(allowed)) {
    const name = key.replace(/(?<=.)@[^@/]*$/, '');
    assert.ok(needed.includes(name), `allowScripts names ${key}, which has no install script in the lock file`);
  }
});

test('the lock file holds each workspace with the dependencies its package.json declares', () => {
  const kinds = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies'] as const;
  const pick = (entry: LockEntry | undefined) => Object.fromEntries(kinds.map((kind) => [kind, entry?.[kind] ?? {}]));
  assert.deepEqual(pick(lock.packages['']), pick(manifest), 'the root package');
  for (const name of readdirSync(join(root, 'packages'))) {
    const own = readJson<LockEntry>(`packages/${name}/package.json`);
    const entry = lock.packages[`packages/${name}`];
    assert.ok(entry, `packages/${name} is not in package-lock.json (run npm install)`);
    assert.deepEqual(pick(entry), pick(own), `packages/${name}: package-lock.json differs from its package.json (run npm install)`);
  }
});
