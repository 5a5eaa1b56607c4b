/**
 * Direct streams: a streamed HTTP response's token chunks are written by the model host to the
 * client's connection, not relayed through the supervisor. Every route that streams (ours,
 * OpenAI completions and chat, Ollama generate and chat, on a model port and the gateway) must
 * give the bytes it gives when relayed, keep-alive connections must survive it, and
 * LMSERVE_DIRECT_STREAM=off must turn it off.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { ServiceFixture, tinyBpeModel, waitFor } from './service-fixture.js';

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  reusedSocket: boolean;
}

function post(port: number, path: string, body: unknown, agent?: Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method: 'POST', agent: agent ?? false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, reusedSocket: req.reusedSocket }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Our SSE: the token events' texts and ids, and the done event. */
function ours(body: string): { text: string; ids: number[]; done: { output: string; usage: { tokens_out: number } } } {
  let text = '';
  const ids: number[] = [];
  let done: { output: string; usage: { tokens_out: number } } | undefined;
  for (const block of body.split('\n\n').filter((b) => b.trim() !== '')) {
    const [eventLine, dataLine] = block.split('\n');
    const data = JSON.parse((dataLine ?? '').replace(/^data: /, ''));
    if (eventLine === 'event: token') {
      text += data.text;
      ids.push(...data.tokens);
    } else if (eventLine === 'event: done') {
      done = data;
    } else {
      assert.fail(`unexpected event: ${block}`);
    }
  }
  assert.ok(done, 'a done event');
  return { text, ids, done };
}

/**
 * The inode of the server's end of a loopback TCP connection (Linux: /proc/net/tcp and tcp6),
 * found by the two ports.
 */
function serverSocketInode(serverPort: number, clientPort: number): string | undefined {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[1]!.endsWith(`:${hex(serverPort)}`) && f[2]!.endsWith(`:${hex(clientPort)}`)) return f[9];
    }
  }
  return undefined;
}

