/**
 * `supervisor jobs submit NAME`: a JetStream producer. Reads the worker's JOBS_SUBJECT,
 * RESULTS_SUBJECT, RESULTS_STREAM and NATS settings from its env file (as the supervisor would,
 * its defaults included), publishes N jobs with `Nats-Msg-Id` set to each job id, and with
 * --wait prints each result as a JSON line as it arrives. Results are watched from before the
 * first publish (a subscription to `<RESULTS_SUBJECT>.>`) and looked up in the results stream
 * (a job whose id already had a result is answered from there), so none is missed.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LmError, createLogger } from '@lmserve/protocol';
import { isConfigError, loadSupervisorConfig, loadWorkerConfig, type ServicePaths, type WorkerConfig } from '@lmserve/supervisor';
import { SharedConnection, checkJobId, connectionSettings, errorText, parseServers, resultSubject, type JobResult } from '@lmserve/nats';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';

export interface SubmitOptions {
  input: string;
  /** JSON of the job's params. */
  params?: string;
  count: number;
  /** The job id (with --count N: `<id>-1` … `<id>-N`). */
  id?: string;
  wait?: boolean;
  /** Seconds to wait for NATS, the publishes and (--wait) every result. */
  timeout: number;
  /** NATS server URL(s), instead of the worker's NATS_URL. */
  server?: string;
}

export interface SubmitIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** How often results still missing are looked up in the results stream (besides the subscription). */
const LOOKUP_INTERVAL_MS = 2000;

/** Runs the command; resolves with the exit code (0: every job queued, and with --wait every result arrived and completed). */
export async function submitJobs(paths: ServicePaths, name: string, options: SubmitOptions, io: SubmitIo): Promise<number> {
  const config = workerConfig(paths, name, options.server);
  const params = parseParams(options.params);
  const ids = jobIds(options.id, options.count);
  const settings = connectionSettings(config);
  if (!settings) throw new LmError('INVALID_REQUEST', `worker ${name} has no NATS_URL (set it in ${config.file}, supervisor.env, or pass --server)`, { field: 'NATS_URL' });
  const deadline = Date.now() + options.timeout * 1000;
  const connection = new SharedConnection(settings, createLogger({ component: 'jobs-submit' }, { level: 'error' }), () => undefined);
  try {
    const nc = await firstConnection(connection, options.timeout * 1000);
    const jobs = config.jobs;
    const js = jetstream(nc, { timeout: Math.min(10_000, options.timeout * 1000) });
    const waiting = options.wait ? new ResultWatch(nc, await jetstreamManager(nc, { checkAPI: false }), jobs.resultsStream, jobs.resultsSubject, ids, io) : null;
    try {
      for (const id of ids) {
        const body = JSON.stringify({ id, input: options.input, ...(params === undefined ? {} : { params }) });
        const ack = await js.publish(jobs.subject, body, { msgID: id });
        io.err(`${id}: ${ack.duplicate ? 'already queued (duplicate Nats-Msg-Id)' : 'queued'} in ${ack.stream} at sequence ${ack.seq}`);
      }
      if (!waiting) return 0;
      const done = await waiting.until(deadline);
      if (!done) {
        io.err(`timed out after ${options.timeout} s: ${waiting.missing().length} of ${ids.length} results missing (${waiting.missing().slice(0, 5).join(', ')})`);
        return 1;
      }
      return waiting.failed > 0 ? 1 : 0;
    } finally {
      waiting?.close();
    }
  } finally {
    await connection.close();
  }
}

/** The worker's configuration with the supervisor's defaults, as the supervisor reads it. */
function workerConfig(paths: ServicePaths, name: string, server: string | undefined): WorkerConfig {
  const file = join(paths.envsDir, `worker.${name}.env`);
  if (!existsSync(file)) throw new LmError('NOT_FOUND', `no worker named "${name}" (no worker.${name}.env in ${paths.envsDir})`);
  const supervisor = loadSupervisorConfig(paths);
  const config = loadWorkerConfig(name, file, paths, { natsUrl: supervisor.natsUrl, nats: supervisor.nats });
  if (isConfigError(config)) throw config.error;
  if (server === undefined) return config;
  try {
    if (parseServers(server).servers.length === 0) throw new Error('no server');
  } catch {
    throw new LmError('INVALID_REQUEST', '--server must be a NATS URL (nats://host:port), or several separated by commas', { field: 'server' });
  }
  return { ...config, natsUrl: server };
}

