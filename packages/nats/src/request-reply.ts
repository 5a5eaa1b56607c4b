/**
 * One NATS request on a worker's SUBJECT, from message to reply: the same request path, body
 * and answer as HTTP POST /v1/completions. Every failure is a reply (never silence), streamed
 * requests get their tokens as messages, and a requester that goes away cancels its generation.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { completionBody, parseGenerateBody, type ActiveRequest, type TransportWorker } from '@lmserve/core';
import { LmError, envInteger, toLmError, type Logger } from '@lmserve/protocol';
import { errors, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { LM_CANCEL, LM_EVENT, LM_REQUEST_ID, errorHeaders, replyHeaders, type TokenMessage } from './wire.js';

/** The transport name in request ids and the audit trail. */
export const NATS_TRANSPORT = 'nats';

/** How often a streaming request checks that its requester still listens, and how long a check waits. */
export const PROBE_INTERVAL_MS = 2000;

/** LMSERVE_NATS_PROBE_MS (50 … 60000), else PROBE_INTERVAL_MS: how often a requester is probed. */
export function probeIntervalMs(env: NodeJS.ProcessEnv = process.env): number {
  return envInteger(env, 'LMSERVE_NATS_PROBE_MS', { min: 50, max: 60_000, fallback: PROBE_INTERVAL_MS });
}

/**
 * How long a NATS stream's tokens may wait after its first ones to go out as one message. Every
 * message wakes the model host's replica thread, the supervisor, nats-server and the requester
 * (on the 2-core VM each wake-up of a Node process costs 0.2-2 ms of CPU, taken from the decode
 * threads), and NATS routes each message on its own: 50 ms is 20 messages a second, still a
 * smooth stream for a reader, where the relay's default 20 ms made NATS slower than an HTTP
 * stream. The first tokens and the end always go at once.
 */
export const NATS_STREAM_INTERVAL_MS = 50;

/** LMSERVE_NATS_STREAM_INTERVAL_MS (a whole number, 0 … 1000; 0 sends every decode step), else NATS_STREAM_INTERVAL_MS. */
export function natsStreamIntervalMs(env: NodeJS.ProcessEnv = process.env): number {
  return envInteger(env, 'LMSERVE_NATS_STREAM_INTERVAL_MS', { min: 0, max: 1000, fallback: NATS_STREAM_INTERVAL_MS });
}

/** Where a running request can be cancelled: the subject clients publish to, by request id. */
export interface CancelRegistry {
  /** Registers the request; returns its cancel subject. */
  register(requestId: string, abort: AbortController): string;
  unregister(requestId: string): void;
}

export interface RequestContext {
  worker: TransportWorker;
  nc: NatsConnection;
  cancels: CancelRegistry;
  log: Logger;
  /** How long a stream's tokens may wait to go out together (natsStreamIntervalMs(), read once per binding). */
  streamIntervalMs: number;
}

const encoder = new TextEncoder();

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Serves one message of the worker's SUBJECT; never throws. */
export async function serveRequest(msg: Msg, ctx: RequestContext): Promise<void> {
  const { worker, log } = ctx;
  const reply = msg.reply;
  if (!reply) {
    // Nothing to answer to: a publish, not a request.
    log.warn('a message without a reply subject was dropped (send it as a request)', { subject: msg.subject, bytes: msg.data.length });
    return;
  }
  const clientId = msg.headers?.get('Nats-Msg-Id') || null;
  const request = worker.requests.begin(NATS_TRANSPORT, clientId);
  try {
    await run(msg, reply, request, ctx);
  } catch (err) {
    // Only a bug gets here: the request still ends, and the requester still hears of it.
    const error = request.fail(err);
    request.log.error('NATS request handler failed', { error: error.message });
    publish(ctx, reply, json({ error: error.toJSON() }), errorHeaders(error, 1, { [LM_REQUEST_ID]: request.id }));
  }
}

