#!/usr/bin/env bash
# The GPU benchmark: our service against llama.cpp's llama-server, both built with CUDA from the
# same pinned llama.cpp source, both over HTTP, on a generated ~1.1B-parameter f16 llama model
# (gen-model preset gpu-1b), at 1, 8, 32 and 64 concurrent requests. See docs/gpu-bench.md.
#
#   scripts/gpu-bench.sh pack        here (npm install done): bundle what a machine without Node.js
#                                    or registry access needs into .tools/gpu-bundle/ (git-ignored)
#   scripts/gpu-bench.sh [run] [-- extra bench flags]
#                                    on the GPU machine: unpack the bundle if needed, build the addon
#                                    and llama-server with CUDA, generate the model, run the bench
#   GPU_BENCH_VARIANT=cpu scripts/gpu-bench.sh
#                                    dry run of the same flow on a CPU machine (tiny model, 2 levels)
#   scripts/gpu-bench.sh sim         the dry run in a copy of the checkout (tracked and untracked,
#                                    not ignored, files plus the bundle) with no Node.js on PATH:
#                                    what the GPU machine sees
#   scripts/gpu-bench.sh cublas      where the CUDA build takes cuBLAS from (the toolkit, or the
#                                    nvidia-cublas wheel of python3's packages): the defines it adds
#
# Output (GPU_BENCH_OUT, else $OUT, else bench/results/gpu-<time>/): progress.log (everything
# printed, as it happens), build.log, gen-model.log, nvidia-smi.log, results.json (the bench's
# JSON), results.md (its tables and the targets check).
#
# Settings (environment): NODE (node binary; else .tools/node/bin/node, else PATH),
# GPU_BENCH_VARIANT cuda|cpu, GPU_BENCH_PRESET, GPU_BENCH_CONCURRENCY, GPU_BENCH_SLOTS,
# GPU_BENCH_CTX_PER_SLOT, GPU_BENCH_MAX_TOKENS, GPU_BENCH_ROUNDS, GPU_BENCH_REQUESTS,
# GPU_BENCH_THREADS, GPU_BENCH_ARGS (more bench flags), CMAKE_CUDA_ARCHITECTURES (default: the
# GPU's compute capability, e.g. 90), LMSERVE_BUILD_JOBS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUNDLE=.tools/gpu-bundle
START_EPOCH=$(date +%s)

