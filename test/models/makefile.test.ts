/**
 * The Makefile is a thin layer: every target the original service had exists, and `make -n`
 * (which prints the recipe without running it) shows one command per target that names an npm
 * script of package.json or a command the `supervisor` CLI has. Docker targets only name docker.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cliMain, repoRoot } from '../service/service-fixture.js';

const scripts = Object.keys((JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts);
const help = execFileSync(process.execPath, [cliMain, '--help'], { encoding: 'utf8' });
const commands = [...help.slice(help.indexOf('Commands:')).matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1] as string);
const workers = readdirSync(join(repoRoot, 'envs')).flatMap((f) => /^worker\.(.+)\.env$/.exec(f)?.[1] ?? []);

/** The commands `make -n target vars...` would run. */
function dryRun(target: string, ...vars: string[]): string[] {
  return execFileSync('make', ['-n', '--no-print-directory', target, ...vars], { cwd: repoRoot, encoding: 'utf8' })
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line !== '');
}

/** Checks one recipe line: an npm script, a CLI command, or docker. */
function checkCommand(line: string, target: string): void {
  const npm = /^npm (?:run ([\w:.-]+)|(test))\b/.exec(line);
  if (npm) {
    const script = npm[1] ?? npm[2] ?? '';
    assert.ok(scripts.includes(script), `make ${target}: npm script ${script} is in package.json`);
    return;
  }
  const cli = /^node packages\/cli\/dist\/main\.js ([a-z-]+)/.exec(line);
  if (cli) {
    assert.ok(commands.includes(cli[1] as string), `make ${target}: supervisor ${cli[1]} is a CLI command (${commands.join(', ')})`);
    return;
  }
  assert.match(line, /^docker (build|compose) /, `make ${target}: ${line}`);
}

test('the CLI lists its commands (the test reads them from --help)', () => {
  for (const command of ['start', 'stop', 'list-workers', 'test', 'logs', 'pull']) assert.ok(commands.includes(command), command);
});

test("every target of the original service's Makefile is one npm script or CLI command", () => {
  const targets: Array<[string, string[], RegExp]> = [
    ['build-llama', [], /^npm run build:addon$/],
    ['build', [], /^npm run build:ts$/],
    ['build-all', [], /^npm run build$/],
    ['start', ['WORKER=demo'], /^node packages\/cli\/dist\/main\.js start demo$/],
    ['start', [], /^node packages\/cli\/dist\/main\.js start --all$/],
    ['stop', ['WORKER=demo'], /^node packages\/cli\/dist\/main\.js stop demo$/],
    ['stop', [], /^node packages\/cli\/dist\/main\.js stop$/],
    ['list-workers', [], /^node packages\/cli\/dist\/main\.js list-workers$/],
    ['test', ['WORKER=demo'], /^node packages\/cli\/dist\/main\.js test demo$/],
    ['logs', ['WORKER=demo'], /^node packages\/cli\/dist\/main\.js logs demo$/],
    ['pull', ['WORKER=demo'], /^node packages\/cli\/dist\/main\.js pull demo$/],
  ];
  for (const [target, vars, expected] of targets) {
    const lines = dryRun(target, ...vars);
    assert.equal(lines.length, 1, `make ${target} runs one command: ${lines.join(' / ')}`);
    assert.match(lines[0] as string, expected, `make ${target} ${vars.join(' ')}`);
    checkCommand(lines[0] as string, target);
  }
});

test('every other target names an npm script, a CLI command or docker', () => {
  const makefile = readFileSync(join(repoRoot, 'Makefile'), 'utf8');
  const phony = /^\.PHONY: (.+)$/m.exec(makefile)?.[1]?.split(/\s+/).filter((t) => !t.startsWith('$')) ?? [];
  assert.ok(phony.length >= 10);
  for (const target of phony) {
    if (target === 'help') continue;
    for (const line of dryRun(target, 'WORKER=demo')) checkCommand(line, target);
  }
});

test('each envs/worker.<name>.env has a shortcut that starts that worker', () => {
  assert.ok(workers.length >= 1);
  for (const name of workers) {
    assert.deepEqual(dryRun(name), [`node packages/cli/dist/main.js start ${name}`]);
  }
  const helpText = execFileSync('make', ['--no-print-directory', 'help'], { cwd: repoRoot, encoding: 'utf8' });
  for (const target of ['build-llama', 'build-all', 'start', 'stop', 'list-workers', 'test', 'logs', 'pull', ...workers]) {
    assert.ok(helpText.includes(target), `make help mentions ${target}`);
  }
});
