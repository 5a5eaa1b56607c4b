/**
 * The service tests' supervisor: scripts/lib/service-harness.ts (shared with the benchmark) with
 * the tests' defaults — a fixed admin token, small workers on fixed free ports, one CPU thread
 * each — and a cleanup that fails the test when a model host outlived its supervisor.
 */
import { join } from 'node:path';
import { ServiceHarness, freePort, repoRoot } from '../../scripts/lib/service-harness.js';

export {
  alive,
  childPids,
  freePort,
  isHostProcess,
  repoRoot,
  sleep,
  waitFor,
  waitForHostsGone,
  type ExitStatus,
  type SseEvent,
  type StartOptions,
} from '../../scripts/lib/service-harness.js';

export const cliMain = join(repoRoot, 'packages', 'cli', 'dist', 'main.js');
export const tinyModel = join(repoRoot, 'data', 'models', 'tiny', 'model.gguf');
export const tinyBpeModel = join(repoRoot, 'data', 'models', 'tiny-bpe', 'model.gguf');
export const ADMIN_TOKEN = 'test-admin-token';

export interface WorkerSpec {
  model: string;
  port?: number;
  /** Extra or overriding keys of worker.<name>.env. */
  env?: Record<string, string>;
}

export class ServiceFixture extends ServiceHarness {
  constructor() {
    super({ adminToken: ADMIN_TOKEN, tempPrefix: 'lmserve-service-' });
  }

  /** Everything the supervisor (and its hosts, forwarded) wrote, stdout and stderr together. */
  get stderr(): string {
    return this.output;
  }

  async configure(workers: Record<string, WorkerSpec>, supervisorEnv: Record<string, string> = {}): Promise<void> {
    await this.writeSupervisorEnv({ SHUTDOWN_GRACE_MS: '5000', RESTART_BACKOFF_MS: '1000', LOG_LEVEL: 'info', ...supervisorEnv });
    for (const [name, spec] of Object.entries(workers)) {
      const port = spec.port ?? (await freePort());
      this.writeWorkerEnv(name, {
        MODEL_NAME: name,
        MODEL_PATH: spec.model,
        HTTP_ADDR: `127.0.0.1:${port}`,
        WORKER_CONCURRENCY: '2',
        MODEL_THREADS: '1',
        CTX_SIZE: '512',
        GPU_LAYERS: '0',
        MAX_QUEUE: '8',
        ...spec.env,
      });
    }
  }

  /** Stops the supervisor if it still runs, checks that none of its hosts outlived it, removes the temp dir. */
  async cleanup(): Promise<void> {
    const leftovers = await this.stop();
    this.removeDir();
    if (leftovers.length > 0) throw new Error(`model hosts outlived their supervisor: ${leftovers.join(', ')}`);
  }
}
