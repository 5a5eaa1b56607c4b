/**
 * The JOBS_* and RESULTS_* keys of a worker (packages/supervisor/src/jobs-config.ts through
 * parseWorkerConfig): defaults derived from the worker's name, values read, and every bad value
 * an error naming its key. An empty environment, so the shell's variables change nothing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LmError } from '@lmserve/protocol';
import { parseWorkerConfig, type ServicePaths } from '@lmserve/supervisor';

const paths: ServicePaths = { root: '/srv/lmserve', envsDir: '/nonexistent/envs', dataDir: '/nonexistent/data' };
const parse = (name: string, text: string) => parseWorkerConfig(name, `/nonexistent/envs/worker.${name}.env`, text, paths, { natsUrl: null }, {});

describe('JetStream job settings', () => {
  test('every key has a default derived from the worker name', () => {
    const { jobs } = parse('qwen3.4b', '');
    assert.deepEqual(jobs, {
      subject: 'inference.jobs.qwen3.4b',
      stream: 'LMSERVE_JOBS_QWEN3_4B',
      consumer: 'lmserve-qwen3_4b',
      maxDeliver: 5,
      ackWaitMs: 30_000,
      maxAgeMs: 0,
      maxMsgs: 1_000_000,
      resultsStream: 'LMSERVE_RESULTS_QWEN3_4B',
      resultsSubject: 'inference.results.qwen3.4b',
      resultsMaxAgeMs: 7 * 86_400_000,
      resultsMaxBytes: 1024 ** 3,
      resultsDuplicateWindowMs: 86_400_000,
      replicas: 1,
      slots: 4,
      maxQueue: 64,
    });
  });

  test('values are read; the capacity comes from WORKER_CONCURRENCY, REPLICAS and MAX_QUEUE', () => {
    const text = [
      'JOBS_SUBJECT=work.in',
      'JOBS_STREAM=WORK',
      'JOBS_CONSUMER=workers',
      'JOBS_MAX_DELIVER=3',
      'JOBS_ACK_WAIT_MS=5000',
      'JOBS_MAX_AGE=24h',
      'JOBS_MAX_MSGS=-1',
      'RESULTS_STREAM=DONE',
      'RESULTS_SUBJECT=work.out',
      'RESULTS_MAX_AGE=2d',
      'RESULTS_MAX_BYTES=-1',
      'RESULTS_DUPLICATE_WINDOW=90m',
      'JOBS_REPLICAS=3',
      'WORKER_CONCURRENCY=3',
      'REPLICAS=2',
      'MAX_QUEUE=4',
    ].join('\n');
    const { jobs } = parse('demo', text);
    assert.equal(jobs.subject, 'work.in');
    assert.equal(jobs.stream, 'WORK');
    assert.equal(jobs.consumer, 'workers');
    assert.equal(jobs.maxDeliver, 3);
    assert.equal(jobs.ackWaitMs, 5000);
    assert.equal(jobs.maxAgeMs, 86_400_000);
    assert.equal(jobs.maxMsgs, -1);
    assert.equal(jobs.resultsStream, 'DONE');
    assert.equal(jobs.resultsSubject, 'work.out');
    assert.equal(jobs.resultsMaxAgeMs, 2 * 86_400_000);
    assert.equal(jobs.resultsMaxBytes, -1);
    assert.equal(jobs.resultsDuplicateWindowMs, 90 * 60_000);
    assert.equal(jobs.replicas, 3);
    assert.equal(jobs.slots, 6);
    assert.equal(jobs.maxQueue, 4);
  });

  test('a bad value is an error naming its key', () => {
    const cases: Array<[string, string]> = [
      ['JOBS_SUBJECT=inference.jobs.*', 'JOBS_SUBJECT'],
      ['JOBS_SUBJECT=a..b', 'JOBS_SUBJECT'],
      ['RESULTS_SUBJECT=out.>', 'RESULTS_SUBJECT'],
      ['RESULTS_SUBJECT=work\nJOBS_SUBJECT=work.jobs', 'JOBS_SUBJECT'],
      ['JOBS_STREAM=has.dot', 'JOBS_STREAM'],
      ['JOBS_CONSUMER=has space', 'JOBS_CONSUMER'],
      ['RESULTS_STREAM=same\nJOBS_STREAM=same', 'RESULTS_STREAM'],
      ['JOBS_MAX_DELIVER=0', 'JOBS_MAX_DELIVER'],
      ['JOBS_ACK_WAIT_MS=10', 'JOBS_ACK_WAIT_MS'],
      ['JOBS_MAX_AGE=soon', 'JOBS_MAX_AGE'],
      ['JOBS_MAX_AGE=10', 'JOBS_MAX_AGE'],
      ['JOBS_MAX_MSGS=0', 'JOBS_MAX_MSGS'],
      ['JOBS_REPLICAS=7', 'JOBS_REPLICAS'],
      ['RESULTS_MAX_AGE=1w', 'RESULTS_MAX_AGE'],
      ['RESULTS_MAX_BYTES=10', 'RESULTS_MAX_BYTES'],
      ['RESULTS_DUPLICATE_WINDOW=0', 'RESULTS_DUPLICATE_WINDOW'],
      ['RESULTS_MAX_AGE=1h\nRESULTS_DUPLICATE_WINDOW=2h', 'RESULTS_DUPLICATE_WINDOW'],
    ];
    for (const [text, key] of cases) {
      assert.throws(
        () => parse('demo', text),
        (err: unknown) => err instanceof LmError && err.code === 'INVALID_REQUEST' && err.field === key && err.message.includes(key),
        text,
      );
    }
  });

  test('an unlimited RESULTS_MAX_AGE takes any duplicate window', () => {
    assert.equal(parse('demo', 'RESULTS_MAX_AGE=0\nRESULTS_DUPLICATE_WINDOW=30d').jobs.resultsDuplicateWindowMs, 30 * 86_400_000);
  });
});