log() { printf '[gpu-bench %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - START_EPOCH))" "$*"; }
die() { log "ERROR: $*"; exit 1; }

# Decompresses an .xz file to stdout: xz when installed, else Python's lzma.
unxz_stdout() {
  if command -v xz >/dev/null 2>&1; then xz -dc "$1"
  elif command -v python3 >/dev/null 2>&1; then python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"
  else die "neither xz nor python3 to unpack $1"; fi
}

# ---- pack (here) ------------------------------------------------------------------------------
pack() {
  local node="${NODE:-$(command -v node || true)}"
  [ -n "$node" ] || die "pack needs node"
  node=$("$node" -p process.execPath)
  [ -f node_modules/tsx/package.json ] || die "node_modules/ is incomplete: run npm install first"
  [ -f deps/llama.cpp/include/llama.h ] && [ -f deps/llama.cpp.pin ] || die "deps/llama.cpp missing: run node scripts/fetch-llama.mjs"
  command -v xz >/dev/null || die "pack needs xz (apt-get install xz-utils)"
  log "compiling the TypeScript packages (dist/ travels in the bundle: the service runs from it)"
  "$node" node_modules/typescript/bin/tsc -b
  mkdir -p "$BUNDLE"
  rm -f "$BUNDLE"/*.part
  log "node $("$node" -v) ($node) -> $BUNDLE/node.xz"
  xz -T0 -6 -c "$node" >"$BUNDLE/node.xz.part" && mv "$BUNDLE/node.xz.part" "$BUNDLE/node.xz"
  log "llama.cpp source (no .git, docs, media, benches; one vocab: llama-spm) -> $BUNDLE/llama.cpp.tar.xz"
  (
    cd deps
    {
      find llama.cpp \( -path llama.cpp/.git -o -path llama.cpp/docs -o -path llama.cpp/media -o -path llama.cpp/.github \
        -o -path llama.cpp/benches -o -path llama.cpp/models \) -prune -o -print
      printf '%s\n' llama.cpp/models llama.cpp/models/ggml-vocab-llama-spm.gguf llama.cpp.pin
    } | tar --no-recursion -cf - -T - | xz -T0 -6 -c
  ) >"$BUNDLE/llama.cpp.tar.xz.part" && mv "$BUNDLE/llama.cpp.tar.xz.part" "$BUNDLE/llama.cpp.tar.xz"
  log "node_modules (runtime: no typescript, openai, ollama, fast-check, @types, sqlite sources) and packages/*/dist -> $BUNDLE/runtime.tar.xz"
  tar -cf - \
    --exclude=node_modules/typescript --exclude=node_modules/openai --exclude=node_modules/ollama \
    --exclude=node_modules/fast-check --exclude=node_modules/@types --exclude=node_modules/.cache \
    --exclude=node_modules/better-sqlite3/deps --exclude=node_modules/better-sqlite3/src \
    --exclude='node_modules/better-sqlite3/build/Release/obj*' --exclude=node_modules/better-sqlite3/build/deps \
    --exclude=node_modules/better-sqlite3/build/Release/sqlite3.a --exclude=node_modules/better-sqlite3/build/Release/test_extension.node \
    --exclude='*.tsbuildinfo' \
    node_modules packages/*/dist | xz -T0 -6 -c >"$BUNDLE/runtime.tar.xz.part"
  mv "$BUNDLE/runtime.tar.xz.part" "$BUNDLE/runtime.tar.xz"
  {
    echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "node $("$node" -v) modules $("$node" -p process.versions.modules)"
    echo "llama.cpp $(cat deps/llama.cpp.pin)"
  } >"$BUNDLE/MANIFEST"
  du -h "$BUNDLE"/*
  local tree bundle
  bundle=$(du -sm "$BUNDLE" | cut -f1)
  tree=$( (git ls-files -co --exclude-standard -z | du -cm --files0-from=- 2>/dev/null | tail -1 | cut -f1) || echo '?')
  log "bundle ${bundle} MiB + working tree about ${tree} MiB (the device run tool takes 64 MiB in all); carry: [\"$BUNDLE\"]"
  log "the bundle holds dist/ and node_modules as of now: pack again after changing TypeScript or dependencies"
}

# ---- unpack (on a machine without node_modules / llama.cpp / Node.js) ------------------------
unpack() {
  [ -d "$BUNDLE" ] || return 0
  [ -f "$BUNDLE/MANIFEST" ] && log "bundle: $(tr '\n' ';' <"$BUNDLE/MANIFEST")"
  if [ ! -x .tools/node/bin/node ] && [ -f "$BUNDLE/node.xz" ]; then
    log "unpacking node into .tools/node/bin/node"
    mkdir -p .tools/node/bin
    unxz_stdout "$BUNDLE/node.xz" >.tools/node/bin/node.part
    chmod +x .tools/node/bin/node.part && mv .tools/node/bin/node.part .tools/node/bin/node
  fi
  if [ -z "${LLAMA_CPP_DIR:-}" ] && [ ! -f deps/llama.cpp/include/llama.h ] && [ -f "$BUNDLE/llama.cpp.tar.xz" ]; then
    log "unpacking the pinned llama.cpp source into deps/"
    mkdir -p deps
    unxz_stdout "$BUNDLE/llama.cpp.tar.xz" | tar -xf - -C deps
  fi
  if { [ ! -f node_modules/tsx/package.json ] || [ ! -f packages/cli/dist/main.js ]; } && [ -f "$BUNDLE/runtime.tar.xz" ]; then
    log "unpacking node_modules and packages/*/dist"
    unxz_stdout "$BUNDLE/runtime.tar.xz" | tar -xf -
  fi
}

find_node() {
  local c
  for c in "${NODE:-}" "$ROOT/.tools/node/bin/node" "$(command -v node 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
      NODE=$c
      return 0
    fi
  done
  die "no Node.js >= 20: set NODE, or run 'scripts/gpu-bench.sh pack' on a machine with node and carry $BUNDLE"
}

# Puts a tool on PATH from the usual places, then from Python packages (the CUDA image has cmake
# and ninja as pip packages).
ensure_tool() {
  local tool=$1 dir
  command -v "$tool" >/dev/null 2>&1 && return 0
  for dir in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/torch/.venv/bin; do
    if [ -x "$dir/$tool" ]; then export PATH="$dir:$PATH"; return 0; fi
  done
  if command -v python3 >/dev/null 2>&1; then
    case $tool in
      cmake) dir=$(python3 -c 'import cmake; print(cmake.CMAKE_BIN_DIR)' 2>/dev/null || true) ;;
      ninja) dir=$(python3 -c 'import ninja, os; print(getattr(ninja, "BIN_DIR", os.path.join(os.path.dirname(ninja.__file__), "data", "bin")))' 2>/dev/null || true) ;;
      *) dir= ;;
    esac
    if [ -n "$dir" ] && [ -x "$dir/$tool" ]; then export PATH="$dir:$PATH"; return 0; fi
  fi
  return 1
}

