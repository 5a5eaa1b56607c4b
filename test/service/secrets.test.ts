/**
 * No secret ever reaches the logs, the events, the audit database or any admin or metrics
 * answer: the admin token, API keys (the right one and a wrong one a client sent), NATS token,
 * user password and a password inside NATS_URL (to a server that is down, so the connection
 * errors are logged too). Every file the service wrote is searched as bytes.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, freePort, tinyModel, waitFor } from './service-fixture.js';

const SECRETS = {
  apiKey: 'sk-lmserve-KEY-6f1e9c2b7a',
  wrongKey: 'sk-someone-ELSE-0a9b8c7d6e',
  natsToken: 'nats-TOKEN-41d2c3b4a5',
  natsPassword: 'nats-PASS-9e8d7c6b5a',
  urlPassword: 'url-PASS-1a2b3c4d5e',
  gatewayKey: 'sk-gateway-KEY-77aa88bb99',
};

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

describe('secrets stay out of everything the service writes or shows', () => {
  const service = new ServiceFixture();

  before(async () => {
    const down = await freePort();
    await service.configure(
      {
        alpha: { model: tinyModel, env: { API_KEY: SECRETS.apiKey, NATS_URL: `nats://127.0.0.1:${down}`, NATS_TOKEN: SECRETS.natsToken } },
        beta: { model: tinyModel, env: { NATS_URL: `nats://someone:${SECRETS.urlPassword}@127.0.0.1:${down}` } },
        gamma: { model: tinyModel, env: { NATS_URL: `nats://127.0.0.1:${down}`, NATS_USER: 'someone', NATS_PASSWORD: SECRETS.natsPassword } },
      },
      { API_KEY: SECRETS.gatewayKey, LOG_LEVEL: 'debug' },
    );
    await service.start(['--all']);
    await Promise.all(['alpha', 'beta', 'gamma'].map((w) => service.waitReady(w)));
  });
  after(() => service.cleanup());

  test('after requests with right and wrong keys and failed NATS connections, no secret anywhere', async () => {
    const body = JSON.stringify({ input: 'Hello', params: { max_tokens: 2 } });
    const post = (key: string) =>
      fetch(service.url('alpha', '/v1/completions'), { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body });
    assert.equal((await post(SECRETS.apiKey)).status, 200);
    assert.equal((await post(SECRETS.wrongKey)).status, 401);
    const chat = await fetch(service.url('alpha', '/v1/chat/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRETS.wrongKey}`, 'x-api-key': SECRETS.wrongKey },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }),
    });
    assert.equal(chat.status, 401);
    // The NATS connections have failed (and been logged) by now.
    await waitFor('a NATS connection failure reported', async () => {
      const { body: workers } = await service.admin('GET', '/admin/workers');
      return workers.workers.every((w: any) => w.transports?.nats?.connected === false) ? true : undefined;
    });

    const shown: string[] = [service.output];
    for (const path of ['/admin/workers', '/admin/events?limit=1000', '/admin/requests?limit=1000', '/admin/status']) {
      const res = await service.admin('GET', path);
      assert.equal(res.status, 200, path);
      shown.push(JSON.stringify(res.body));
    }
    for (const worker of ['alpha', 'beta', 'gamma']) {
      for (const path of ['/readyz', '/metrics', '/healthz']) shown.push(await (await fetch(service.url(worker, path))).text());
    }
    const auth = { authorization: `Bearer ${SECRETS.apiKey}` };
    for (const path of ['/logs?limit=100', '/events?limit=100']) shown.push(await (await fetch(service.url('alpha', path), { headers: auth })).text());
    await service.stop();
    const files = filesUnder(service.dataDir);
    assert.ok(files.some((f) => f.endsWith('.sqlite')), `the audit databases are searched: ${files.join(', ')}`);
    for (const file of files) shown.push(readFileSync(file).toString('latin1'));
    for (const [name, secret] of Object.entries(SECRETS)) {
      const where = shown.findIndex((text) => text.includes(secret));
      assert.equal(where, -1, `${name} found in ${where < files.length ? '' : files[where - (shown.length - files.length)]}: ...${(shown[where] ?? '').slice(Math.max(0, (shown[where] ?? '').indexOf(secret) - 200), (shown[where] ?? '').indexOf(secret) + 50)}`);
    }
  });
});
