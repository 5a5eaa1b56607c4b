import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// @ts-expect-error plain ESM script without type declarations
import { generateModel } from '../scripts/gen-model.mjs';

/** Path of a generated test model (cached under data/models/<preset>/). */
export async function modelPath(preset: 'tiny' | 'tiny-bpe' | 'tiny-swa' | 'tiny-mamba' | 'tiny-lfm2' | 'bench' | 'bench-swa' = 'tiny'): Promise<string> {
  return (await generateModel({ preset, log: () => undefined })) as string;
}

export function tempDir(prefix = 'lmserve-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Counts event-loop turns (a 1 ms interval) while `fn` runs. */
export async function countTicks<T>(fn: () => Promise<T>): Promise<{ value: T; ticks: number }> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  try {
    const value = await fn();
    return { value, ticks };
  } finally {
    clearInterval(timer);
  }
}

