import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the service reads its configuration and data. */
export interface ServicePaths {
  /** Repo root: relative MODEL_PATH / DB_PATH values resolve against it. */
  root: string;
  /** Holds worker.<name>.env files and supervisor.env. */
  envsDir: string;
  /** Holds models/<name>/prompt_template.json, logs/, run/. */
  dataDir: string;
}

/** The repo root: the nearest folder above this module whose package.json declares workspaces. */
export function findRepoRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { workspaces?: unknown }).workspaces) return dir;
      } catch {
        // not a readable package.json: keep looking upwards
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

/** Flags win over LMSERVE_ROOT / LMSERVE_ENVS_DIR / LMSERVE_DATA_DIR, which win over the repo layout. */
export function resolveServicePaths(options: { root?: string; envsDir?: string; dataDir?: string } = {}): ServicePaths {
  const env = process.env;
  const root = resolve(options.root ?? env.LMSERVE_ROOT ?? findRepoRoot());
  return {
    root,
    envsDir: resolve(root, options.envsDir ?? env.LMSERVE_ENVS_DIR ?? 'envs'),
    dataDir: resolve(root, options.dataDir ?? env.LMSERVE_DATA_DIR ?? 'data'),
  };
}