# ggml-cuda links cuBLAS. A toolkit installed from NVIDIA's pip wheels (nvcc, cudart: what some
# CUDA images carry beside PyTorch) has no cuBLAS in its own folders; PyTorch's nvidia-cublas wheel
# has it (nvidia/cu13/{include,lib} for CUDA 13, nvidia/cublas/{include,lib} for 12), with only
# versioned file names, which CMake's find_library does not look for. Then the build gets the
# wheel's library files and headers named directly (CUDA_cublas_LIBRARY, CUDA_cublasLt_LIBRARY,
# CMAKE_CUDA_FLAGS=-I...), and the binaries find them at run time through the build's RPATH.
cublas_from_wheel() {
  local top major found
  top=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  top=$(cd "${top:-$(dirname "$(command -v nvcc)")/..}" && pwd -P)
  if compgen -G "$top/lib64/libcublas.so*" >/dev/null || compgen -G "$top/lib/libcublas.so*" >/dev/null \
    || compgen -G "$top/targets/*/lib/libcublas.so*" >/dev/null || compgen -G "$top/../../math_libs/*/lib64/libcublas.so*" >/dev/null; then
    log "cuBLAS: in the toolkit ($top)"
    return 0
  fi
  major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  command -v python3 >/dev/null 2>&1 || die "the CUDA toolkit at $top has no cuBLAS, and there is no python3 to look for the nvidia-cublas wheel"
  # One line: the library folder and the include folder of the first match on python3's sys.path.
  found=$(python3 - "$major" <<'PY'
import glob, os, sys
major = sys.argv[1]
for base in sys.path:
    for sub in (f"nvidia/cu{major}", "nvidia/cublas"):
        libs = sorted(glob.glob(os.path.join(base, sub, "lib", f"libcublas.so.{major}*")))
        if libs and os.path.exists(os.path.join(base, sub, "include", "cublas_v2.h")):
            print(os.path.dirname(libs[0]), os.path.join(base, sub, "include"))
            sys.exit(0)
PY
)
  [ -n "$found" ] || die "the CUDA toolkit at $top has no cuBLAS (libcublas.so*), and python3's packages have no nvidia-cublas wheel for CUDA $major"
  local libdir=${found% *} incdir=${found#* } lib lt
  lib=$(compgen -G "$libdir/libcublas.so.$major*" | head -1)
  lt=$(compgen -G "$libdir/libcublasLt.so.$major*" | head -1)
  [ -n "$lt" ] || die "cuBLAS at $libdir has no libcublasLt.so.$major"
  log "cuBLAS: not in the toolkit ($top); the nvidia-cublas wheel's: $lib, headers $incdir"
  export LMSERVE_CMAKE_DEFINES="${LMSERVE_CMAKE_DEFINES:-} CUDA_cublas_LIBRARY=$lib CUDA_cublasLt_LIBRARY=$lt CMAKE_CUDA_FLAGS=-I$incdir"
}

# ---- run --------------------------------------------------------------------------------------
run() {
  VARIANT=${GPU_BENCH_VARIANT:-cuda}
  case $VARIANT in
    cuda)
      PRESET=${GPU_BENCH_PRESET:-gpu-1b}; CONCURRENCY=${GPU_BENCH_CONCURRENCY:-1,8,32,64}; SLOTS=${GPU_BENCH_SLOTS:-64}
      MAX_TOKENS=${GPU_BENCH_MAX_TOKENS:-128}; ROUNDS=${GPU_BENCH_ROUNDS:-4}; REQUESTS=${GPU_BENCH_REQUESTS:-3}
      THREADS=${GPU_BENCH_THREADS:-4} ;;
    cpu)
      PRESET=${GPU_BENCH_PRESET:-tiny}; CONCURRENCY=${GPU_BENCH_CONCURRENCY:-1,4}; SLOTS=${GPU_BENCH_SLOTS:-4}
      MAX_TOKENS=${GPU_BENCH_MAX_TOKENS:-32}; ROUNDS=${GPU_BENCH_ROUNDS:-1}; REQUESTS=${GPU_BENCH_REQUESTS:-1}
      THREADS=${GPU_BENCH_THREADS:-2} ;;
    *) echo "GPU_BENCH_VARIANT must be cuda or cpu (got $VARIANT)" >&2; exit 2 ;;
  esac
  CTX_PER_SLOT=${GPU_BENCH_CTX_PER_SLOT:-512}
  OUTDIR=${GPU_BENCH_OUT:-${OUT:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}
  mkdir -p "$OUTDIR"
  OUTDIR=$(cd "$OUTDIR" && pwd)
  # Everything printed from here on also goes to progress.log, line by line.
  exec > >(tee -a "$OUTDIR/progress.log") 2>&1
  TEE_PID=$!
  MON_PID= GEN_PID=
  trap on_exit EXIT
  trap 'log "interrupted"; exit 130' INT TERM

  log "variant $VARIANT, model preset $PRESET, levels $CONCURRENCY, slots $SLOTS, ctx/slot $CTX_PER_SLOT, $MAX_TOKENS tokens, $ROUNDS rounds x $REQUESTS requests/client, $THREADS threads; output $OUTDIR"
  unpack
  find_node
  export PATH="$(dirname "$NODE"):$PATH" # CMakeLists.txt runs `node` to find node-addon-api
  log "node $("$NODE" -v) at $NODE (modules ABI $("$NODE" -p process.versions.modules))"
  log "machine: $(nproc) cores, $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB memory"}'), $(uname -srm)"
  [ -f deps/llama.cpp/include/llama.h ] || [ -n "${LLAMA_CPP_DIR:-}" ] || die "no llama.cpp source in deps/ (and no $BUNDLE): run scripts/gpu-bench.sh pack where npm install ran, and carry $BUNDLE"
  [ -f node_modules/tsx/package.json ] && [ -f packages/cli/dist/main.js ] || die "node_modules/ or packages/*/dist missing (and no $BUNDLE): run npm install, or scripts/gpu-bench.sh pack and carry $BUNDLE"

  ensure_tool cmake || die "cmake not found"
  ensure_tool ninja || log "ninja not found: cmake-js falls back to make"
  log "$(cmake --version | head -1); ninja $(ninja --version 2>/dev/null || echo -); ccache $(command -v ccache >/dev/null && echo yes || echo no)"
  if [ "$VARIANT" = cuda ]; then
    command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: no NVIDIA driver here (GPU_BENCH_VARIANT=cpu runs the dry run)"
    nvidia-smi -L || die "nvidia-smi sees no GPU"
    log "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | head -1)"
    ensure_tool nvcc || die "nvcc not found (CUDA toolkit; looked on PATH and in /usr/local/cuda*/bin)"
    export CUDACXX=${CUDACXX:-$(command -v nvcc)}
    log "$(nvcc --version | tail -2 | tr '\n' ' ')"
    cublas_from_wheel
    if [ -z "${CMAKE_CUDA_ARCHITECTURES:-}" ]; then
      CMAKE_CUDA_ARCHITECTURES=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
      if [[ "$CMAKE_CUDA_ARCHITECTURES" =~ ^[0-9]+$ ]]; then export CMAKE_CUDA_ARCHITECTURES
      else unset CMAKE_CUDA_ARCHITECTURES; log "compute capability unknown: ggml builds its default list of architectures (slower)"; fi
    fi
    log "CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-(ggml default)}"
  fi

  # The model is written on one core while the build uses the others.
  log "generating the $PRESET model in the background (log: gen-model.log)"
  "$NODE" scripts/gen-model.mjs --preset "$PRESET" >"$OUTDIR/gen-model.log" 2>&1 </dev/null &
  GEN_PID=$!

  log "building the addon and llama-server ($VARIANT, build/; a first CUDA build takes several minutes; log: build.log)"
  [ -d build ] && [ -f build/lmserve-build.json ] && log "build/ holds: $(cat build/lmserve-build.json) (a different variant is reconfigured in place)"
  local server_file="$OUTDIR/.server-path"
  set +e
  LMSERVE_GPU=$VARIANT SERVER_PATH_FILE=$server_file "$NODE" --input-type=module -e "
    import { writeFileSync } from 'node:fs';
    import { buildLlamaTool } from './scripts/build-addon.mjs';
    writeFileSync(process.env.SERVER_PATH_FILE, buildLlamaTool('llama-server'));
  " </dev/null 2>&1 | tee "$OUTDIR/build.log" | awk '/^\[[0-9]+\/[0-9]+\]/ { n++; if (n % 40 == 0) { print "  build " $1; fflush() } ; next } /build-addon|error|Error|CUDA|FAILED/ { print "  " $0; fflush() }'
  local build_rc=${PIPESTATUS[0]}
  set -e
  if [ "$build_rc" -ne 0 ] || [ ! -s "$server_file" ]; then
    tail -n 40 "$OUTDIR/build.log"
    die "build failed (exit $build_rc); full log in build.log"
  fi
  SERVER_BIN=$(cat "$server_file"); rm -f "$server_file"
  log "built build/Release/lmserve.node and $SERVER_BIN"
  log "$("$SERVER_BIN" --version 2>&1 | grep -E '^version|CUDA|ggml_cuda_init|Device' | tr '\n' ' ')"

  log "waiting for the model"
  if ! wait "$GEN_PID"; then GEN_PID=; cat "$OUTDIR/gen-model.log"; die "model generation failed"; fi
  GEN_PID=
  log "model: $(tail -n 1 "$OUTDIR/gen-model.log")"

  if [ "$VARIANT" = cuda ]; then
    (
      while :; do
        echo "== $(date -u +%H:%M:%S)"
        nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total,power.draw,clocks.sm --format=csv,noheader
        nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
        sleep 5
      done
    ) >"$OUTDIR/nvidia-smi.log" 2>&1 </dev/null &
    MON_PID=$!
    log "GPU use sampled every 5 s into nvidia-smi.log (both servers should hold the model there)"
  fi

  # All layers on the GPU on both sides: ours GPU_LAYERS=auto (= all, 999, in the addon), llama-server -ngl 999.
  local args=(--model-preset "$PRESET" --concurrency "$CONCURRENCY" --slots "$SLOTS" --ctx-per-slot "$CTX_PER_SLOT"
    --max-tokens "$MAX_TOKENS" --rounds "$ROUNDS" --requests-per-client "$REQUESTS" --threads "$THREADS"
    --server-bin "$SERVER_BIN" --no-bare-row --no-grammar-row --no-nats-row --no-shared-prefix-row --isolation-requests 0
    --out "$OUTDIR/results.json")
  [ "$VARIANT" = cuda ] && args+=(--server-arg=-ngl --server-arg=999)
  # shellcheck disable=SC2206
  [ -n "${GPU_BENCH_ARGS:-}" ] && args+=(${GPU_BENCH_ARGS})
  args+=("$@")
  log "bench: node --import tsx scripts/bench.ts ${args[*]}"
  set +e
  "$NODE" --import tsx scripts/bench.ts "${args[@]}" </dev/null | tee "$OUTDIR/results.md"
  local bench_rc=${PIPESTATUS[0]}
  set -e
  [ "$bench_rc" -eq 0 ] && [ -f "$OUTDIR/results.json" ] || die "bench failed (exit $bench_rc); see the lines above"
  log "results: $OUTDIR/results.json"
  check_targets
  log "done"
}

