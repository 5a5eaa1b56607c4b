# lmserve: the supervisor, its model hosts and the native addon in one image.
#
#   docker build -t lmserve .                                   # CPU
#   docker build -t lmserve:cuda --build-arg LMSERVE_CUDA=1 .   # CUDA (nvidia/cuda bases, GGML_CUDA=ON)
#
# The build stage compiles llama.cpp and the addon (npm ci runs scripts/setup.mjs); the runtime
# stage holds only what runs: node_modules without dev dependencies, packages/*/dist, the addon,
# envs/ and data/. Nothing is fetched at run time once the models are in data/models (a volume);
# a missing model with a MODEL_URL is downloaded on first start. Runs as the non-root user
# `lmserve`; SIGTERM drains in-flight requests (SHUTDOWN_GRACE_MS) and exits 0.

ARG LMSERVE_CUDA=0
ARG CUDA_VERSION=12.6.3
# The bases each variant builds and runs on (override both to pin other images).
ARG CPU_BASE=node:20-bookworm-slim
ARG CUDA_BUILD_BASE=nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04
ARG CUDA_RUNTIME_BASE=nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04

# Node itself, copied into whichever base a variant uses.
FROM node:20-bookworm-slim AS node

FROM ${CPU_BASE} AS build-base-0
FROM ${CUDA_BUILD_BASE} AS build-base-1
FROM ${CPU_BASE} AS runtime-base-0
FROM ${CUDA_RUNTIME_BASE} AS runtime-base-1

# ---- build: llama.cpp, the addon, the TypeScript packages, the generated demo models ----
FROM build-base-${LMSERVE_CUDA} AS build
ARG LMSERVE_CUDA
# CUDA only: the GPU architectures to compile for (e.g. "80;90"); empty: llama.cpp's default list.
ARG CMAKE_CUDA_ARCHITECTURES=
# Extra CMake definitions, e.g. "GGML_NATIVE=OFF GGML_AVX2=ON" for an image that runs on other
# CPUs than the build machine's (GGML_NATIVE=ON, the default, tunes for the build machine).
ARG LMSERVE_CMAKE_DEFINES=
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates cmake ninja-build g++ git python3 make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# LMSERVE_GPU picks the addon's variant (scripts/build-addon.mjs detectVariant): no GPU is visible
# while an image builds, so it is set explicitly.
RUN export LMSERVE_GPU=cpu; [ "$LMSERVE_CUDA" = "1" ] && export LMSERVE_GPU=cuda; \
    CMAKE_CUDA_ARCHITECTURES="$CMAKE_CUDA_ARCHITECTURES" LMSERVE_CMAKE_DEFINES="$LMSERVE_CMAKE_DEFINES" npm ci \
 && npm prune --omit=dev

# ---- runtime ----
FROM runtime-base-${LMSERVE_CUDA} AS runtime
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system lmserve \
 && useradd --system --gid lmserve --home-dir /app --shell /usr/sbin/nologin lmserve
WORKDIR /app
COPY --from=build --chown=root:root /app/package.json /app/package-lock.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/packages ./packages
COPY --from=build --chown=root:root /app/build/Release/lmserve.node ./build/Release/lmserve.node
COPY --from=build --chown=root:root /app/envs ./envs
COPY --from=build --chown=lmserve:lmserve /app/data ./data
USER lmserve
# Inside a container the ports must listen on every interface; the workers' HTTP_ADDR are set
# per worker (LMSERVE_<WORKER>_HTTP_ADDR) in docker-compose.yml or with docker run -e.
ENV NODE_ENV=production \
    GATEWAY_ADDR=0.0.0.0:5760 \
    HEALTHCHECK_URL=http://127.0.0.1:5773/readyz
EXPOSE 5760 5770 5771 5772 5773
VOLUME ["/app/data"]
STOPSIGNAL SIGTERM
# A model port's /readyz (the demo worker's by default; set HEALTHCHECK_URL to another one).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.HEALTHCHECK_URL).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "packages/cli/dist/main.js", "start", "--all"]
