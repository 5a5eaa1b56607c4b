#!/usr/bin/env node
/**
 * The `supervisor` command. `start` runs the service in the foreground; the other commands
 * talk to a running supervisor through its admin REST.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { toLmError } from '@lmserve/protocol';
import { resolveServicePaths, type ServicePaths } from '@lmserve/supervisor';
import { AdminClient } from './admin-client.js';
import { MAX_LIMIT, runAudit, type AuditKind, type AuditOptions } from './audit-command.js';
import { table } from './format.js';
import { listWorkers, listingTable, runningWorkers } from './list-workers-command.js';
import { pullModel } from './pull-command.js';
import { runSupervisor } from './run-supervisor.js';
import { SINCE_FORMS, parseSince } from './since.js';
import { testWorker } from './test-command.js';
import { registerJobsCommand } from './jobs-cli.js';

interface GlobalOptions {
  envs?: string;
  data?: string;
  root?: string;
}

const program = new Command('supervisor')
  .description('lmserve: several GGUF models resident and serving in parallel, one process each')
  .option('--envs <dir>', 'folder of worker.<name>.env and supervisor.env (env LMSERVE_ENVS_DIR; default <root>/envs)')
  .option('--data <dir>', 'data folder: models/, logs/, run/ (env LMSERVE_DATA_DIR; default <root>/data)')
  .option('--root <dir>', 'folder relative MODEL_PATH values resolve against (env LMSERVE_ROOT; default the repo root)')
  .showHelpAfterError();

function paths(): ServicePaths {
  const o = program.opts<GlobalOptions>();
  return resolveServicePaths({ envsDir: o.envs, dataDir: o.data, root: o.root });
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

program
  .command('start')
  .description('run the supervisor in the foreground with every worker (--all) or one worker')
  .argument('[name]', 'the worker to start (the others stay stopped)')
  .option('--all', 'start every configured worker')
  .action(async (name: string | undefined, options: { all?: boolean }) => {
    if (!options.all && !name) program.error('start needs --all or a worker name');
    await runSupervisor(paths(), options.all ? 'all' : [name as string]);
  });

program
  .command('stop')
  .description('stop one worker (draining its requests), or the whole supervisor')
  .argument('[name]', 'the worker to stop; without it, the supervisor stops')
  .action(async (name: string | undefined) => {
    const client = AdminClient.fromConfig(paths());
    if (name) {
      const worker = await client.action(name, 'stop');
      console.log(`${worker.name}: ${worker.state}`);
    } else {
      await client.shutdown();
      console.log('supervisor: shutting down');
    }
  });

program
  .command('list-workers')
  .description('list the workers of envs/ (port, subject, model file present/missing/downloading) and, when a supervisor runs, their state')
  .option('--json', 'print JSON')
  .action(async (options: { json?: boolean }) => {
    const running = await runningWorkers(paths());
    const workers = listWorkers(paths(), running);
    if (running === null && !options.json) process.stderr.write('no supervisor answers: states are unknown\n');
    console.log(options.json ? JSON.stringify(workers, null, 2) : listingTable(workers));
  });

program
  .command('pull')
  .description("download a worker's model (MODEL_URL to MODEL_PATH, checked against MODEL_SHA256) without starting the service")
  .argument('<name>', 'the worker')
  .action(async (name: string) => {
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const code = await pullModel(paths(), name, {
      out: (text) => process.stdout.write(text),
      err: (text) => process.stderr.write(text),
      tty: process.stderr.isTTY === true,
      signal: stop.signal,
    });
    process.exitCode = code;
  });

program
  .command('status')
  .description("the running supervisor's status")
  .option('--json', 'print JSON')
  .action(async (options: { json?: boolean }) => {
    const status = await AdminClient.fromConfig(paths()).status();
    if (options.json) {
      console.log(JSON.stringify(status, null, 2));
      return;
    }
    console.log(`supervisor pid ${status.pid}, up ${status.uptime_s}s, gateway ${status.gateway}, envs ${status.envs_dir}`);
    const rows = status.workers.map((w) => [w.name, w.state, w.port === null ? '-' : String(w.port)]);
    console.log(table([['NAME', 'STATE', 'PORT'], ...rows]));
  });

program
  .command('test')
  .description('send a sample request to a worker and print the answer and its timings')
  .argument('<name>', 'the worker')
  .option('--input <text>', 'the prompt', 'Hello! Who are you?')
  .option('--max-tokens <n>', 'tokens to generate at most', positiveInt, 32)
  .action(async (name: string, options: { input: string; maxTokens: number }) => {
    console.log(await testWorker(paths(), name, options));
  });

function limit(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > MAX_LIMIT) throw new InvalidArgumentError(`--limit must be an integer from 1 to ${MAX_LIMIT}`);
  return n;
}

/** Runs `logs`/`events`: Ctrl-C (or SIGTERM) ends --follow with exit 0; a closed stdout (| head) ends it quietly. */
async function audit(kind: AuditKind, name: string, options: AuditOptions): Promise<void> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  if (options.follow) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  process.stdout.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? 0 : 1));
  try {
    await runAudit(paths(), name, kind, options, {
      out: (text) => process.stdout.write(text),
      err: (text) => process.stderr.write(text),
      signal: stop.signal,
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const since = (what: string) => new Option('--since <time>', `only ${what} since: ${SINCE_FORMS}`).argParser((value: string) => parseSince(value));

program
  .command('logs')
  .description("a worker's requests from its audit trail, oldest first (GET /logs on the worker's port)")
  .argument('<name>', 'the worker')
  .option('--limit <n>', `the newest N requests (1-${MAX_LIMIT})`, limit, 20)
  .addOption(new Option('--status <status>', 'only requests that ended so').choices(['completed', 'failed', 'cancelled', 'rejected']))
  .option('--transport <name>', 'only requests of this transport (http, nats, ...)')
  .addOption(since('requests'))
  .option('--json', 'print the rows as JSON lines')
  .option('--follow', 'keep printing new requests as they end, until Ctrl-C')
  .action((name: string, options: AuditOptions) => audit('logs', name, options));

program
  .command('events')
  .description("a worker's lifecycle events from its audit trail, oldest first (GET /events on the worker's port)")
  .argument('<name>', 'the worker')
  .option('--limit <n>', `the newest N events (1-${MAX_LIMIT})`, limit, 20)
  .addOption(new Option('--level <level>', 'only events of this level').choices(['debug', 'info', 'warn', 'error']))
  .option('--code <code>', 'only events with this code (startup, crash, model.loaded, ...)')
  .addOption(since('events'))
  .option('--json', 'print the rows as JSON lines')
  .option('--follow', 'keep printing new events as they come, until Ctrl-C')
  .action((name: string, options: AuditOptions) => audit('events', name, options));

registerJobsCommand(program, paths);

program.parseAsync(process.argv).catch((err: unknown) => {
  const error = toLmError(err);
  process.stderr.write(`supervisor: ${error.code}: ${error.message}\n`);
  process.exit(1);
});
