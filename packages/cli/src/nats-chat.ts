#!/usr/bin/env node
/**
 * `nats-chat`: talks to a model over NATS request/reply, with the original tool's single-dash
 * flags (`-subject`, `-input`, `-i`, `-max-tokens`, `-temperature`) and `--double-dash` ones alike.
 * One-shot (`-input`, streamed with `-stream`) or interactive (`-i`: a chat that keeps the history
 * as chat messages and streams each answer; Ctrl-C cancels the answer being written).
 *
 * Exit codes: 0 done, 1 the service answered an error (its code and message are printed) or
 * nothing answered, 2 usage.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { parseServers } from '@lmserve/nats';
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { NoAnswerError, requestOnce, requestStream, type Answer } from './nats-requester.js';

interface ChatOptions {
  subject?: string;
  input?: string;
  interactive?: boolean;
  maxTokens?: number;
  temperature?: number;
  server: string;
  stream?: boolean;
  grammar?: string;
  timeout: number;
  system?: string;
  token?: string;
  user?: string;
  password?: string;
  creds?: string;
  apiKey?: string;
}

/** Long options that take a value, and those that do not (`-i` is commander's own short flag). */
const VALUE_FLAGS = ['subject', 'input', 'max-tokens', 'temperature', 'server', 'grammar', 'timeout', 'system', 'token', 'user', 'password', 'creds', 'api-key'];
const SWITCH_FLAGS = ['stream', 'interactive', 'help'];

/** `-name` becomes `--name` for the known long options (commander reads one dash as short flags); values are left alone. */
export function normalizeArgs(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const match = /^--?([a-z][a-z-]+)(=.*)?$/.exec(arg);
    const name = match?.[1] ?? '';
    if (!match || (!VALUE_FLAGS.includes(name) && !SWITCH_FLAGS.includes(name))) {
      out.push(arg);
      continue;
    }
    out.push(`--${name}${match[2] ?? ''}`);
    if (VALUE_FLAGS.includes(name) && match[2] === undefined && i + 1 < args.length) out.push(args[++i] as string);
  }
  return out;
}

function integer(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError('must be an integer');
  return Number(value);
}

function number(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number');
  return n;
}

function seconds(value: string): number {
  const n = number(value);
  if (n <= 0) throw new InvalidArgumentError('must be more than 0 seconds');
  return n;
}

function program(): Command {
  return new Command('nats-chat')
    .description('talk to a model served by lmserve over NATS request/reply')
    .option('--subject <subject>', "the worker's SUBJECT (e.g. inference.request.demo)")
    .option('--input <text>', 'one prompt; print the answer and exit')
    .option('-i, --interactive', 'a chat: each line is a user turn, the history is sent as chat messages, answers are streamed')
    .option('--max-tokens <n>', 'params.max_tokens', integer)
    .option('--temperature <t>', 'params.temperature', number)
    .option('--grammar <name|gbnf>', 'params.grammar: a library grammar or inline GBNF')
    .option('--stream', 'print the answer as it is generated')
    .option('--server <url>', 'NATS server(s), comma-separated; credentials in the URL are used', process.env.NATS_URL || 'nats://127.0.0.1:4222')
    .option('--timeout <seconds>', 'how long to wait for NATS and for each answer', seconds, 60)
    .option('--system <text>', 'with -i: a system turn at the start of the history')
    .option('--token <token>', 'NATS token')
    .option('--user <user>', 'NATS user')
    .option('--password <password>', 'NATS password')
    .option('--creds <file>', 'NATS credentials file (JWT and nkey seed)')
    .option('--api-key <key>', "the worker's API_KEY, when it has one")
    .exitOverride()
    .showHelpAfterError();
}

