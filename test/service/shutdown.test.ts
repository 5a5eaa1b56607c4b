/**
 * Shutdown: SIGTERM/SIGINT drain in-flight work within the grace period and exit 0; no model
 * host ever outlives its supervisor, even one killed with SIGKILL. Each test knows the exact pids
 * of its own supervisor's hosts (its children in /proc, cross-checked with /admin/workers), so a
 * host of another supervisor on the machine can neither fail nor satisfy it.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { ServiceFixture, tinyBpeModel, tinyModel, waitFor, waitForHostsGone } from './service-fixture.js';

async function startService(supervisorEnv: Record<string, string> = {}): Promise<ServiceFixture> {
  const service = new ServiceFixture();
  await service.configure({ alpha: { model: tinyModel }, beta: { model: tinyBpeModel } }, supervisorEnv);
  await service.start(['--all']);
  await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
  return service;
}

/** The supervisor's model hosts: its children that are hosts, which must be the pids /admin/workers reports. */
async function hostsOf(service: ServiceFixture): Promise<number[]> {
  const workers = [await service.worker('alpha'), await service.worker('beta')];
  const reported = workers.map((w) => w.pid);
  if (!reported.every((pid) => typeof pid === 'number')) {
    // A worker without a host right after it was ready: say where each stood and what was logged.
    assert.fail(`host pids: ${reported.join(', ')}; workers: ${JSON.stringify(workers)}\nlast log lines:\n${service.logLinesOf(['alpha', 'beta'], 40)}`);
  }
  const children = service.hostProcesses().sort((a, b) => a - b);
  assert.deepEqual(children, (reported as number[]).sort((a, b) => a - b));
  return children;
}

async function inFlight(service: ServiceFixture, name: string, count: number): Promise<void> {
  await waitFor(`${count} in flight on ${name}`, async () => ((await service.worker(name)).in_flight === count ? true : undefined));
}

async function refused(url: string): Promise<boolean> {
  return fetch(url).then(
    () => false,
    () => true,
  );
}

describe('supervisor shutdown', () => {
  let service: ServiceFixture | undefined;

  afterEach(async () => {
    await service?.cleanup();
    service = undefined;
  });

  test('SIGTERM lets an in-flight request finish, then exits 0 with every host gone', async () => {
    service = await startService();
    const hosts = await hostsOf(service);
    let firstToken!: () => void;
    const streaming = new Promise<void>((r) => (firstToken = r));
    const pending = service.stream('alpha', { input: 'finish', params: { max_tokens: 120, ignore_eos: true } }, (e) => {
      if (e.event === 'token') firstToken();
    });
    await streaming;
    const exit = service.terminate('SIGTERM');
    const last = (await pending).at(-1);
    assert.equal(last?.event, 'done');
    assert.equal(last?.data.finish_reason, 'length');
    assert.equal(last?.data.usage.tokens_out, 120);
    assert.deepEqual(await exit, { code: 0, signal: null });
    assert.deepEqual(await waitForHostsGone(hosts), []);
    assert.ok(await refused(service.url('alpha', '/healthz')));
  });

  test('SIGINT past the grace period cancels what is still running and exits 0', async () => {
    service = await startService({ SHUTDOWN_GRACE_MS: '200' });
    const hosts = await hostsOf(service);
    let firstToken!: () => void;
    const streaming = new Promise<void>((r) => (firstToken = r));
    const pending = service.stream('beta', { input: 'never ends', params: { max_tokens: 480, ignore_eos: true } }, (e) => {
      if (e.event === 'token') firstToken();
    });
    await streaming;
    const exit = service.terminate('SIGINT');
    const events = await pending;
    const last = events.at(-1);
    assert.equal(last?.event, 'done');
    assert.equal(last?.data.finish_reason, 'cancelled');
    assert.ok(last?.data.usage.tokens_out < 480);
    assert.deepEqual(await exit, { code: 0, signal: null });
    assert.deepEqual(await waitForHostsGone(hosts), []);
  });

  test('`supervisor stop` shuts a running supervisor down cleanly', async () => {
    service = await startService();
    const hosts = await hostsOf(service);
    const { stdout } = await service.cli(['stop']);
    assert.match(stdout, /shutting down/);
    assert.deepEqual(await service.exit, { code: 0, signal: null });
    assert.deepEqual(await waitForHostsGone(hosts), []);
  });

  test('hosts exit by themselves when the supervisor is killed with SIGKILL', async () => {
    service = await startService();
    const hosts = await hostsOf(service);
    const pending = service.complete('alpha', { input: 'busy', params: { max_tokens: 480, ignore_eos: true } }).catch(() => undefined);
    await inFlight(service, 'alpha', 1);
    assert.deepEqual(await service.terminate('SIGKILL'), { code: null, signal: 'SIGKILL' });
    await pending;
    assert.deepEqual(await waitForHostsGone(hosts), []);
  });
});
