/**
 * The nats-chat command as a child process against a real supervisor over a real nats-server:
 * one-shot and -stream answers equal to the HTTP API's, -i keeping the history as chat
 * messages, the service's errors and usage errors with their exit codes, and both flag styles.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ServiceFixture, repoRoot, tinyModel, waitFor } from '../service/service-fixture.js';
import { natsConnect, natsRequest } from './nats-client.js';
import { NatsServer, natsServerAvailable } from './nats-server.js';

const natsChat = join(repoRoot, 'packages', 'cli', 'dist', 'nats-chat.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], stdin = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NATS_URL;
    const child = spawn(process.execPath, [natsChat, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

describe('nats-chat', () => {
  const service = new ServiceFixture();
  let nats: NatsServer;
  let greedy: string;
  const common = () => ['-server', nats.url, '-subject', 'inference.request.alpha'];

  before(async () => {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)');
    nats = await NatsServer.start({ jetstream: false });
    await service.configure({ alpha: { model: tinyModel, env: { NATS_URL: nats.url } } });
    await service.start(['--all']);
    await service.waitReady('alpha');
    const nc = await natsConnect(nats.url);
    await waitFor('the NATS subscription', async () => ((await natsRequest(nc, 'inference.request.alpha', '{', 2000)).body ? true : undefined));
    await nc.close();
    const http = await service.complete('alpha', { input: 'Hello', params: { max_tokens: 5, temperature: 0 } });
    assert.equal(http.status, 200);
    greedy = http.body.output;
  });

  after(async () => {
    await service.cleanup();
    await nats?.dispose();
  });

  test('one-shot: prints the answer, exit 0', async () => {
    const r = await run([...common(), '-input', 'Hello', '-max-tokens', '5', '-temperature', '0']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${greedy}\n`);
  });

  test('-stream prints the same answer as it comes; --double-dash flags work too', async () => {
    const r = await run(['--server', nats.url, '--subject=inference.request.alpha', '-input', 'Hello', '--max-tokens', '5', '-temperature=0', '-stream']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${greedy}\n`);
  });

  test('-i keeps the history as chat messages and streams each answer', async () => {
    const r = await run([...common(), '-i', '-max-tokens', '3', '-system', 'Be brief.'], 'First question\nSecond question\n');
    assert.equal(r.code, 0, r.stderr);
    const rows = await waitFor('two chat rows', async () => {
      const res = await fetch(service.url('alpha', '/logs?transport=nats&limit=2'));
      const list = ((await res.json()) as any[]).map((row) => ({ ...row, input: JSON.parse(row.input) }));
      return list.length === 2 && list.every((row) => Array.isArray(row.input)) ? list : undefined;
    });
    const first = rows.find((row) => row.input.length === 2);
    const last = rows.find((row) => row.input.length === 4);
    assert.ok(first && last, JSON.stringify(rows.map((row) => row.input)));
    assert.deepEqual(last.input.map((m: { role: string }) => m.role), ['system', 'user', 'assistant', 'user']);
    assert.equal(last.input[2].content, first.output, 'the first answer is in the history');
    assert.equal(r.stdout, `${first.output}\n${last.output}\n`);
    assert.equal(last.input[3].content, 'Second question');
  });

  test("the service's error: code and message on stderr, exit 1", async () => {
    const r = await run([...common(), '-input', 'Hello', '-temperature', '500']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /INVALID_REQUEST 400: .*params\.temperature/);
    const none = await run(['-server', nats.url, '-subject', 'inference.request.nobody', '-input', 'Hello', '-timeout', '5']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no service answers on inference\.request\.nobody/);
  });

  test('usage errors exit 2', async () => {
    assert.equal((await run(['-input', 'Hello'])).code, 2, 'no -subject');
    assert.equal((await run([...common()])).code, 2, 'neither -input nor -i');
    assert.equal((await run([...common(), '-input', 'x', '-max-tokens', 'many'])).code, 2);
    assert.equal((await run([...common(), '-input', 'x', '-bogus'])).code, 2);
  });
});