function parseParams(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new LmError('INVALID_REQUEST', `--params is not valid JSON: ${(err as Error).message}`, { field: 'params' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new LmError('INVALID_REQUEST', '--params must be a JSON object', { field: 'params' });
  return value as Record<string, unknown>;
}

/** `--id` as is for one job, `<id>-1` … `<id>-N` for several; a random prefix without --id. */
export function jobIds(id: string | undefined, count: number): string[] {
  const base = id ?? `job-${randomBytes(6).toString('hex')}`;
  const ids = count === 1 && id !== undefined ? [base] : Array.from({ length: count }, (_, i) => `${base}-${i + 1}`);
  for (const each of ids) checkJobId(each, '--id');
  return ids;
}

/** The client once connected; rejects with the first connection error or after `timeoutMs`. */
function firstConnection(connection: SharedConnection, timeoutMs: number): Promise<NatsConnection> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new LmError('MODEL_NOT_READY', `no NATS connection within ${timeoutMs / 1000} s (${connection.settings.servers.join(', ')})`));
    }, timeoutMs);
    const stop = connection.onChange((change) => {
      if (change.type === 'connected') {
        clearTimeout(timer);
        stop();
        resolve(change.nc);
      } else if (change.type === 'error') {
        clearTimeout(timer);
        stop();
        reject(new LmError('MODEL_NOT_READY', `cannot reach NATS at ${connection.settings.servers.join(', ')}: ${change.message}`));
      }
    });
    if (connection.nc && connection.connected) {
      clearTimeout(timer);
      stop();
      resolve(connection.nc);
    }
  });
}

/** Collects the results of a set of job ids, printing each once as it arrives. */
class ResultWatch {
  readonly #sub: Subscription;
  readonly #jsm: JetStreamManager;
  readonly #stream: string;
  readonly #prefix: string;
  readonly #missing: Set<string>;
  readonly #io: SubmitIo;
  #changed: (() => void) | null = null;
  failed = 0;

  constructor(nc: NatsConnection, jsm: JetStreamManager, stream: string, prefix: string, ids: string[], io: SubmitIo) {
    this.#jsm = jsm;
    this.#stream = stream;
    this.#prefix = prefix;
    this.#missing = new Set(ids);
    this.#io = io;
    this.#sub = nc.subscribe(`${prefix}.>`, {
      callback: (err, msg) => {
        if (err) return;
        try {
          this.#arrived(msg.json<JobResult>());
        } catch {
          // Not a result of ours.
        }
      },
    });
  }

  missing(): string[] {
    return [...this.#missing];
  }

  /** True once every result has arrived; false at the deadline. */
  async until(deadline: number): Promise<boolean> {
    let nextLookup = 0;
    while (this.#missing.size > 0) {
      const now = Date.now();
      if (now >= deadline) return false;
      if (now >= nextLookup) {
        nextLookup = now + LOOKUP_INTERVAL_MS;
        await this.#lookup().catch((err: unknown) => this.#io.err(`cannot read the results stream (${errorText(err)}); still waiting`));
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(nextLookup, deadline) - now);
        this.#changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return true;
  }

  close(): void {
    this.#sub.unsubscribe();
  }

  /** Results stored before the subscription saw them (a job id that already had one). */
  async #lookup(): Promise<void> {
    for (const id of [...this.#missing]) {
      const stored = await this.#jsm.streams.getMessage(this.#stream, { last_by_subj: resultSubject(this.#prefix, id) });
      if (stored) this.#arrived(stored.json<JobResult>());
    }
  }

  #arrived(result: JobResult): void {
    const id = result?.job_id;
    if (typeof id !== 'string' || !this.#missing.delete(id)) return;
    if (result.status !== 'completed') this.failed += 1;
    this.#io.out(JSON.stringify(result));
    this.#changed?.();
  }
}
