/** Facts about the machine and the build that a benchmark figure only means something with. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { cpus, totalmem, release, platform, arch } from 'node:os';
import { join } from 'node:path';

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return fallback;
  }
}

/** Selected cache entries of the configured build tree (flags both sides were compiled with). */
function buildFlags(root: string): Record<string, string> {
  const cache = readOr(join(root, 'build', 'CMakeCache.txt'), '');
  const wanted = /^(CMAKE_BUILD_TYPE|GGML_NATIVE|GGML_OPENMP|GGML_CUDA|GGML_VULKAN|GGML_METAL|GGML_BLAS|GGML_AVX\w*|GGML_LLAMAFILE|CMAKE_C_COMPILER|CMAKE_CXX_COMPILER):[A-Z]+=(.*)$/;
  const flags: Record<string, string> = {};
  for (const line of cache.split('\n')) {
    const m = wanted.exec(line);
    if (m) flags[m[1]!] = m[2]!;
  }
  return flags;
}

function cpuFlags(): string[] {
  const info = readOr('/proc/cpuinfo', '');
  const line = info.split('\n').find((l) => l.startsWith('flags'));
  if (!line) return [];
  const interesting = new Set(['avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx_vnni', 'amx_int8']);
  return line.split(':')[1]!.trim().split(/\s+/).filter((f) => interesting.has(f));
}

export function machineInfo(root: string, modelPath: string): Record<string, unknown> {
  const cpuList = cpus();
  let llamaCommit = 'unknown';
  try {
    llamaCommit = execFileSync('git', ['-C', join(root, 'deps', 'llama.cpp'), 'rev-parse', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch { /* not a git checkout (scripts/gpu-bench.sh's bundle carries the source without .git) */ }
  const metaPath = `${modelPath}.meta.json`;
  const meta = existsSync(metaPath) ? (JSON.parse(readFileSync(metaPath, 'utf8')) as Record<string, unknown>) : {};
  return {
    cpuModel: cpuList[0]?.model ?? 'unknown',
    cores: cpuList.length,
    cpuFlags: cpuFlags(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${platform()} ${release()} ${arch()}`,
    node: process.version,
    llamaCppPin: readOr(join(root, 'deps', 'llama.cpp.pin'), 'unknown'),
    llamaCppCommit: llamaCommit,
    buildFlags: buildFlags(root),
    model: {
      path: modelPath,
      bytes: statSync(modelPath).size,
      // The generator records the file's sha256 next to it; hashing 143 MB again is not needed.
      sha256: meta.sha256 ?? null,
      preset: meta.preset ?? null,
      params: meta.params ?? null,
    },
  };
}