/** Whether process `pid` holds a descriptor of socket `inode`. */
function holdsSocket(pid: number, inode: string): boolean {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

/** Sends `count` requests with `body` one after another on a raw connection; resolves with what it received. */
async function streamOn(socket: Socket, count: number, body: string): Promise<string> {
  let received = '';
  const onData = (d: Buffer | string) => (received += d.toString());
  socket.on('data', onData);
  for (let i = 0; i < count; i++) {
    const before = received.length;
    socket.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    while (!received.slice(before).includes('\r\n0\r\n\r\n')) await once(socket, 'data');
  }
  socket.off('data', onData);
  return received;
}

/** OpenAI's SSE: the chunks (without `[DONE]`), checking it ends with `[DONE]`. */
function openAiChunks(body: string): any[] {
  const blocks = body.split('\n\n').filter((b) => b.trim() !== '');
  assert.equal(blocks.at(-1), 'data: [DONE]');
  return blocks.slice(0, -1).map((b) => JSON.parse(b.replace(/^data: /, '')));
}

describe('direct streams', () => {
  const service = new ServiceFixture();
  let port = 0;

  async function directCount(): Promise<number> {
    const workers = (await service.admin('GET', '/admin/workers')).body as { workers: { name: string; requests: { direct: number } }[] };
    return workers.workers.find((w) => w.name === 'alpha')?.requests.direct ?? -1;
  }

  before(async () => {
    await service.configure({ alpha: { model: tinyBpeModel } });
    await service.start(['--all']);
    await service.waitReady('alpha');
    port = service.ports.get('alpha')!;
  });

  after(() => service.cleanup());

  const greedy = { max_tokens: 24, temperature: 0, ignore_eos: true };

  test('our API: the streamed text and tokens are the non-streamed output, written by the host', async () => {
    const before = await directCount();
    const params = { ...greedy, raw: true };
    const plain = await post(port, '/v1/completions', { input: 'The harbour', params });
    const expected = JSON.parse(plain.body).output as string;
    const streamed = await post(port, '/v1/completions', { input: 'The harbour', params: { ...params, stream: true } });
    assert.equal(streamed.status, 200);
    assert.equal(streamed.headers['transfer-encoding'], 'chunked');
    const got = ours(streamed.body);
    assert.equal(got.text, expected);
    assert.equal(got.done.output, expected);
    assert.equal(got.ids.length, 24);
    assert.equal(got.done.usage.tokens_out, 24);
    assert.equal(await directCount(), before + 1, 'the stream was handed to the host');
  });

  test('OpenAI completions and chat (SDK), Ollama generate and chat: the same text as without streaming', async () => {
    const before = await directCount();
    const client = new OpenAI({ baseURL: service.url('alpha', '/v1'), apiKey: 'unused', maxRetries: 0 });
    const prompt = 'Once upon a time';
    const plainText = (await client.completions.create({ model: 'alpha', prompt, max_tokens: 20, temperature: 0 })).choices[0]?.text;
    let streamedText = '';
    for await (const chunk of await client.completions.create({ model: 'alpha', prompt, max_tokens: 20, temperature: 0, stream: true })) {
      streamedText += chunk.choices[0]?.text ?? '';
    }
    assert.equal(streamedText, plainText);

    const messages = [{ role: 'user' as const, content: 'Hello there' }];
    const plainChat = (await client.chat.completions.create({ model: 'alpha', messages, max_tokens: 20, temperature: 0 })).choices[0]?.message.content;
    let chatText = '';
    let roles = 0;
    let finish: string | null | undefined;
    for await (const chunk of await client.chat.completions.create({ model: 'alpha', messages, max_tokens: 20, temperature: 0, stream: true })) {
      if (chunk.choices[0]?.delta.role === 'assistant') roles++;
      chatText += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(chatText, plainChat);
    assert.equal(roles, 1, 'one role chunk');
    assert.equal(finish, 'length');

    // Raw bytes: every chunk is one well-formed `data:` line of the same completion id.
    const raw = await post(port, '/v1/completions', { model: 'alpha', prompt, max_tokens: 20, temperature: 0, stream: true });
    const chunks = openAiChunks(raw.body);
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
    assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), plainText);
    assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, 'length');

    for (const kind of ['generate', 'chat'] as const) {
      const body = kind === 'generate' ? { model: 'alpha', prompt, options: { num_predict: 20, temperature: 0 } } : { model: 'alpha', messages, options: { num_predict: 20, temperature: 0 } };
      const plain = JSON.parse((await post(port, `/api/${kind}`, { ...body, stream: false })).body);
      const lines = (await post(port, `/api/${kind}`, body)).body.trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(lines.at(-1).done, true);
      assert.ok(lines.slice(0, -1).every((l) => l.done === false && l.model === plain.model));
      const text = lines.map((l) => (kind === 'generate' ? l.response : l.message.content)).join('');
      assert.equal(text, kind === 'generate' ? plain.response : plain.message.content);
      assert.equal(lines.at(-1).eval_count, 20);
    }
    assert.equal(await directCount(), before + 5);
  });

  test('a burst of streams: every one completes whole; up to LMSERVE_DIRECT_QUEUE (8) wait for the handover, the rest are relayed', async () => {
    const params = { ...greedy, max_tokens: 12, raw: true, stream: true };
    const burst = async (n: number) => {
      const before = await directCount();
      const replies = await Promise.all(Array.from({ length: n }, (_, i) => post(port, '/v1/completions', { input: `Burst ${i}`, params })));
      for (const reply of replies) {
        assert.equal(reply.status, 200, reply.body);
        const got = ours(reply.body);
        assert.equal(got.ids.length, 12);
        assert.equal(got.text, got.done.output);
      }
      return (await directCount()) - before;
    };
    // Eight at once: the channel never holds more than eight, so every one is handed over.
    assert.equal(await burst(8), 8, 'all 8 handed over');
    // Ten at once (the worker's 2 slots and queue of 8): at least eight are; whatever found the
    // channel deeper was relayed, and completes all the same.
    const handed = await burst(10);
    assert.ok(handed >= 8 && handed <= 10, `${handed} of 10 handed over`);
  });

  test('a keep-alive connection carries streamed and plain requests one after another', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const params = { ...greedy, raw: true };
      const first = await post(port, '/v1/completions', { input: 'One', params: { ...params, stream: true } }, agent);
      const second = await post(port, '/v1/completions', { input: 'Two', params: { ...params, stream: true } }, agent);
      const third = await post(port, '/v1/completions', { input: 'Two', params }, agent);
      assert.equal(first.reusedSocket, false);
      assert.equal(second.reusedSocket, true);
      assert.equal(third.reusedSocket, true);
      assert.equal(ours(first.body).ids.length, 24);
      assert.equal(ours(second.body).text, JSON.parse(third.body).output);
    } finally {
      agent.destroy();
    }
  });

  test('the host keeps a keep-alive connection for its later streams and lets go when the client closes it', async () => {
    if (process.platform !== 'linux') return;
    const hostPid = (await service.worker('alpha')).pid!;
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    try {
      const before = await directCount();
      const received = await streamOn(socket, 3, JSON.stringify({ input: 'Kept', params: { ...greedy, raw: true, stream: true } }));
      assert.equal(received.match(/event: done/g)?.length, 3);
      // All three written by the host: the first brought the connection, the others named it.
      assert.equal((await directCount()) - before, 3);
      const inode = serverSocketInode(port, socket.localPort!);
      assert.ok(inode, 'the connection in /proc/net/tcp');
      assert.ok(holdsSocket(hostPid, inode), 'the host holds its descriptor between streams');
      socket.destroy();
      await waitFor('the host to let go of the closed connection', async () => (holdsSocket(hostPid, inode) ? undefined : true), 5000);
    } finally {
      socket.destroy();
    }
  });

  test('an idle keep-alive connection that carried direct streams is closed by the server', async () => {
    // The host keeps a descriptor of the connection until the supervisor releases it; it must
    // let go then, or the supervisor's close after keepAliveTimeout (5 s) would send no FIN.
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.setEncoding('utf8');
    const ended = once(socket, 'end');
    const received = await streamOn(socket, 2, JSON.stringify({ input: 'Idle', params: { ...greedy, raw: true, stream: true } }));
    assert.equal(received.match(/event: done/g)?.length, 2);
    const started = Date.now();
    const timer = setTimeout(() => socket.destroy(new Error('no FIN within 9 s of the last response')), 9000);
    try {
      await ended;
    } finally {
      clearTimeout(timer);
      socket.destroy();
    }
    assert.ok(Date.now() - started >= 4000, `closed after ${Date.now() - started} ms`);
  });

  test('an idle lent connection gets its FIN from the supervisor, even while the host holds its descriptor', async () => {
    // The supervisor's close of an idle connection must reach the client at once: a client that
    // sends its next request in the gap before the host lets go of its descriptor would get a
    // reset instead of a FIN (a FIN tells a keep-alive pool not to use the connection). A stopped
    // host cannot let go at all, so the FIN can only come from the supervisor's own shutdown.
    if (process.platform !== 'linux') return;
    const hostPid = (await service.worker('alpha')).pid!;
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.setEncoding('utf8');
    const ended = once(socket, 'end');
    const received = await streamOn(socket, 1, JSON.stringify({ input: 'Stopped', params: { ...greedy, raw: true, stream: true } }));
    assert.equal(received.match(/event: done/g)?.length, 1);
    const inode = serverSocketInode(port, socket.localPort!);
    assert.ok(inode, 'the connection in /proc/net/tcp');
    process.kill(hostPid, 'SIGSTOP');
    const started = Date.now();
    const timer = setTimeout(() => socket.destroy(new Error('no FIN within 9 s of the last response while the host was stopped')), 9000);
    try {
      await ended;
      assert.ok(Date.now() - started >= 4000, `closed after ${Date.now() - started} ms`);
      assert.ok(holdsSocket(hostPid, inode), 'the stopped host still holds its descriptor');
    } finally {
      clearTimeout(timer);
      process.kill(hostPid, 'SIGCONT');
      socket.destroy();
    }
    await waitFor('the host to let go of the closed connection', async () => (holdsSocket(hostPid, inode) ? undefined : true), 5000);
    const res = await post(port, '/v1/completions', { input: 'After', params: { ...greedy, raw: true, stream: true } });
    assert.equal(ours(res.body).done.usage.tokens_out, greedy.max_tokens);
  });

  test('log-probabilities are relayed (the host writes no chunk format for them)', async () => {
    const before = await directCount();
    const res = await post(port, '/v1/completions', { input: 'Hi', params: { ...greedy, raw: true, stream: true, logprobs: 2 } });
    const blocks = res.body.split('\n\n').filter((b) => b.startsWith('event: token'));
    assert.ok(blocks.length > 0 && blocks.every((b) => b.includes('"logprobs"')));
    assert.equal(await directCount(), before);
  });

  test('a client that leaves mid-stream cancels its generation', async () => {
    const controller = new AbortController();
    const res = await fetch(service.url('alpha', '/v1/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: 'Long', params: { max_tokens: 400, ignore_eos: true, stream: true, raw: true } }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await waitFor('the generation to be cancelled', async () => {
      const workers = (await service.admin('GET', '/admin/workers')).body as { workers: { name: string; in_flight: number; requests: { cancelled: number } }[] };
      const alpha = workers.workers.find((w) => w.name === 'alpha');
      return alpha?.in_flight === 0 && (alpha?.requests.cancelled ?? 0) > 0 ? true : undefined;
    }, 10_000);
  });
});

describe('direct streams off (LMSERVE_DIRECT_STREAM=off)', () => {
  const service = new ServiceFixture();
  after(() => service.cleanup());

  test('tokens are relayed, with the same bytes', async () => {
    await service.configure({ alpha: { model: tinyBpeModel } });
    await service.start(['--all'], { env: { LMSERVE_DIRECT_STREAM: 'off' } });
    await service.waitReady('alpha');
    const port = service.ports.get('alpha')!;
    const params = { max_tokens: 16, temperature: 0, ignore_eos: true, raw: true };
    const streamed = ours((await post(port, '/v1/completions', { input: 'Same', params: { ...params, stream: true } })).body);
    const plain = JSON.parse((await post(port, '/v1/completions', { input: 'Same', params })).body);
    assert.equal(streamed.text, plain.output);
    const workers = (await service.admin('GET', '/admin/workers')).body as { workers: { requests: { direct: number; done: number } }[] };
    assert.equal(workers.workers[0]?.requests.direct, 0);
    assert.equal(workers.workers[0]?.requests.done, 2);
  });
});
