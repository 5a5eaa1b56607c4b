/**
 * Grammars that took a model host down through llama.cpp's parser (found by trying the landed
 * service) are now one 400 each, and a seeded fuzz over grammar text never costs a host: every
 * answer is a 200 or a 4xx with a stable code, and the host that served the first request
 * serves the last.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

const killers: Array<[string, string]> = [
  ['a NUL character (SIGABRT)', 'root ::= "\u0000"'],
  ['200,000 nested parentheses (SIGSEGV)', `root ::= ${'('.repeat(200_000)}"x"${')'.repeat(200_000)}`],
  ['a minimum above its maximum (runaway allocation)', 'root ::= "a"{5,2}'],
];

/** Pieces of GBNF, valid and not, glued together by the fuzzer. */
const fragments = [
  'root', ' ::= ', '::=', '"', '"a"', '"\\n"', '"\\x00"', '"\\u0041"', '[a-z]', '[^"]', '[', ']', '(', ')', '|', '*', '+', '?',
  '{2}', '{0,3}', '{3,1}', '{', '}', ',', ' ', '\n', '#c\n', 'x', 'item', 'item ::= ', '\\', '\u0000', 'é', '<', '>', '-',
  '((((((((', '))))))))', '{1000000}', 'root ::= root', 'root ::= "a" root', 'ws ::= [ \\t\\n]*',
];

describe('grammars cannot take a model down', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({ alpha: { model: tinyModel, env: { MAX_QUEUE: '64' } } });
    await service.start();
    await service.waitReady('alpha');
    // A fuzzed text without `::=` is a library name: wait for the library so it is a 400, not a 503.
    await waitFor('the grammar library', async () => ((await fetch(service.url('alpha', '/grammars'))).status === 200 ? true : undefined));
  });

  after(() => service.cleanup());

  for (const [what, grammar] of killers) {
    test(`${what}: 400 INVALID_GRAMMAR naming params.grammar, same host`, async () => {
      const pid = (await service.worker('alpha')).pid;
      const res = await service.complete('alpha', { input: 'x', params: { max_tokens: 2, grammar } });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'INVALID_GRAMMAR');
      assert.equal(res.body.error.field, 'params.grammar');
      const ok = await service.complete('alpha', { input: 'x', params: { max_tokens: 2 } });
      assert.equal(ok.status, 200);
      const worker = await service.worker('alpha');
      assert.equal(worker.pid, pid);
      assert.equal(worker.restarts, 0);
    });
  }

  test('invalid GBNF that passes the guard gets llama.cpp\'s reason from the checker; a valid one constrains the output', async () => {
    const bad = await service.complete('alpha', { input: 'x', params: { max_tokens: 2, grammar: 'root ::= item\n' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'INVALID_GRAMMAR');
    assert.match(bad.body.error.message, /params\.grammar/);
    const good = await service.complete('alpha', { input: 'x', params: { max_tokens: 8, grammar: 'root ::= ("yes" | "no")', seed: 3 } });
    assert.equal(good.status, 200);
    assert.ok(['yes', 'no'].includes(good.body.output), good.body.output);
  });

  test('fuzz: 120 seeded random grammars, each answered 200 or 400 with a stable code; the host never changes', async () => {
    const pid = (await service.worker('alpha')).pid;
    const grammarText = fc.array(fc.constantFrom(...fragments), { minLength: 1, maxLength: 24 }).map((parts) => parts.join(''));
    const statuses = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(grammarText, async (grammar) => {
        const res = await service.complete('alpha', { input: 'fuzz', params: { max_tokens: 2, grammar } });
        const key = res.status === 200 ? '200' : `${res.status} ${res.body.error?.code}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        if (res.status === 200) return true;
        assert.equal(res.status, 400, JSON.stringify({ grammar, body: res.body }));
        assert.ok(['INVALID_GRAMMAR', 'INVALID_REQUEST', 'GRAMMAR_NOT_FOUND'].includes(res.body.error.code), JSON.stringify(res.body));
        return true;
      }),
      { seed: 20261128, numRuns: 120 },
    );
    const worker = await service.worker('alpha');
    assert.equal(worker.pid, pid, `statuses: ${JSON.stringify([...statuses])}`);
    assert.equal(worker.restarts, 0);
    assert.ok((statuses.get('400 INVALID_GRAMMAR') ?? 0) > 0, 'the fuzzer reached the parser');
  });
});