async function run(msg: Msg, reply: string, request: ActiveRequest, ctx: RequestContext): Promise<void> {
  const { worker } = ctx;
  const backend = worker.backend;
  const base = { [LM_REQUEST_ID]: request.id };
  const refuse = (err: unknown, partial?: Parameters<ActiveRequest['fail']>[1]) => {
    const error = request.fail(err, partial);
    publish(ctx, reply, json({ error: error.toJSON() }), errorHeaders(error, backend.readiness().retryAfterS, base));
  };

  const apiKey = backend.apiKey;
  if (apiKey !== null && !bearerMatches(msg.headers, apiKey)) {
    refuse(new LmError('UNAUTHORIZED', 'missing or wrong API key (header Authorization: Bearer <API_KEY>)'));
    return;
  }
  let body: unknown;
  try {
    body = JSON.parse(msg.string());
  } catch (err) {
    refuse(new LmError('INVALID_REQUEST', `the request body is not valid JSON: ${(err as Error).message}`, { field: 'body' }));
    return;
  }
  let parsed;
  try {
    parsed = parseGenerateBody(body);
  } catch (err) {
    refuse(err);
    return;
  }

  const abort = new AbortController();
  const cancelSubject = ctx.cancels.register(request.id, abort);
  const streamHeaders = { ...base, [LM_CANCEL]: cancelSubject };
  const probeSubject = parsed.stream ? reply : muxSibling(reply);
  const probe = probeSubject ? watchRequester(ctx, probeSubject, abort, request.log) : null;
  try {
    // Every token message of a request has the same headers: built once (the client encodes
    // them into each message and keeps no reference).
    const tokenPairs = { ...streamHeaders, [LM_EVENT]: 'token' };
    const tokenOptions = parsed.stream ? { headers: replyHeaders(tokenPairs) } : null;
    const onTokens = tokenOptions
      ? (text: string, ids: number[]) => {
          const message: TokenMessage = { id: request.id, text, tokens: ids };
          // A throw here (connection closed) cancels the generation: nobody would see its tokens.
          ctx.nc.publish(reply, json(message), tokenOptions);
        }
      : null;
    let result;
    try {
      // The model host publishes the token messages itself where it can (HostSpec.nats): then
      // none of them wakes this process; `onTokens` publishes those it relays instead.
      const run = {
        input: parsed.input,
        params: parsed.params,
        raw: parsed.raw,
        ...(parsed.stream ? { tokenIntervalMs: ctx.streamIntervalMs, publish: { subject: reply, headers: tokenPairs } } : {}),
      };
      result = await request.run(run, onTokens, abort.signal);
    } catch (err) {
      const error = toLmError(err);
      const extra = parsed.stream ? { ...streamHeaders, [LM_EVENT]: 'error' } : base;
      publish(ctx, reply, json({ error: error.toJSON() }), errorHeaders(error, backend.readiness().retryAfterS, extra));
      return;
    }
    const answer = json(completionBody(request.id, backend.model, result));
    const headers = replyHeaders(parsed.stream ? { ...streamHeaders, [LM_EVENT]: 'done' } : base);
    if (!publish(ctx, reply, answer, headers, true)) {
      const error = new LmError('PAYLOAD_TOO_LARGE', `the answer (${answer.length} bytes) is larger than the NATS server's max_payload`);
      const extra = parsed.stream ? { ...streamHeaders, [LM_EVENT]: 'error' } : base;
      publish(ctx, reply, json({ error: error.toJSON() }), errorHeaders(error, 1, extra));
    }
  } finally {
    probe?.stop();
    ctx.cancels.unregister(request.id);
  }
}

/**
 * Publishes on the reply subject; false when the message could not be sent (too large for the
 * server, connection closed), which is logged. `quiet`: the caller reports it itself.
 */
function publish(ctx: RequestContext, subject: string, data: Uint8Array, headers: MsgHdrs, quiet = false): boolean {
  try {
    ctx.nc.publish(subject, data, { headers });
    return true;
  } catch (err) {
    if (!quiet) ctx.log.warn('could not publish a NATS reply', { subject, bytes: data.length, reason: (err as Error)?.message ?? String(err) });
    return false;
  }
}

function bearerMatches(headers: MsgHdrs | undefined, token: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(headers?.get('Authorization') ?? '');
  if (!match?.[1]) return false;
  const given = Buffer.from(match[1].trim());
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Where a plain request's requester can be probed without answering it: NATS clients (nats.js,
 * Go, Python, ...) send `request()`s from one wildcard subscription, `_INBOX.<id>.*`, and reply
 * subjects `_INBOX.<id>.<token>`; they drop a message whose token is not one of their requests.
 * A probe on a sibling subject of the same inbox is thus ignored while the requester's
 * connection lives, and answered "no responders" by the server once it is gone. Other reply
 * subjects (a dedicated inbox, a custom subject) are not probed: null.
 */
export function muxSibling(reply: string): string | null {
  const match = /^(_INBOX[^.]*\.[^.*>\s]+)\.[^.*>\s]+$/.exec(reply);
  return match ? `${match[1]}.lmserve-probe-${randomBytes(6).toString('hex')}` : null;
}

/**
 * Checks every probeIntervalMs() that someone still listens on the reply subject: a request
 * there (`Lm-Event: ping`, which requesters ignore) answered "no responders" by the server means
 * the requester's inbox is gone, and the generation is cancelled. A timeout means it is still
 * there. A streamed request is probed on its reply subject; a plain `request()` would take that
 * ping for its answer, so it is probed on a sibling of its inbox (muxSibling).
 */
function watchRequester(ctx: RequestContext, reply: string, abort: AbortController, log: Logger): { stop(): void } {
  let busy = false;
  const interval = probeIntervalMs();
  const timer = setInterval(() => {
    if (busy || abort.signal.aborted || ctx.nc.isClosed()) return;
    busy = true;
    ctx.nc
      .request(reply, undefined, { timeout: Math.max(25, interval / 2), headers: replyHeaders({ [LM_EVENT]: 'ping' }) })
      .then(
        () => undefined,
        (err: unknown) => {
          if (isNoResponders(err) && !abort.signal.aborted) {
            log.info('the requester stopped listening; cancelling', { reply });
            abort.abort();
          }
        },
      )
      .finally(() => {
        busy = false;
      });
  }, interval);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

function isNoResponders(err: unknown): boolean {
  if (err instanceof errors.NoRespondersError) return true;
  if (err instanceof errors.RequestError) return err.isNoResponders();
  return false;
}
