/**
 * Hostile input over every HTTP endpoint of a model port and of the gateway, seeded and bounded:
 * malformed JSON, wrong types, huge and negative numbers, NaN and Infinity spelled out, deep
 * nesting, invalid UTF-8 and lone surrogates, control characters, path-like and very long
 * names, injection strings, huge headers. Every answer is a 2xx or a 4xx (with a stable code
 * when it is JSON): zero 5xx, no process restarted, and the service answers normally after.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { ErrorStatus } from '@lmserve/protocol';
import { SEED, bodies, bodyBytes, nasty } from '../fuzz-inputs.js';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

interface Answer {
  status: number;
  body: string;
}

function send(url: string, method: string, body: Buffer | null, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${url} took more than 30 s`)));
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

/** A 2xx, or a 4xx whose JSON body (when it is JSON) carries a known code. */
function check(what: string, answer: Answer): void {
  assert.ok(answer.status >= 200 && answer.status < 500, `${what}: ${answer.status} ${answer.body.slice(0, 300)}`);
  if (answer.status < 400 || !answer.body.startsWith('{')) return;
  const parsed = JSON.parse(answer.body) as { error?: { code?: string } | string };
  const code = typeof parsed.error === 'object' ? parsed.error?.code : undefined;
  if (code !== undefined) assert.ok(code in ErrorStatus, `${what}: unknown code ${code}`);
}

describe('hostile input over HTTP', () => {
  const service = new ServiceFixture();
  const statuses = new Map<string, number>();
  let pid: number | null = null;

  before(async () => {
    await service.configure({ alpha: { model: tinyModel, env: { MAX_TOKENS: '8', REQUEST_TIMEOUT_MS: '10000', MAX_QUEUE: '64' } } });
    await service.start();
    await service.waitReady('alpha');
    await waitFor('the grammar library', async () => ((await fetch(service.url('alpha', '/grammars'))).status === 200 ? true : undefined));
    pid = (await service.worker('alpha')).pid;
  });
  after(() => service.cleanup());

  const count = (path: string, status: number) => statuses.set(`${path} ${status}`, (statuses.get(`${path} ${status}`) ?? 0) + 1);

  for (const path of Object.keys(bodies)) {
    test(`POST ${path}: 60 seeded hostile bodies, never a 5xx`, async () => {
      await fc.assert(
        fc.asyncProperty(bodyBytes(path), async (body) => {
          const answer = await send(service.url('alpha', path), 'POST', body);
          count(path, answer.status);
          check(`POST ${path} ${body.subarray(0, 200).toString('utf8')}`, answer);
        }),
        { seed: SEED, numRuns: 60 },
      );
    });
  }

  test('names in paths: grammars, models, admin workers; every method', async () => {
    // Percent-encoded (lone surrogates as their raw bytes), and sequences no decoder accepts.
    const encode = (n: string) => {
      try {
        return encodeURIComponent(n);
      } catch {
        return [...Buffer.from(n, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
      }
    };
    const name = fc.oneof(
      fc.oneof(nasty, fc.string({ minLength: 1, maxLength: 300 })).map(encode),
      fc.constantFrom('%', '%zz', '%ED%A0%80', '%00', '%C0%AF', '..%2f..%2f', '%2e%2e', '.', '..'),
    );
    await fc.assert(
      fc.asyncProperty(name, fc.constantFrom('GET', 'PUT', 'DELETE', 'POST'), bodyBytes('/grammars'), async (n, method, body) => {
        for (const [url, m] of [
          [service.url('alpha', `/grammars/${n}`), method],
          [service.url('alpha', `/v1/models/${n}`), 'GET'],
          [service.adminUrl(`/admin/workers/${n}`), 'GET'],
          [service.adminUrl(`/admin/events?worker=${n}&limit=${n}`), 'GET'],
          [service.adminUrl(`/admin/requests?worker=${n}&status=${n}&limit=${n}`), 'GET'],
        ] as const) {
          const answer = await send(url, m, m === 'GET' || m === 'DELETE' ? null : body, { authorization: `Bearer ${service.adminToken}` });
          count(new URL(url).pathname.split('/').slice(0, 3).join('/'), answer.status);
          check(`${m} ${url.slice(0, 200)}`, answer);
        }
      }),
      { seed: SEED, numRuns: 60 },
    );
  });

  test('huge and odd headers, wrong methods and content types', async () => {
    const url = service.url('alpha', '/v1/completions');
    const body = Buffer.from(JSON.stringify({ input: 'hi', params: { max_tokens: 1 } }));
    const cases: Array<[string, Record<string, string>, string]> = [
      ['a 64 KiB header', { 'x-big': 'a'.repeat(65_536) }, 'POST'],
      ['a 64 KiB authorization', { authorization: `Bearer ${'a'.repeat(65_536)}` }, 'POST'],
      ['a text content type', { 'content-type': 'text/plain' }, 'POST'],
      ['a form content type', { 'content-type': 'application/x-www-form-urlencoded' }, 'POST'],
      ['an unknown charset', { 'content-type': 'application/json; charset=utf-99' }, 'POST'],
      ['a gzip body that is not', { 'content-encoding': 'gzip' }, 'POST'],
      ['GET on a POST route', {}, 'GET'],
      ['PATCH', {}, 'PATCH'],
    ];
    for (const [what, headers, method] of cases) {
      let answer: Answer;
      try {
        answer = await send(url, method, method === 'GET' ? null : body, headers);
      } catch (err) {
        // Node's HTTP parser may close the connection on a header over its limit (no status to read).
        assert.match(String(err), /ECONNRESET|socket hang up/, what);
        continue;
      }
      count(what, answer.status);
      check(what, answer);
    }
  });

  test('afterwards: the same host, no restart, and a normal request answers', async () => {
    const worker = await service.worker('alpha');
    assert.equal(worker.pid, pid, JSON.stringify([...statuses]));
    assert.equal(worker.restarts, 0);
    assert.equal(worker.state, 'ready');
    const res = await service.complete('alpha', { input: 'Hello', params: { max_tokens: 3, ignore_eos: true } });
    assert.equal(res.status, 200);
    assert.equal(res.body.usage.tokens_out, 3);
    const admin = await service.admin('GET', '/admin/workers');
    assert.equal(admin.status, 200);
    // The fuzz reached past validation: some requests generated, some were refused.
    const total = (status: number) => [...statuses].filter(([k]) => k.endsWith(` ${status}`)).reduce((n, [, v]) => n + v, 0);
    assert.ok(total(200) > 0 && total(400) > 0, JSON.stringify([...statuses]));
  });
});
