#!/usr/bin/env node
// Obtains the pinned llama.cpp source without network access beyond the npm registry.
// node-llama-cpp publishes the llama.cpp release it was built from as a git bundle
// (llama/gitRelease.bundle); we `npm pack` that package (a download, not an install) and
// clone the bundle into deps/llama.cpp. LLAMA_CPP_DIR overrides all of this.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// The pin: bump both together. node-llama-cpp 3.22.1 carries llama.cpp tag v0.5.0 (squashed).
export const PINNED_PACKAGE = 'node-llama-cpp@3.22.1';
export const PINNED_TAG = 'v0.5.0';

function log(msg) {
  process.stderr.write(`[fetch-llama] ${msg}\n`);
}

/** Returns the llama.cpp source directory, fetching it when needed. */
export function llamaCppDir() {
  if (process.env.LLAMA_CPP_DIR) {
    const dir = resolve(process.env.LLAMA_CPP_DIR);
    if (!existsSync(join(dir, 'include', 'llama.h'))) {
      throw new Error(`LLAMA_CPP_DIR=${dir} does not look like a llama.cpp checkout (include/llama.h missing)`);
    }
    return dir;
  }
  const dir = join(root, 'deps', 'llama.cpp');
  const stamp = join(root, 'deps', 'llama.cpp.pin');
  if (existsSync(join(dir, 'include', 'llama.h')) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === PINNED_PACKAGE) {
    return dir;
  }
  log(`fetching llama.cpp ${PINNED_TAG} from ${PINNED_PACKAGE} (npm pack, not installed)`);
  const work = mkdtempSync(join(tmpdir(), 'lmserve-llama-'));
  try {
    const out = execFileSync('npm', ['pack', PINNED_PACKAGE, '--silent', '--pack-destination', work], {
      cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
    }).trim().split('\n').pop();
    const tgz = join(work, out);
    execFileSync('tar', ['xzf', tgz, '-C', work, 'package/llama/gitRelease.bundle', 'package/llama/llama.cpp.info.json']);
    const info = JSON.parse(readFileSync(join(work, 'package/llama/llama.cpp.info.json'), 'utf8'));
    if (info.tag !== PINNED_TAG) throw new Error(`${PINNED_PACKAGE} carries llama.cpp ${info.tag}, expected ${PINNED_TAG}`);
    const tmpClone = join(work, 'llama.cpp');
    execFileSync('git', ['-c', 'advice.detachedHead=false', 'clone', '--quiet', join(work, 'package/llama/gitRelease.bundle'), tmpClone], { stdio: 'inherit' });
    mkdirSync(join(root, 'deps'), { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmpClone, dir);
    writeFileSync(stamp, PINNED_PACKAGE + '\n');
    log(`llama.cpp source ready in ${dir}`);
    return dir;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.stdout.write(llamaCppDir() + '\n');
}
