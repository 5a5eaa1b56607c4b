/**
 * Reading a job (packages/nats/src/jobs/job-message.ts) and the runner's pure decisions
 * (job-policy.ts): the id from the body or Nats-Msg-Id, every malformed job an LmError naming
 * its field (with the id when one is usable), never a throw; what a failure means for a job.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import { MAX_JOB_ID_LENGTH, failureAction, jobCapacity, readJob, retryDelayMs } from '@lmserve/nats';

const encode = (value: unknown) => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));
const hdrs = (values: Record<string, string>) => ({ get: (name: string) => values[name] ?? '' });

describe('reading a job', () => {
  test('the body id wins; Nats-Msg-Id is the id when the body has none', () => {
    const both = readJob(encode({ id: 'body-id', input: 'x' }), hdrs({ 'Nats-Msg-Id': 'header-id' }));
    assert.ok(both.ok);
    assert.equal(both.job.id, 'body-id');
    const header = readJob(encode({ input: [{ role: 'user', content: 'hi' }], params: { max_tokens: 2 } }), hdrs({ 'Nats-Msg-Id': 'header-id' }));
    assert.ok(header.ok);
    assert.equal(header.job.id, 'header-id');
    assert.deepEqual(header.job.body.input, [{ role: 'user', content: 'hi' }]);
    assert.equal(header.job.body.params.maxTokens, 2);
  });

  test('Lm-Reply-To is read and checked', () => {
    const ok = readJob(encode({ id: 'a', input: 'x' }), hdrs({ 'Lm-Reply-To': '_INBOX.abc' }));
    assert.ok(ok.ok);
    assert.equal(ok.replyTo, '_INBOX.abc');
    const bad = readJob(encode({ id: 'a', input: 'x' }), hdrs({ 'Lm-Reply-To': 'reply.*' }));
    assert.ok(!bad.ok);
    assert.equal(bad.id, 'a');
    assert.equal(bad.error.field, 'headers.Lm-Reply-To');
  });

  test('every malformed job is an error naming its field, with the id when one is usable', () => {
    const cases: Array<[unknown, Record<string, string>, string, string | null]> = [
      ['{"input": ', { 'Nats-Msg-Id': 'j1' }, 'body', 'j1'],
      [[1, 2], { 'Nats-Msg-Id': 'j2' }, 'body', 'j2'],
      [{ input: 'x' }, {}, 'id', null],
      [{ id: 'bad id', input: 'x' }, {}, 'id', null],
      [{ id: 'x'.repeat(MAX_JOB_ID_LENGTH + 1), input: 'x' }, {}, 'id', null],
      [{ id: 7, input: 'x' }, {}, 'id', null],
      [{ input: 'x' }, { 'Nats-Msg-Id': 'a.b' }, 'headers.Nats-Msg-Id', null],
      [{ id: 'j3', input: '' }, {}, 'input', 'j3'],
      [{ id: 'j4', input: 'x', params: { temperature: 'hot' } }, {}, 'params.temperature', 'j4'],
      [{ id: 'j5', input: 'x', extra: 1 }, {}, 'extra', 'j5'],
      [{ id: 'j6', input: [{ role: 'robot', content: 'x' }] }, {}, 'input[0].role', 'j6'],
    ];
    for (const [body, headers, field, id] of cases) {
      const read = readJob(encode(body), hdrs(headers));
      assert.ok(!read.ok, JSON.stringify(body));
      assert.ok(read.error instanceof LmError);
      assert.equal(read.error.code, 'INVALID_REQUEST');
      assert.equal(read.error.field, field, JSON.stringify(body));
      assert.equal(read.id, id, JSON.stringify(body));
    }
  });

  test('bytes that are not UTF-8 are a malformed job', () => {
    const read = readJob(new Uint8Array([0xff, 0xfe, 0x00]), hdrs({ 'Nats-Msg-Id': 'binary' }));
    assert.ok(!read.ok);
    assert.equal(read.id, 'binary');
    assert.equal(read.error.field, 'body');
  });
});

describe('the runner decisions', () => {
  test('capacity: the slots plus a queue of at most as many again', () => {
    assert.equal(jobCapacity({ slots: 4, maxQueue: 64 }), 8);
    assert.equal(jobCapacity({ slots: 4, maxQueue: 1 }), 5);
    assert.equal(jobCapacity({ slots: 2, maxQueue: 0 }), 2);
  });

  test('failures of the moment are retried until the last delivery; a job at fault is final', () => {
    assert.equal(failureAction(new LmError('MODEL_CRASHED', 'x'), 1, 5), 'retry');
    assert.equal(failureAction(new LmError('QUEUE_FULL', 'x'), 4, 5), 'retry');
    assert.equal(failureAction(new LmError('MODEL_NOT_READY', 'x'), 5, 5), 'dead');
    assert.equal(failureAction(new LmError('INTERNAL', 'x'), 1, 1), 'dead');
    assert.equal(failureAction(new LmError('CONTEXT_OVERFLOW', 'x'), 1, 5), 'final');
    assert.equal(failureAction(new LmError('TIMEOUT', 'x'), 1, 5), 'final', 'a job that ran past REQUEST_TIMEOUT_MS would again');
    assert.equal(failureAction(new LmError('GRAMMAR_NOT_FOUND', 'x'), 1, 5), 'final');
  });

  test('the nak delay grows with the deliveries, up to 30 s', () => {
    const crash = new LmError('MODEL_CRASHED', 'x');
    assert.deepEqual([1, 2, 3, 4, 5, 6, 20].map((n) => retryDelayMs(n, crash)), [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    assert.equal(retryDelayMs(1, new LmError('QUEUE_FULL', 'x')), 5000);
  });
});
