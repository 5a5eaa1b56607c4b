// scripts/gpu-bench.sh finds cuBLAS for the CUDA build: in the toolkit, or, where the toolkit came
// from NVIDIA's pip wheels without it, in the nvidia-cublas wheel among python3's packages (whose
// files have only versioned names, so CMake is told them directly). A fake nvcc stands in for the
// toolkit; the wheel is a folder on PYTHONPATH.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const hasPython = spawnSync('python3', ['-c', 'pass']).status === 0;
const dirs = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function touch(path) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, '');
}

/** A toolkit folder whose bin/nvcc reports `release` and its own folder as TOP (as nvcc -v does). */
function fakeToolkit(release, { cublasInToolkit = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'lmserve-cuda-'));
  dirs.push(dir);
  const nvcc = join(dir, 'cuda', 'bin', 'nvcc');
  mkdirSync(dirname(nvcc), { recursive: true });
  writeFileSync(nvcc, `#!/bin/sh
case "$*" in
  *--version*) echo "Cuda compilation tools, release ${release}, V${release}.1" ;;
  *--dryrun*) echo '#$ _NVVM_BRANCH_=nvvm' >&2; echo "#$ TOP=${join(dir, 'cuda', 'bin')}/.." >&2 ;;
esac
`);
  chmodSync(nvcc, 0o755);
  if (cublasInToolkit) touch(join(dir, 'cuda', 'lib64', 'libcublas.so'));
  return dir;
}

/** The nvidia-cublas wheel's files for CUDA `major` under site/nvidia/<sub>; returns that folder. */
function fakeWheel(site, sub, major) {
  const dir = join(site, 'nvidia', sub);
  touch(join(dir, 'lib', `libcublas.so.${major}`));
  touch(join(dir, 'lib', `libcublasLt.so.${major}`));
  touch(join(dir, 'include', 'cublas_v2.h'));
  return dir;
}

function run(toolkit, pythonPath) {
  const r = spawnSync('bash', [join(root, 'scripts', 'gpu-bench.sh'), 'cublas'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, PATH: `${join(toolkit, 'cuda', 'bin')}:${process.env.PATH}`, PYTHONPATH: pythonPath, LMSERVE_CMAKE_DEFINES: '' },
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('LMSERVE_CMAKE_DEFINES='));
  return { status: r.status, out: r.stdout + r.stderr, defines: line?.slice('LMSERVE_CMAKE_DEFINES='.length).trim() };
}

test('a toolkit with cuBLAS of its own needs nothing more', { skip: !hasPython }, () => {
  const t = fakeToolkit('13.0', { cublasInToolkit: true });
  const r = run(t, join(t, 'no-site'));
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /cuBLAS: in the toolkit/);
  assert.equal(r.defines, '');
});

test('CUDA 13 from wheels: the nvidia-cublas wheel (nvidia/cu13) is named to CMake', { skip: !hasPython }, () => {
  const t = fakeToolkit('13.0');
  const site = join(t, 'site');
  const cu = fakeWheel(site, 'cu13', 13);
  // A CUDA 12 wheel beside it is not taken for a CUDA 13 nvcc.
  fakeWheel(site, 'cublas', 12);
  const r = run(t, site);
  assert.equal(r.status, 0, r.out);
  assert.equal(
    r.defines,
    `CUDA_cublas_LIBRARY=${join(cu, 'lib', 'libcublas.so.13')} CUDA_cublasLt_LIBRARY=${join(cu, 'lib', 'libcublasLt.so.13')} CMAKE_CUDA_FLAGS=-I${join(cu, 'include')}`,
  );
});

test('CUDA 12 from wheels: the nvidia/cublas layout', { skip: !hasPython }, () => {
  const t = fakeToolkit('12.4');
  const site = join(t, 'site');
  const cu = fakeWheel(site, 'cublas', 12);
  const r = run(t, site);
  assert.equal(r.status, 0, r.out);
  assert.match(r.defines, new RegExp(`^CUDA_cublas_LIBRARY=${join(cu, 'lib', 'libcublas.so.12')} `));
});

test('no cuBLAS anywhere: the script stops and says where it looked', { skip: !hasPython }, () => {
  const t = fakeToolkit('13.0');
  const r = run(t, join(t, 'no-site'));
  assert.equal(r.status, 1);
  assert.match(r.out, /ERROR: the CUDA toolkit at .*cuda has no cuBLAS .*no nvidia-cublas wheel for CUDA 13/);
});
