/**
 * The package graph the architecture promises: the core imports no transport, transports never
 * import each other or the supervisor, and only the engine loads the addon. Read from each
 * package's package.json and from the import statements of its sources.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const packagesDir = join(root, 'packages');

function dependencies(name: string): Set<string> {
  const pkg = JSON.parse(readFileSync(join(packagesDir, name, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  return new Set(Object.keys(pkg.dependencies ?? {}).filter((d) => d.startsWith('@lmserve/')));
}

function imports(name: string): Set<string> {
  const found = new Set<string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts')) {
        for (const m of readFileSync(path, 'utf8').matchAll(/from '(@lmserve\/[a-z-]+)/g)) found.add(m[1] as string);
        if (/\.node['"]|createRequire/.test(readFileSync(path, 'utf8')) && name !== 'engine') found.add('native addon');
      }
    }
  };
  walk(join(packagesDir, name, 'src'));
  return found;
}

const transports = ['http', 'nats'];

test('every @lmserve import is a declared dependency', () => {
  for (const name of readdirSync(packagesDir)) {
    const declared = dependencies(name);
    for (const used of imports(name)) {
      if (used === 'native addon') continue;
      assert.ok(declared.has(used) || used === `@lmserve/${name}`, `${name} imports ${used} without declaring it`);
    }
  }
});

test('the core depends on the protocol only: no transport, no supervisor, no engine', () => {
  assert.deepEqual([...dependencies('core')], ['@lmserve/protocol']);
  assert.deepEqual([...imports('core')], ['@lmserve/protocol']);
});

test('transports import the core and the protocol, never each other, the supervisor, the host or the engine', () => {
  for (const transport of transports) {
    for (const used of [...dependencies(transport), ...imports(transport)]) {
      assert.ok(['@lmserve/core', '@lmserve/protocol'].includes(used), `${transport} depends on ${used}`);
    }
  }
});

test('only the engine loads the native addon', () => {
  for (const name of readdirSync(packagesDir)) {
    if (name !== 'engine') assert.ok(!imports(name).has('native addon'), `${name} loads the addon`);
  }
});
