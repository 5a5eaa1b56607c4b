/** The `jobs` command group (`jobs submit`), registered on the CLI's program by main.ts. */
import { InvalidArgumentError, type Command } from 'commander';
import type { ServicePaths } from '@lmserve/supervisor';
import { submitJobs, type SubmitOptions } from './jobs-command.js';

function count(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 100_000) throw new InvalidArgumentError('--count must be an integer from 1 to 100000');
  return n;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 86_400) throw new InvalidArgumentError('--timeout must be a number of seconds from 0 to 86400');
  return n;
}

export function registerJobsCommand(program: Command, paths: () => ServicePaths): void {
  const jobs = program.command('jobs').description('JetStream jobs of a worker (JETSTREAM=on)');
  jobs
    .command('submit')
    .description("enqueue jobs on a worker's JOBS_SUBJECT; with --wait, print each result (a JSON line) as it arrives")
    .argument('<name>', 'the worker (its env file gives JOBS_SUBJECT, RESULTS_SUBJECT and the NATS settings)')
    .requiredOption('--input <text>', 'the prompt')
    .option('--params <json>', 'the job\'s params, e.g. \'{"max_tokens": 16}\'')
    .option('--count <n>', 'how many jobs', count, 1)
    .option('--id <id>', 'the job id (several jobs: <id>-1 … <id>-N); letters, digits, - and _')
    .option('--wait', 'wait for every result and print it; exit 1 when one failed or the timeout passed')
    .option('--timeout <s>', 'seconds to wait for NATS and, with --wait, for every result', seconds, 60)
    .option('--server <url>', "NATS server URL(s), instead of the worker's NATS_URL")
    .action(async (name: string, options: SubmitOptions) => {
      const code = await submitJobs(paths(), name, options, {
        out: (line) => process.stdout.write(`${line}\n`),
        err: (line) => process.stderr.write(`${line}\n`),
      });
      process.exitCode = code;
    });
}
