/**
 * The audit database's file system fills up, then turns read-only, while the service runs: the
 * model keeps answering every request, the fault is an `audit.failed` event and counts in
 * `lmserve_audit_write_errors_total`, and what was recorded before the fault is intact. The data
 * folder is a small tmpfs (mount needs CAP_SYS_ADMIN: root here and in CI; skipped elsewhere).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

function run(args: string[]): boolean {
  try {
    execFileSync(args[0] as string, args.slice(1), { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

function errorsMetric(text: string): number {
  const line = text.split('\n').find((l) => l.startsWith('lmserve_audit_write_errors_total{') && l.includes('model="alpha"'));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

const service = new ServiceFixture();
const disk = join(service.dir, 'disk');
mkdirSync(disk);
const mounted = run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', disk]);

describe('the audit database runs out of disk, then turns read-only', () => {
  before(async () => {
    if (!mounted) return;
    await service.configure({ alpha: { model: tinyModel, env: { DB_PATH: join(disk, 'alpha.sqlite'), LOG_BODIES: 'on' } } });
    await service.start();
    await service.waitReady('alpha');
  });

  after(async () => {
    await service.stop();
    if (mounted) run(['umount', '-l', disk]);
    await service.cleanup();
  });

  const ask = (input: string) => service.complete('alpha', { input, params: { max_tokens: 2 } });
  const auditFailures = async () => ((await service.admin('GET', '/admin/events?worker=alpha')).body.events as any[]).filter((e) => e.event.code === 'audit.failed');
  const metric = async () => errorsMetric(await (await fetch(service.url('alpha', '/metrics'))).text());

  test('recorded before the fault', { skip: !mounted && 'mount is not permitted here' }, async () => {
    for (let i = 0; i < 3; i++) assert.equal((await ask(`before the fault ${i}`)).status, 200);
    await waitFor('three rows', async () => {
      const rows = (await (await fetch(service.url('alpha', '/logs?limit=10'))).json()) as unknown[];
      return rows.length >= 3 ? true : undefined;
    });
  });

  test('disk full: every request still answered; the fault is an event and a metric', { skip: !mounted && 'mount is not permitted here' }, async () => {
    // Fill the file system: the filler takes what is left.
    try {
      writeFileSync(join(disk, 'filler'), Buffer.alloc(8 << 20));
    } catch {
      // ENOSPC: full, as intended
    }
    const big = 'lorem ipsum '.repeat(20);
    for (let i = 0; i < 10; i++) {
      const res = await ask(`${big} ${i}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    await waitFor('the audit.failed event', async () => ((await auditFailures()).length > 0 ? true : undefined));
    await waitFor('the error metric', async () => ((await metric()) >= 1 ? true : undefined));
    assert.equal((await service.worker('alpha')).restarts, 0);
    rmSync(join(disk, 'filler'));
  });

  test('read-only at the next start: still answered; the fault reported; what was recorded is intact', { skip: !mounted && 'mount is not permitted here' }, async () => {
    await service.stop();
    assert.ok(run(['mount', '-o', 'remount,ro', disk]), 'remount read-only');
    // A new supervisor on the same database, now on a read-only file system.
    const again = new ServiceFixture();
    try {
      await again.configure({ alpha: { model: tinyModel, env: { DB_PATH: join(disk, 'alpha.sqlite'), LOG_BODIES: 'on' } } });
      await again.start();
      await again.waitReady('alpha');
      for (let i = 0; i < 5; i++) assert.equal((await again.complete('alpha', { input: `read-only ${i}`, params: { max_tokens: 2 } })).status, 200);
      await waitFor('the audit.failed event', async () => {
        const events = (await again.admin('GET', '/admin/events?worker=alpha')).body.events as any[];
        return events.some((e) => e.event.code === 'audit.failed') ? true : undefined;
      });
      await waitFor('the error metric', async () => (errorsMetric(await (await fetch(again.url('alpha', '/metrics'))).text()) >= 1 ? true : undefined));
      assert.equal((await again.worker('alpha')).state, 'ready');
      await again.stop();
      const db = new Database(join(disk, 'alpha.sqlite'), { readonly: true, fileMustExist: true });
      try {
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
        const inputs = (db.prepare('SELECT input FROM requests').all() as Array<{ input: string }>).map((r) => r.input);
        for (let i = 0; i < 3; i++) assert.ok(inputs.some((x) => x.includes(`before the fault ${i}`)), `row ${i} kept`);
      } finally {
        db.close();
      }
    } finally {
      await again.cleanup();
      run(['mount', '-o', 'remount,rw', disk]);
    }
  });
});
