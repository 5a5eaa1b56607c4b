/**
 * The container files cannot be built here (no Docker daemon, no network): this reads them and
 * holds them to what the README promises — a multi-stage Dockerfile whose runtime stage runs as a
 * non-root user, stops on SIGTERM, checks /readyz, starts an existing CLI command and copies
 * paths the build produces; a CUDA build argument that selects the addon's CUDA variant; a
 * compose file with nats-server (JetStream) and the service, its ports, volume and healthcheck.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../service/service-fixture.js';

const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
const compose = readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8');
const dockerignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8');

/** Instructions with their continuation lines joined, comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.trimStart().startsWith('#'))
    .map((line) => {
      const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
      assert.ok(m, `not an instruction: ${line}`);
      return { op: m[1] as string, args: (m[2] as string).trim() };
    });
}

const steps = instructions(dockerfile);
const stages = steps.filter((s) => s.op === 'FROM');
const runtimeAt = steps.findIndex((s) => s.op === 'FROM' && / AS runtime$/.test(s.args));
const runtime = steps.slice(runtimeAt);

test('the Dockerfile is multi-stage on node:20-bookworm-slim, with a CUDA variant chosen by a build argument', () => {
  assert.ok(stages.some((s) => / AS build$/.test(s.args)));
  assert.ok(runtimeAt > 0, 'a runtime stage');
  assert.match(dockerfile, /^ARG CPU_BASE=node:20-bookworm-slim$/m);
  assert.match(dockerfile, /^ARG CUDA_BUILD_BASE=nvidia\/cuda:\$\{CUDA_VERSION\}-devel/m);
  assert.match(dockerfile, /^ARG LMSERVE_CUDA=0$/m);
  assert.ok(stages.some((s) => s.args === 'build-base-${LMSERVE_CUDA} AS build'));
  // The CUDA argument reaches scripts/build-addon.mjs as LMSERVE_GPU=cuda, a variant it knows.
  assert.match(dockerfile, /"\$LMSERVE_CUDA" = "1" \] && export LMSERVE_GPU=cuda/);
  assert.match(readFileSync(join(repoRoot, 'scripts', 'build-addon.mjs'), 'utf8'), /\['cpu', 'cuda', 'metal', 'vulkan'\]/);
  const build = steps.slice(0, runtimeAt).map((s) => s.args).join('\n');
  for (const tool of ['cmake', 'ninja-build', 'g++', 'git']) assert.ok(build.includes(tool), `the build stage installs ${tool}`);
  assert.match(build, /npm ci/);
});

test('the runtime stage runs as a non-root user, stops on SIGTERM, checks /readyz and starts the supervisor', () => {
  const user = runtime.filter((s) => s.op === 'USER').at(-1);
  assert.ok(user && !/^(root|0)(:|$)/.test(user.args), `USER ${user?.args}`);
  assert.deepEqual(runtime.filter((s) => s.op === 'STOPSIGNAL').map((s) => s.args), ['SIGTERM']);
  const health = runtime.find((s) => s.op === 'HEALTHCHECK');
  assert.match(health?.args ?? '', /CMD .*fetch\(process\.env\.HEALTHCHECK_URL\)/);
  assert.match(dockerfile, /HEALTHCHECK_URL=http:\/\/127\.0\.0\.1:\d+\/readyz/);
  const cmd = JSON.parse(runtime.find((s) => s.op === 'CMD')?.args ?? '[]') as string[];
  assert.deepEqual(cmd, ['node', 'packages/cli/dist/main.js', 'start', '--all']);
  assert.ok(existsSync(join(repoRoot, cmd[1] as string)), 'the CLI the image starts is built here too');
  for (const port of ['5760', '5770', '5771', '5772']) assert.match(dockerfile, new RegExp(`^EXPOSE .*\\b${port}\\b`, 'm'));
});

test('what the runtime stage copies from the build stage is what the build produces', () => {
  const copies = runtime.filter((s) => s.op === 'COPY' && s.args.includes('--from=build'));
  assert.ok(copies.length >= 5);
  for (const copy of copies) {
    const source = copy.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1);
    for (const path of source) {
      const relative = path.replace(/^\/app\//, '');
      assert.ok(existsSync(join(repoRoot, relative)), `${relative} exists after a build`);
    }
  }
  // The build context leaves out local builds and models (the build stage makes its own).
  for (const entry of ['node_modules', 'build', 'deps', '**/dist', 'data/models/*/*.gguf']) {
    assert.ok(dockerignore.split('\n').includes(entry), `.dockerignore lists ${entry}`);
  }
});

test('docker-compose.yml runs nats-server with JetStream and the service with its ports, data volume and healthcheck', () => {
  assert.match(compose, /^ {2}nats:\n {4}image: nats:/m);
  assert.match(compose, /"--jetstream"/);
  assert.match(compose, /^ {2}lmserve:\n {4}build:/m);
  assert.match(compose, /NATS_URL: nats:\/\/nats:4222/);
  assert.match(compose, /- "127\.0\.0\.1:5760:5760"/);
  assert.match(compose, /- "5770-577\d:5770-577\d"/);
  assert.match(compose, /- lmserve-data:\/app\/data/);
  assert.match(compose, /^ {4}healthcheck:\n {6}test: \["CMD", "node", "-e", "fetch\(process\.env\.HEALTHCHECK_URL\)/m);
  assert.match(compose, /stop_signal: SIGTERM/);
  // Each worker override names a worker of envs/ and a port the compose file publishes.
  for (const m of compose.matchAll(/LMSERVE_([A-Z0-9_]+)_HTTP_ADDR: 0\.0\.0\.0:(\d+)/g)) {
    const worker = (m[1] as string).toLowerCase();
    const files = ['gemma3-270m', 'qwen3-4b', 'gpt-oss-20b', 'demo'].filter((n) => n.toUpperCase().replace(/[^A-Z0-9]/g, '_') === m[1]);
    assert.equal(files.length, 1, `${worker} is a worker`);
    assert.ok(existsSync(join(repoRoot, 'envs', `worker.${files[0]}.env`)));
    assert.ok(Number(m[2]) >= 5770 && Number(m[2]) <= 5773);
  }
});