/** Parses the command line; exits 2 on a usage error. */
function parse(argv: string[]): ChatOptions {
  const cmd = program();
  try {
    cmd.parse(normalizeArgs(argv), { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2);
    throw err;
  }
  const options = cmd.opts<ChatOptions>();
  const usage = (message: string): never => {
    process.stderr.write(`nats-chat: ${message}\n${cmd.helpInformation()}`);
    process.exit(2);
  };
  if (!options.subject) usage('-subject is required');
  if (options.input === undefined && !options.interactive) usage('give -input <text> or -i');
  if (options.input !== undefined && options.interactive) usage('-input and -i do not go together');
  if (options.password !== undefined && options.user === undefined) usage('-password needs -user');
  try {
    parseServers(options.server);
  } catch {
    usage(`-server must be a NATS URL (or several, comma-separated): ${options.server.replace(/\/\/[^/@,]*@/g, '//***@')}`);
  }
  return options;
}

async function connectTo(options: ChatOptions): Promise<NatsConnection> {
  const parsed = parseServers(options.server);
  const connection: NodeConnectionOptions = { servers: parsed.servers, timeout: Math.min(options.timeout * 1000, 10_000), name: 'nats-chat' };
  const token = options.token ?? parsed.token;
  const user = options.user ?? parsed.user;
  const password = options.user !== undefined ? options.password : parsed.password;
  if (token) connection.token = token;
  if (user) connection.user = user;
  if (password) connection.pass = password;
  if (options.creds) {
    const file = options.creds;
    connection.authenticator = credsAuthenticator(() => readFileSync(file));
  }
  if (parsed.tls) connection.tls = {};
  return connect(connection);
}

function params(options: ChatOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (options.maxTokens !== undefined) out.max_tokens = options.maxTokens;
  if (options.temperature !== undefined) out.temperature = options.temperature;
  if (options.grammar !== undefined) out.grammar = options.grammar;
  return out;
}

function printError(answer: Extract<Answer, { ok: false }>): void {
  const field = answer.error.field ? ` (${answer.error.field})` : '';
  process.stderr.write(`nats-chat: ${answer.error.code} ${answer.status}: ${answer.error.message}${field}\n`);
}

/** -input: one request; 0 on an answer, 1 on an error. */
async function once(nc: NatsConnection, options: ChatOptions): Promise<number> {
  const subject = options.subject as string;
  const body = { input: options.input, params: params(options) };
  const timeoutMs = options.timeout * 1000;
  const apiKey = options.apiKey ?? null;
  let cancelSubject: string | null = null;
  const onSignal = () => {
    if (cancelSubject) nc.publish(cancelSubject);
    void nc.flush().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  try {
    const answer = options.stream
      ? await requestStream(nc, subject, body, timeoutMs, { onText: (t) => process.stdout.write(t), onCancelSubject: (s) => (cancelSubject = s) }, apiKey)
      : await requestOnce(nc, subject, body, timeoutMs, apiKey);
    if (!answer.ok) {
      if (options.stream) process.stdout.write('\n');
      printError(answer);
      return 1;
    }
    process.stdout.write(options.stream ? '\n' : `${answer.body.output}\n`);
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
  }
}

/** -i: a chat over stdin; every answer streamed; the history grows with each turn. */
async function chat(nc: NatsConnection, options: ChatOptions): Promise<number> {
  const subject = options.subject as string;
  const timeoutMs = options.timeout * 1000;
  const history: Array<{ role: 'system' | 'user' | 'assistant'; content: string }> = [];
  if (options.system) history.push({ role: 'system', content: options.system });
  const tty = process.stdin.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  let cancelSubject: string | null = null;
  let generating = false;
  // Ctrl-C while an answer is written cancels it; at the prompt it ends the chat.
  rl.on('SIGINT', () => {
    if (generating && cancelSubject) nc.publish(cancelSubject);
    else rl.close();
  });
  process.on('SIGINT', () => (generating && cancelSubject ? nc.publish(cancelSubject) : rl.close()));
  let status = 0;
  if (tty) rl.setPrompt('> ');
  if (tty) rl.prompt();
  for await (const line of rl) {
    const text = line.trim();
    if (text === '') {
      if (tty) rl.prompt();
      continue;
    }
    if (text === '/exit' || text === '/quit') break;
    history.push({ role: 'user', content: text });
    generating = true;
    cancelSubject = null;
    let answer: Answer;
    try {
      answer = await requestStream(nc, subject, { input: history, params: params(options) }, timeoutMs, {
        onText: (t) => process.stdout.write(t),
        onCancelSubject: (s) => (cancelSubject = s),
      }, options.apiKey ?? null);
    } catch (err) {
      history.pop();
      process.stdout.write('\n');
      process.stderr.write(`nats-chat: ${(err as Error).message}\n`);
      status = 1;
      generating = false;
      if (tty) rl.prompt();
      continue;
    }
    generating = false;
    process.stdout.write('\n');
    if (answer.ok) {
      history.push({ role: 'assistant', content: answer.body.output });
    } else {
      history.pop();
      printError(answer);
      status = 1;
    }
    if (tty) rl.prompt();
  }
  rl.close();
  return status;
}

async function main(): Promise<number> {
  const options = parse(process.argv.slice(2));
  process.stdout.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? 0 : 1));
  let nc: NatsConnection;
  try {
    nc = await connectTo(options);
  } catch (err) {
    const servers = parseServers(options.server).servers.join(',');
    process.stderr.write(`nats-chat: cannot connect to NATS at ${servers}: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    return options.interactive ? await chat(nc, options) : await once(nc, options);
  } catch (err) {
    process.stderr.write(`nats-chat: ${err instanceof NoAnswerError ? err.message : `unexpected failure: ${(err as Error)?.message ?? String(err)}`}\n`);
    return 1;
  } finally {
    await nc.drain().catch(() => undefined);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`nats-chat: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(1);
  },
);
