/**
 * A requester for the NATS tests, written against the documented wire (README, NATS): a plain
 * request and its reply, and a streamed request read from its own inbox until `done` or `error`,
 * ignoring the service's `Lm-Event: ping` probes.
 */
import { connect, createInbox, type MsgHdrs, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';

export interface Reply {
  headers: Record<string, string>;
  body: any;
}

export interface StreamMessage extends Reply {
  event: string;
}

export function headerMap(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const key of h.keys()) out[key] = h.get(key);
  return out;
}

export function natsConnect(url: string, options: NodeConnectionOptions = {}): Promise<NatsConnection> {
  return connect({ servers: url, timeout: 5000, ...options });
}

/** One request, its one reply (a string body is sent as is). */
export async function natsRequest(nc: NatsConnection, subject: string, body: unknown, timeoutMs = 60_000): Promise<Reply> {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  const msg = await nc.request(subject, data, { timeout: timeoutMs });
  return { headers: headerMap(msg.headers), body: msg.data.length > 0 ? msg.json() : null };
}

/**
 * A streamed request (params.stream forced on): every message of the reply subject in order,
 * pings left out, up to the final `done` or `error`. `onMessage` sees each as it arrives.
 */
export async function natsStream(
  nc: NatsConnection,
  subject: string,
  body: Record<string, any>,
  onMessage: (m: StreamMessage) => void = () => undefined,
  timeoutMs = 60_000,
): Promise<StreamMessage[]> {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox);
  const messages: StreamMessage[] = [];
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  nc.publish(subject, JSON.stringify({ ...body, params: { ...body.params, stream: true } }), { reply: inbox });
  try {
    for await (const msg of sub) {
      const headers = headerMap(msg.headers);
      const event = headers['Lm-Event'] ?? '';
      if (event === 'ping') continue;
      if (msg.headers?.code === 503 && msg.data.length === 0) throw new Error(`no service on ${subject}`);
      const m = { event, headers, body: msg.json() };
      messages.push(m);
      onMessage(m);
      if (event === 'done' || event === 'error') break;
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  const last = messages.at(-1);
  if (!last || (last.event !== 'done' && last.event !== 'error')) throw new Error(`the stream on ${subject} ended without done or error`);
  return messages;
}
