/**
 * The one log format of every process (winston underneath): key order, levels, child fields, the
 * `write` option, and that a logger never takes its process down — not with stderr closed, not
 * in a worker thread.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { createLogger, isLogLevel, type LogLevel } from '@lmserve/protocol';

/** The built package, for child processes and worker threads that run plain JavaScript. */
const protocolUrl = import.meta.resolve('@lmserve/protocol');

function capture(fields: Record<string, unknown>, level?: LogLevel) {
  const lines: string[] = [];
  const log = createLogger(fields, { ...(level ? { level } : {}), write: (line) => lines.push(line) });
  const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, parsed };
}

test('one JSON object per line: ts, level, the fixed fields, msg, then the data, in that order', () => {
  const { log, lines, parsed } = capture({ component: 'supervisor', pid: 42 });
  const before = Date.now();
  log.info('worker ready', { worker: 'demo', port: 5773 });
  // Written before the call returns (a line logged just before process.exit is not lost).
  assert.equal(lines.length, 1);
  assert.ok(lines[0]?.endsWith('}\n'));
  assert.equal(lines[0]?.indexOf('\n'), lines[0]!.length - 1, 'exactly one line');
  const [line] = parsed();
  assert.deepEqual(Object.keys(line!), ['ts', 'level', 'component', 'pid', 'msg', 'worker', 'port']);
  assert.equal(line!.level, 'info');
  assert.equal(line!.msg, 'worker ready');
  assert.equal(line!.worker, 'demo');
  assert.equal(line!.port, 5773);
  assert.match(line!.ts as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const ts = Date.parse(line!.ts as string);
  assert.ok(ts >= before - 1 && ts <= Date.now() + 1);
});

test('no data: the line ends with msg; data keys named like fixed keys keep their place, data wins', () => {
  const { log, parsed } = capture({ component: 'host' });
  log.warn('plain');
  log.error('clash', { msg: 'from data', level: 'custom', extra: 1, component: 'other' });
  const [plain, clash] = parsed();
  assert.deepEqual(Object.keys(plain!), ['ts', 'level', 'component', 'msg']);
  // The same as {ts, level, ...fields, msg, ...data}: a repeated key keeps its first position.
  assert.deepEqual(Object.keys(clash!), ['ts', 'level', 'component', 'msg', 'extra']);
  assert.equal(clash!.msg, 'from data');
  assert.equal(clash!.level, 'custom');
  assert.equal(clash!.component, 'other');
  // winston's own property names are ordinary data here.
  const { log: log2, parsed: parsed2 } = capture({});
  log2.info('m', { message: 'data message', exception: true, splat: [1] });
  assert.deepEqual(parsed2()[0], { ...parsed2()[0], msg: 'm', message: 'data message', exception: true, splat: [1] });
});

test('levels: the option, else LMSERVE_LOG_LEVEL, else info; lower levels are dropped', () => {
  const levels: LogLevel[] = ['debug', 'info', 'warn', 'error'];
  const emitted = (level: LogLevel | undefined) => {
    const { log, parsed } = capture({}, level);
    for (const l of levels) log[l](l);
    return parsed().map((line) => line.level);
  };
  const saved = process.env.LMSERVE_LOG_LEVEL;
  try {
    delete process.env.LMSERVE_LOG_LEVEL;
    assert.deepEqual(emitted(undefined), ['info', 'warn', 'error']);
    assert.deepEqual(emitted('debug'), ['debug', 'info', 'warn', 'error']);
    assert.deepEqual(emitted('warn'), ['warn', 'error']);
    assert.deepEqual(emitted('error'), ['error']);
    process.env.LMSERVE_LOG_LEVEL = 'debug';
    assert.deepEqual(emitted(undefined), ['debug', 'info', 'warn', 'error']);
    assert.deepEqual(emitted('error'), ['error'], 'the option wins over the environment');
    process.env.LMSERVE_LOG_LEVEL = 'loud';
    assert.deepEqual(emitted(undefined), ['info', 'warn', 'error'], 'an unknown level in the environment is ignored');
  } finally {
    if (saved === undefined) delete process.env.LMSERVE_LOG_LEVEL;
    else process.env.LMSERVE_LOG_LEVEL = saved;
  }
  assert.ok(isLogLevel('warn'));
  assert.ok(!isLogLevel('trace'));
  assert.ok(!isLogLevel('toString'));
});

test('a suppressed level does no work: no timestamp, no serialization of its data', () => {
  const { log, lines } = capture({}, 'info');
  let touched = 0;
  const data = {
    get expensive() {
      touched++;
      return 1;
    },
    toJSON() {
      touched++;
      return {};
    },
  };
  const realToISOString = Date.prototype.toISOString;
  let stamps = 0;
  Date.prototype.toISOString = function (this: Date) {
    stamps++;
    return realToISOString.call(this);
  };
  try {
    for (let i = 0; i < 1000; i++) log.debug('hot path', data);
    log.child({ reqId: 'r' }).debug('hot path', data);
  } finally {
    Date.prototype.toISOString = realToISOString;
  }
  assert.equal(lines.length, 0);
  assert.equal(touched, 0);
  assert.equal(stamps, 0);
});

test('child loggers add fields after the parent fields; a child field wins; the parent is unchanged', () => {
  const { log, parsed } = capture({ component: 'supervisor', worker: 'demo' }, 'debug');
  const request = log.child({ reqId: 'http-1' });
  const nested = request.child({ phase: 'decode', worker: 'other' });
  request.debug('queued', { position: 0 });
  nested.info('step', { tokens: 3 });
  log.info('parent');
  // Children share the parent's level and its write function.
  request.debug('still debug');
  const [queued, step, parent, still] = parsed();
  assert.deepEqual(Object.keys(queued!), ['ts', 'level', 'component', 'worker', 'reqId', 'msg', 'position']);
  assert.equal(queued!.reqId, 'http-1');
  assert.deepEqual(Object.keys(step!), ['ts', 'level', 'component', 'worker', 'reqId', 'phase', 'msg', 'tokens']);
  assert.equal(step!.worker, 'other');
  assert.equal(step!.reqId, 'http-1');
  assert.deepEqual(Object.keys(parent!), ['ts', 'level', 'component', 'worker', 'msg']);
  assert.equal(still!.reqId, 'http-1');
  // Siblings do not see each other's fields.
  const { log: root, parsed: parsed2 } = capture({});
  const a = root.child({ reqId: 'a' });
  const b = root.child({ reqId: 'b' });
  b.info('b');
  a.info('a');
  assert.deepEqual(parsed2().map((l) => [l.reqId, l.msg]), [['b', 'b'], ['a', 'a']]);
});

test('the write option receives each whole line; a write that throws or data JSON cannot encode never throws', () => {
  const log = createLogger({}, {
    write: () => {
      throw new Error('disk full');
    },
  });
  assert.doesNotThrow(() => log.error('lost'));
  assert.doesNotThrow(() => log.info('again'));

  const { log: ok, parsed } = capture({ c: 1 });
  const cyclic: Record<string, unknown> = { big: 10n };
  cyclic.self = cyclic;
  assert.doesNotThrow(() => ok.info('odd data', { cyclic }));
  const hostile = {
    toJSON() {
      throw new Error('no');
    },
  };
  assert.doesNotThrow(() => ok.warn('hostile data', { hostile }));
  ok.info('after');
  const lines = parsed();
  assert.equal(lines.length, 3);
  assert.deepEqual(lines[0]!.cyclic, { big: '10', self: '[Circular]' });
  assert.equal(lines[1]!.msg, 'hostile data');
  assert.equal(lines[1]!.level, 'warn');
  assert.equal(lines[2]!.msg, 'after');
});

/** Runs an ES module snippet in a child node process with stderr as a pipe; `withChild` can act on it. */
function runChild(code: string, withChild: (child: ReturnType<typeof spawn>) => void = () => undefined) {
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.once('error', reject);
    child.once('close', (exitCode, signal) => resolve({ code: exitCode, signal, stdout }));
    withChild(child);
  });
}

