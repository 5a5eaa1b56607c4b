#!/usr/bin/env node
// Builds the native addon with cmake-js against the pinned llama.cpp source.
// Variant: LMSERVE_GPU=cpu|cuda|metal|vulkan, or --cuda/--cpu/...; by default CUDA only when an
// NVIDIA GPU answers `nvidia-smi` (nvcc alone is not enough: a CUDA build without a GPU is
// useless), Metal on macOS (ggml's default there), CPU otherwise.
// Incremental: cmake-js reuses build/; ccache (when installed) makes rebuilds in fresh clones fast.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import { llamaCppDir } from './fetch-llama.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ADDON_PATH = join(root, 'build', 'Release', 'lmserve.node');

function log(msg) {
  process.stderr.write(`[build-addon] ${msg}\n`);
}

function commandWorks(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 15000 });
  return r.status === 0;
}

export function detectVariant(argv = process.argv.slice(2), env = process.env) {
  const flag = argv.find((a) => /^--(cpu|cuda|metal|vulkan)$/.test(a));
  const requested = (flag ? flag.slice(2) : env.LMSERVE_GPU || '').toLowerCase();
  if (requested) {
    if (!['cpu', 'cuda', 'metal', 'vulkan'].includes(requested)) {
      throw new Error(`LMSERVE_GPU must be one of cpu, cuda, metal, vulkan (got "${requested}")`);
    }
    return requested;
  }
  if (process.platform === 'darwin') return 'metal';
  if (commandWorks('nvidia-smi', ['-L'])) return 'cuda';
  return 'cpu';
}

function cmakeDefines(variant, llamaDir) {
  const defs = [`LLAMA_CPP_DIR=${llamaDir}`, 'CMAKE_BUILD_TYPE=Release'];
  defs.push(`GGML_CUDA=${variant === 'cuda' ? 'ON' : 'OFF'}`);
  defs.push(`GGML_VULKAN=${variant === 'vulkan' ? 'ON' : 'OFF'}`);
  if (process.platform === 'darwin') defs.push(`GGML_METAL=${variant === 'metal' ? 'ON' : 'OFF'}`);
  if (variant === 'cuda' && env('CMAKE_CUDA_ARCHITECTURES')) defs.push(`CMAKE_CUDA_ARCHITECTURES=${env('CMAKE_CUDA_ARCHITECTURES')}`);
  // llama-server's build would download its web UI (network at build time); the bench needs none.
  defs.push('LLAMA_USE_PREBUILT_UI=OFF');
  // GGML_NATIVE stays at ggml's default (ON): the addon is built on the machine that runs it.
  if (env('LMSERVE_CMAKE_DEFINES')) defs.push(...env('LMSERVE_CMAKE_DEFINES').split(/\s+/).filter(Boolean));
  return defs;
}

function env(name) {
  return process.env[name];
}

// ccache keys include absolute paths; rewriting those under the repo root lets a fresh clone in
// another folder (CI, a second checkout) hit the cache of the first.
const buildEnv = { ...process.env, CCACHE_BASEDIR: process.env.CCACHE_BASEDIR ?? root, CCACHE_NOHASHDIR: 'true' };

/**
 * What buildAddon does with build/: 'incremental' (same defines as the last finished build: the
 * build tool decides what changed), 'build' (cmake-js configures a tree without a CMakeCache.txt,
 * or again when forced, and builds) or 'rebuild' (a fresh configure: `build` would keep an existing
 * cache as it is). Other defines than the last finished build's need the fresh configure, and so
 * does a tree configured by a build that never finished (no stamp): its cache may hold other
 * defines, e.g. another CUDA architecture.
 */
export function buildPlan({ force, configured, previousStamp, stamp }) {
  if (!configured) return 'build';
  if (previousStamp === stamp) return force ? 'build' : 'incremental';
  return 'rebuild';
}

export function buildAddon({ force = false, argv = process.argv.slice(2) } = {}) {
  const llamaDir = llamaCppDir();
  const variant = detectVariant(argv);
  const defines = cmakeDefines(variant, llamaDir);
  const stampPath = join(root, 'build', 'lmserve-build.json');
  const stamp = JSON.stringify({ defines, node: process.versions.modules });
  const jobs = String(Number(env('LMSERVE_BUILD_JOBS')) || cpus().length);
  const plan = buildPlan({
    force,
    configured: existsSync(join(root, 'build', 'CMakeCache.txt')),
    previousStamp: existsSync(stampPath) ? readFileSync(stampPath, 'utf8') : null,
    stamp,
  });
  if (plan === 'incremental') {
    // Same configuration: let the build tool decide what changed (a no-op takes well under a second).
    const r = spawnSync('cmake', ['--build', join(root, 'build'), '--config', 'Release', '--target', 'lmserve_addon', '--parallel', jobs], {
      cwd: root, env: buildEnv, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8',
    });
    if (r.status === 0 && existsSync(ADDON_PATH)) {
      const changed = !/no work to do/i.test(r.stdout);
      if (changed) process.stderr.write(r.stdout);
      log(`${changed ? 'rebuilt' : 'up to date'} (${variant}): ${ADDON_PATH}`);
      return ADDON_PATH;
    }
    // A compile error: show it and stop. (Reconfiguring or cleaning would only hide it, and a
    // clean rebuild throws away llama-server and every object in build/.)
    process.stderr.write(r.stdout);
    throw new Error('addon build failed (see the compiler output above)');
  }
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  if (!existsSync(cmakeJs)) throw new Error('cmake-js is missing: run `npm install` first');
  log(`building the addon (${variant}, ${jobs} jobs) against ${llamaDir}; the first build takes several minutes`);
  // `build` configures when needed and builds; unlike `compile` it never falls back to a clean
  // rebuild on a compile error; `rebuild` configures from scratch (see buildPlan).
  const args = [cmakeJs, plan, '--out', 'build', '--config', 'Release', '--parallel', jobs];
  for (const d of defines) args.push(`--CD${d}`);
  const result = spawnSync(process.execPath, args, { cwd: root, env: buildEnv, stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`addon build failed (cmake-js exit ${result.status})`);
  writeFileSync(stampPath, stamp);
  log(`built ${ADDON_PATH}`);
  return ADDON_PATH;
}

/** Builds one of llama.cpp's own tools (e.g. llama-server) from the same configured tree. */
export function buildLlamaTool(target) {
  buildAddon();
  const jobs = String(Number(env('LMSERVE_BUILD_JOBS')) || cpus().length);
  log(`building ${target} from the same tree and flags as the addon`);
  execFileSync('cmake', ['--build', join(root, 'build'), '--config', 'Release', '--target', target, '--parallel', jobs], {
    stdio: 'inherit',
    env: buildEnv,
  });
  for (const p of [join(root, 'build', 'bin', target), join(root, 'build', 'llama.cpp', 'bin', target), join(root, 'build', 'bin', 'Release', target)]) {
    if (existsSync(p)) return p;
  }
  throw new Error(`built ${target} but cannot find its binary under build/`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    buildAddon({ force: process.argv.includes('--force') });
  } catch (err) {
    process.stderr.write(`[build-addon] ${err.message}\n`);
    process.exit(1);
  }
}