# The targets: ours >= 0.95x llama-server at every level; our batching gain (c64 / c1) >= 15x.
check_targets() {
  "$NODE" -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const f = (x, d) => (x === null || x === undefined ? "-" : x.toFixed(d));
    const lines = ["", "## Targets", "", "| concurrency | ours tok/s | llama-server tok/s | ours/llama-server | >= 0.95x |", "| --- | --- | --- | --- | --- |"];
    let ok = r.rows.length > 0;
    for (const row of r.rows) {
      const pass = row.ratio !== null && row.ratio >= 0.95;
      ok &&= pass;
      lines.push(`| ${row.concurrency} | ${f(row.oursTps, 1)} | ${f(row.serverTps, 1)} | ${f(row.ratio, 3)}x | ${pass ? "yes" : "NO"} |`);
    }
    const g = r.batchingGain;
    const at64 = g && g.from === 1 && g.to === 64;
    const gainOk = at64 && g.ours !== null && g.ours >= 15;
    lines.push("", `batching gain c${g?.to ?? "?"}/c${g?.from ?? "?"}: ours ${f(g?.ours, 2)}x, llama-server ${f(g?.server, 2)}x ` +
      (at64 ? `(target >= 15x at 64: ${gainOk ? "met" : "NOT met"})` : "(the 15x target is for 1 -> 64; not measured here)"));
    lines.push(`ratio target (>= 0.95x at every level): ${ok ? "met" : "NOT met"}`);
    const text = lines.join("\n") + "\n";
    process.stdout.write(text);
    require("fs").appendFileSync(process.argv[2], text);
  ' "$OUTDIR/results.json" "$OUTDIR/results.md"
}