test('stderr closed by the reader (EPIPE): the process logs on and exits normally', async () => {
  const code = `
    const { createLogger } = await import(${JSON.stringify(protocolUrl)});
    const log = createLogger({ component: 'epipe' });
    process.stdout.write('ready\\n');
    // Wait for the parent to close its end of the stderr pipe, then log a lot.
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 2000; i++) log.info('line after the reader left', { i, pad: 'x'.repeat(200) });
    await new Promise((r) => setTimeout(r, 100));
    log.error('still here');
    process.stdout.write('alive\\n');
  `;
  const result = await runChild(code, (child) => {
    child.stdout!.once('data', () => child.stderr!.destroy());
  });
  assert.equal(result.code, 0, `exit ${result.code} ${result.signal ?? ''}`);
  assert.match(result.stdout, /alive/);
});

test('stderr destroyed inside the process: logging does not throw', async () => {
  const code = `
    const { createLogger } = await import(${JSON.stringify(protocolUrl)});
    const log = createLogger({ component: 'destroyed' });
    log.info('before');
    process.stderr.destroy();
    log.error('after destroy', { n: 1 });
    log.child({ reqId: 'r' }).warn('child after destroy');
    const fresh = createLogger({ component: 'fresh' });
    fresh.error('new logger after destroy');
    await new Promise((r) => setTimeout(r, 50));
    log.info('later');
    process.stdout.write('alive\\n');
  `;
  const result = await runChild(code);
  assert.equal(result.code, 0, `exit ${result.code} ${result.signal ?? ''}`);
  assert.match(result.stdout, /alive/);
});

test('works inside a worker thread: lines on the worker stderr, the write option, child fields', async () => {
  const code = `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(protocolUrl)}).then(({ createLogger }) => {
      const log = createLogger({ component: 'replica', replica: 0 }, { level: 'debug' });
      log.child({ reqId: 'http-w' }).debug('in a thread', { n: 1 });
      const lines = [];
      createLogger({ component: 'captured' }, { write: (l) => lines.push(l) }).info('via write');
      parentPort.postMessage(lines);
    });
  `;
  const worker = new Worker(code, { eval: true, stderr: true, execArgv: [] });
  let stderr = '';
  worker.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [captured] = await Promise.all([
    new Promise<string[]>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    }),
    new Promise((resolve) => worker.once('exit', resolve)),
  ]);
  assert.equal(captured.length, 1);
  assert.equal((JSON.parse(captured[0]!) as { msg: string }).msg, 'via write');
  // The worker's stderr stream ends after exit; give it the turn to flush.
  await new Promise((r) => setImmediate(r));
  const line = JSON.parse(stderr.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
  assert.deepEqual(Object.keys(line), ['ts', 'level', 'component', 'replica', 'reqId', 'msg', 'n']);
  assert.equal(line.msg, 'in a thread');
  assert.equal(line.reqId, 'http-w');
});
