/**
 * The grammar library through a real supervisor: CRUD on a model port and on the gateway, one
 * library for every model, grammars used by name and inline, built-ins, JSON schemas checked
 * with a real validator, and constrained requests batched with unconstrained ones without
 * leaking into them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Ajv from 'ajv';
import { ADMIN_TOKEN, ServiceFixture, tinyModel, waitFor } from './service-fixture.js';

describe('the grammar library', () => {
  const service = new ServiceFixture();

  before(async () => {
    await service.configure({
      alpha: { model: tinyModel, env: { WORKER_CONCURRENCY: '4', CTX_SIZE: '1024' } },
      beta: { model: tinyModel, env: { CTX_SIZE: '1024' } },
    });
    await service.start();
    await Promise.all([service.waitReady('alpha'), service.waitReady('beta')]);
    // The library opens beside the workers (its built-ins are parsed by a checker process first).
    await waitFor('the grammar library', async () => ((await fetch(service.url('alpha', '/grammars'))).status === 200 ? true : undefined));
  });

  after(() => service.cleanup());

  async function call(where: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const base = where === 'gateway' ? `http://127.0.0.1:${service.gatewayPort}` : service.url(where, '');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (where === 'gateway') headers.authorization = `Bearer ${ADMIN_TOKEN}`;
    const res = await fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    return { status: res.status, body: text === '' ? null : JSON.parse(text) };
  }

  test('CRUD on a model port; the same library on the other port and on the gateway', async () => {
    const created = await call('alpha', 'POST', '/grammars', { name: 'color', description: 'a colour', content: 'root ::= "red" | "green" | "blue"' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.name, 'color');
    assert.equal(created.body.version, 1);
    const fromBeta = await call('beta', 'GET', '/grammars/color');
    assert.equal(fromBeta.status, 200);
    assert.equal(fromBeta.body.content, 'root ::= "red" | "green" | "blue"');
    const list = await call('gateway', 'GET', '/grammars?limit=100');
    assert.equal(list.status, 200);
    assert.ok(list.body.grammars.some((g: any) => g.name === 'color' && g.content === undefined));
    const withContent = await call('gateway', 'GET', '/grammars?content=true&limit=100');
    assert.ok(withContent.body.grammars.find((g: any) => g.name === 'color').content.includes('red'));
    const updated = await call('gateway', 'PUT', '/grammars/color', { content: 'root ::= "cyan" | "magenta"' });
    assert.equal(updated.status, 200, JSON.stringify(updated.body));
    assert.equal(updated.body.version, 2);
    assert.equal(updated.body.created_at, created.body.created_at);
    // The update takes effect for the next request, on any port.
    const used = await service.complete('beta', { input: 'pick', params: { grammar: 'color', max_tokens: 8, seed: 2 } });
    assert.equal(used.status, 200, JSON.stringify(used.body));
    assert.ok(['cyan', 'magenta'].includes(used.body.output), used.body.output);
    assert.equal((await call('alpha', 'DELETE', '/grammars/color')).status, 204);
    assert.equal((await call('beta', 'GET', '/grammars/color')).status, 404);
    const gone = await service.complete('alpha', { input: 'pick', params: { grammar: 'color', max_tokens: 4 } });
    assert.equal(gone.status, 400);
    assert.equal(gone.body.error.code, 'GRAMMAR_NOT_FOUND');
    assert.equal(gone.body.error.field, 'params.grammar');
  });

  test('every error case has its status, code and field', async () => {
    const cases: Array<[string, string, unknown, number, string]> = [
      ['POST', '/grammars', { name: 'bad/name', content: 'root ::= "a"' }, 400, 'INVALID_REQUEST'],
      ['POST', '/grammars', { name: '..', content: 'root ::= "a"' }, 400, 'INVALID_REQUEST'],
      ['POST', '/grammars', { name: 'broken', content: 'root ::= "unterminated' }, 400, 'INVALID_GRAMMAR'],
      ['POST', '/grammars', { name: 'noroot', content: 'answer ::= "yes"' }, 400, 'INVALID_GRAMMAR'],
      ['POST', '/grammars', { name: 'killer', content: 'root ::= "a"{5,2}' }, 400, 'INVALID_GRAMMAR'],
      ['POST', '/grammars', { name: 'huge', content: `root ::= "${'a'.repeat(70_000)}"` }, 413, 'PAYLOAD_TOO_LARGE'],
      ['POST', '/grammars', { name: 'extra', content: 'root ::= "a"', colour: 'red' }, 400, 'INVALID_REQUEST'],
      ['POST', '/grammars', { name: 'json', content: 'root ::= "a"' }, 409, 'CONFLICT'],
      ['PUT', '/grammars/json', { content: 'root ::= "a"' }, 403, 'READ_ONLY'],
      ['DELETE', '/grammars/yes_no', undefined, 403, 'READ_ONLY'],
      ['GET', '/grammars/nope', undefined, 404, 'NOT_FOUND'],
      ['PUT', '/grammars/nope', { content: 'root ::= "a"' }, 404, 'NOT_FOUND'],
    ];
    for (const [method, path, body, status, code] of cases) {
      const res = await call('alpha', method, path, body);
      assert.equal(res.status, status, `${method} ${path} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, code, `${method} ${path}`);
    }
    const dup = await call('alpha', 'POST', '/grammars', { name: 'twice', content: 'root ::= "a"' });
    assert.equal(dup.status, 201);
    assert.equal((await call('alpha', 'POST', '/grammars', { name: 'twice', content: 'root ::= "b"' })).status, 409);
    const invalid = await call('alpha', 'POST', '/grammars', { name: 'broken2', content: 'root ::= item' });
    assert.equal(invalid.body.error.field, 'content');
  });

  test('built-ins are there on a fresh start and constrain outputs', async () => {
    const names = (await call('alpha', 'GET', '/grammars?limit=1000')).body.grammars.map((g: any) => g.name);
    for (const name of ['json', 'json_array', 'code', 'yes_no', 'number', 'list']) assert.ok(names.includes(name), name);
    for (let seed = 1; seed <= 4; seed++) {
      const res = await service.complete('alpha', { input: 'Answer:', params: { grammar: 'yes_no', max_tokens: 4, seed } });
      assert.equal(res.status, 200);
      assert.match(res.body.output, /^(yes|no)$/);
    }
  });

  test('a JSON schema constrains the output to documents a real validator accepts', async () => {
    const schema = {
      type: 'object',
      properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 150 }, ok: { type: 'boolean' } },
      required: ['name', 'age', 'ok'],
      additionalProperties: false,
    };
    const validate = new Ajv().compile(schema);
    let finished = 0;
    for (let seed = 1; seed <= 6; seed++) {
      const res = await service.complete('alpha', { input: 'Person:', params: { json_schema: schema, max_tokens: 120, seed } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      if (res.body.finish_reason !== 'stop') continue;
      finished++;
      const doc = JSON.parse(res.body.output);
      assert.ok(validate(doc), `${res.body.output}: ${JSON.stringify(validate.errors)}`);
    }
    assert.ok(finished >= 3, `only ${finished} of 6 finished`);
    const bad = await service.complete('alpha', { input: 'x', params: { json_schema: { type: 'object', properties: { a: { $ref: '#/nowhere' } } } } });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.equal(bad.body.error.field, 'params.json_schema');
    const both = await service.complete('alpha', { input: 'x', params: { json_schema: schema, grammar: 'json' } });
    assert.equal(both.status, 400);
    assert.equal(both.body.error.field, 'params.json_schema');
  });

  test('a grammar in the batch never leaks into the unconstrained requests beside it', async () => {
    const constrained = Array.from({ length: 2 }, (_, i) =>
      service.complete('alpha', { input: 'go', params: { grammar: 'root ::= ("A" | "B"){20}', max_tokens: 20, seed: i + 1, ignore_eos: true } }),
    );
    const free = Array.from({ length: 2 }, (_, i) =>
      service.complete('alpha', { input: 'go', params: { max_tokens: 20, seed: i + 1, ignore_eos: true } }),
    );
    const [a, b, c, d] = await Promise.all([...constrained, ...free]);
    for (const res of [a, b]) assert.match(res!.body.output, /^[AB]{20}$/);
    for (const res of [c, d]) assert.doesNotMatch(res!.body.output, /^[AB]*$/, 'unconstrained output is not limited to A and B');
  });
});
