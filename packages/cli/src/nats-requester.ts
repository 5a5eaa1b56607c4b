/**
 * A client of the service's NATS request/reply (the wire is described in @lmserve/nats's wire.ts
 * and the README): one request and its reply, or a streamed request read from its own inbox,
 * token by token, until `done` or `error`. The service's `Lm-Event: ping` probes are ignored.
 */
import { LM_CANCEL, LM_EVENT, LM_STATUS, type CompletionBody, type TokenMessage } from '@lmserve/nats';
import { createInbox, errors, headers, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';

export interface ServiceError {
  code: string;
  message: string;
  field?: string;
}

/** How a request ended: the completion, or the service's error with its status. */
export type Answer = { ok: true; body: CompletionBody } | { ok: false; status: number; error: ServiceError };

export interface StreamCallbacks {
  /** Each batch of text as it arrives. */
  onText?: (text: string) => void;
  /** The subject where a message cancels the generation (known from the first message on). */
  onCancelSubject?: (subject: string) => void;
}

/** Raised when nothing answers: no service on the subject, or the timeout passed. */
export class NoAnswerError extends Error {}

function answerOf(msg: Msg): Answer {
  const body = msg.json<Record<string, unknown>>();
  if (body && typeof body === 'object' && 'error' in body) {
    const status = Number(msg.headers?.get(LM_STATUS) || 500);
    return { ok: false, status, error: body.error as ServiceError };
  }
  return { ok: true, body: body as unknown as CompletionBody };
}

/** The request's headers: `Authorization: Bearer <API_KEY>` for a worker that has one. */
export function requestHeaders(apiKey: string | null): MsgHdrs | undefined {
  if (apiKey === null) return undefined;
  const h = headers();
  h.set('Authorization', `Bearer ${apiKey}`);
  return h;
}

function noResponders(err: unknown): boolean {
  return err instanceof errors.NoRespondersError || (err instanceof errors.RequestError && err.isNoResponders());
}

/** One request, one reply. */
export async function requestOnce(nc: NatsConnection, subject: string, body: unknown, timeoutMs: number, apiKey: string | null = null): Promise<Answer> {
  let msg: Msg;
  try {
    const h = requestHeaders(apiKey);
    msg = await nc.request(subject, JSON.stringify(body), h ? { timeout: timeoutMs, headers: h } : { timeout: timeoutMs });
  } catch (err) {
    if (noResponders(err)) throw new NoAnswerError(`no service answers on ${subject}`);
    if (err instanceof errors.TimeoutError) throw new NoAnswerError(`no answer on ${subject} within ${timeoutMs / 1000} s`);
    throw err;
  }
  return answerOf(msg);
}

/** A streamed request (`params.stream` set here): text as it comes, then the final answer. */
export async function requestStream(
  nc: NatsConnection,
  subject: string,
  body: { input: unknown; params?: Record<string, unknown> },
  timeoutMs: number,
  callbacks: StreamCallbacks = {},
  apiKey: string | null = null,
): Promise<Answer> {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    sub.unsubscribe();
  }, timeoutMs);
  let cancelSubject: string | null = null;
  let streamed = '';
  try {
    const h = requestHeaders(apiKey);
    nc.publish(subject, JSON.stringify({ ...body, params: { ...body.params, stream: true } }), h ? { reply: inbox, headers: h } : { reply: inbox });
    for await (const msg of sub) {
      // The server's "no responders" status: nobody serves this subject.
      if (msg.headers?.code === 503 && msg.data.length === 0) throw new NoAnswerError(`no service answers on ${subject}`);
      const event = msg.headers?.get(LM_EVENT) ?? '';
      if (event === 'ping') continue;
      const cancel = msg.headers?.get(LM_CANCEL) ?? '';
      if (cancel !== '' && cancel !== cancelSubject) {
        cancelSubject = cancel;
        callbacks.onCancelSubject?.(cancel);
      }
      if (event === 'token') {
        const { text } = msg.json<TokenMessage>();
        streamed += text;
        callbacks.onText?.(text);
        continue;
      }
      // done, error, or an error reply sent before the stream started (no Lm-Event).
      const answer = answerOf(msg);
      // Token messages are at most once (and, in a cluster, may trail `done`): whatever of the
      // output they did not bring is shown from `done`, which has it whole.
      if (answer.ok && typeof answer.body.output === 'string' && answer.body.output.length > streamed.length && answer.body.output.startsWith(streamed)) {
        callbacks.onText?.(answer.body.output.slice(streamed.length));
      }
      return answer;
    }
  } finally {
    clearTimeout(timer);
    if (!sub.isClosed()) sub.unsubscribe();
  }
  throw new NoAnswerError(timedOut ? `no complete answer on ${subject} within ${timeoutMs / 1000} s` : `the stream on ${subject} ended early`);
}
