import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parameterTableMarkdown } from '@lmserve/core';

test("the README's parameter table is the one the code validates with", () => {
  const readme = readFileSync(join(import.meta.dirname ?? '', '..', 'README.md'), 'utf8');
  assert.ok(readme.includes(parameterTableMarkdown()), 'regenerate it: node -e "import(\'@lmserve/core\').then(m => console.log(m.parameterTableMarkdown()))"');
});
