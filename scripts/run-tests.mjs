#!/usr/bin/env node
// `npm test`: brings the build up to date, then runs every test/**/*.test.{ts,mjs} with node:test
// (TypeScript through tsx). Node 20's --test takes no glob patterns, so we list the files here.
// Extra arguments filter by path substring: `npm test -- engine/batching`.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function findTests(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...findTests(p));
    else if (/\.test\.(ts|mjs)$/.test(entry.name)) out.push(p);
  }
  return out.sort();
}

const setup = spawnSync(process.execPath, [join(root, 'scripts', 'setup.mjs')], { cwd: root, stdio: 'inherit' });
if (setup.status !== 0) process.exit(setup.status ?? 1);

const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const files = findTests(join(root, 'test'))
  .map((f) => relative(root, f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const args = ['--expose-gc', '--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=300000', ...files];
const run = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
