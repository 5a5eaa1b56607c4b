/**
 * What travels on a request's reply subject, for the service and its clients (nats-chat): the
 * headers and the shape of each message. The bodies are the HTTP API's JSON.
 *
 * - a plain reply: the completion (`{"id","model","output","finish_reason","usage","timings"}`),
 *   or `{"error": {"code","message","field?"}}` with `Lm-Status` and `Lm-Error-Code`;
 * - `params.stream: true`: `Lm-Event: token` messages (`{"id","text","tokens"}`), then one
 *   `Lm-Event: done` (the completion) or `Lm-Event: error` (the error);
 * - `Lm-Event: ping`: the service checking that a streaming requester still listens; ignore it.
 *
 * Every message carries `Lm-Request-Id`; streamed ones also `Lm-Cancel`, the subject where any
 * message cancels the generation.
 */
import { headers, type MsgHdrs } from '@nats-io/transport-node';
import type { LmError } from '@lmserve/protocol';

export const LM_EVENT = 'Lm-Event';
export const LM_STATUS = 'Lm-Status';
export const LM_ERROR_CODE = 'Lm-Error-Code';
export const LM_CANCEL = 'Lm-Cancel';
export const LM_REQUEST_ID = 'Lm-Request-Id';
export const RETRY_AFTER = 'Retry-After';

/** The kinds of message on a reply subject (the `Lm-Event` header). */
export type ReplyEvent = 'token' | 'done' | 'error' | 'ping';

/** The body of an `Lm-Event: token` message. */
export interface TokenMessage {
  id: string;
  text: string;
  tokens: number[];
}

/** Headers from pairs, skipping absent values. */
export function replyHeaders(pairs: Record<string, string | null | undefined>): MsgHdrs {
  const h = headers();
  for (const [key, value] of Object.entries(pairs)) if (value !== null && value !== undefined) h.set(key, value);
  return h;
}

/** The headers of an error reply: its HTTP status and code, and Retry-After for 429 and 503. */
export function errorHeaders(error: LmError, retryAfterS: number, extra: Record<string, string | null | undefined> = {}): MsgHdrs {
  const retry = error.status === 429 || error.status === 503 ? String(Math.max(1, Math.ceil(retryAfterS))) : null;
  return replyHeaders({ ...extra, [LM_STATUS]: String(error.status), [LM_ERROR_CODE]: error.code, [RETRY_AFTER]: retry });
}
