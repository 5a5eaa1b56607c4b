#!/usr/bin/env node
// Everything `npm install` does after fetching packages, each step incremental:
//   1. the llama.cpp source (pinned, from the npm registry) and the native addon (cmake-js);
//   2. the TypeScript packages (tsc -b);
//   3. the locally generated models the tests and the `demo` worker use.
// `npm test` and `npm start` call it again; when nothing changed it takes about a second.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAddon } from './build-addon.mjs';
import { generateModel } from './gen-model.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function step(name, fn) {
  const started = Date.now();
  try {
    return fn();
  } finally {
    process.stderr.write(`[setup] ${name}: ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
  }
}

async function main() {
  step('native addon', () => buildAddon());
  step('typescript', () => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    if (!existsSync(tsc)) throw new Error('typescript is missing: run `npm install` first');
    const r = spawnSync(process.execPath, [tsc, '-b', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('tsc -b failed');
    // npm links the `supervisor` bin before tsc has written it, so it cannot mark it executable.
    const cli = join(root, 'packages', 'cli', 'dist', 'main.js');
    if (existsSync(cli)) chmodSync(cli, 0o755);
  });
  for (const preset of ['tiny', 'tiny-bpe']) {
    await generateModel({ preset, log: () => undefined });
  }
  process.stderr.write('[setup] test models ready under data/models/\n');
}

main().catch((err) => {
  process.stderr.write(`[setup] failed: ${err.message}\n`);
  process.exit(1);
});