on_exit() {
  local rc=$?
  if [ -n "${GEN_PID:-}" ]; then kill "$GEN_PID" 2>/dev/null || true; fi
  if [ -n "${MON_PID:-}" ]; then kill "$MON_PID" 2>/dev/null || true; fi
  log "exit $rc after $(($(date +%s) - START_EPOCH)) s; files in ${OUTDIR:-?}: $(ls "${OUTDIR:-/nonexistent}" 2>/dev/null | tr '\n' ' ')"
  # Let tee write the last lines before the caller collects the output folder (at most 5 s: a
  # stray child holding the pipe must not hang the run).
  exec 1>&- 2>&-
  local i
  for i in $(seq 50); do
    if [ -z "${TEE_PID:-}" ] || ! kill -0 "$TEE_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  return 0
}

# ---- sim: the dry run as the GPU machine would see it -----------------------------------------
sim() {
  [ -f "$BUNDLE/node.xz" ] || die "no bundle: run scripts/gpu-bench.sh pack first"
  local dir bin d f
  dir=$(mktemp -d "${TMPDIR:-/tmp}/lmserve-gpu-sim.XXXXXX")
  log "copying the checkout (tracked and untracked, not ignored, files) and $BUNDLE to $dir"
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$dir"
  mkdir -p "$dir/.tools" && cp -r "$BUNDLE" "$dir/.tools/"
  # A PATH without node, npm or npx.
  bin="$dir/.sim-bin"
  mkdir -p "$bin"
  IFS=: read -r -a dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      case ${f##*/} in node | nodejs | npm | npx | corepack) continue ;; esac
      [ -x "$f" ] && [ ! -e "$bin/${f##*/}" ] && ln -s "$f" "$bin/${f##*/}"
    done
  done
  log "running the dry run there with PATH=$bin (no node); ccache, where installed, keeps the build short"
  (cd "$dir" && env -u NODE PATH="$bin" GPU_BENCH_VARIANT="${GPU_BENCH_VARIANT:-cpu}" GPU_BENCH_OUT="${GPU_BENCH_OUT:-$dir/out}" \
    bash scripts/gpu-bench.sh run "$@")
  log "sim finished; output in ${GPU_BENCH_OUT:-$dir/out} (remove $dir when done)"
}

cmd=${1:-run}
[ $# -gt 0 ] && shift
[ "${1:-}" = -- ] && shift
case $cmd in
  pack) pack ;;
  run) run "$@" ;;
  sim) sim "$@" ;;
  cublas) cublas_from_wheel && echo "LMSERVE_CMAKE_DEFINES=${LMSERVE_CMAKE_DEFINES:-}" ;;
  --) run "$@" ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) echo "unknown command $cmd (pack, run, sim, cublas; --help)" >&2; exit 2 ;;
esac
