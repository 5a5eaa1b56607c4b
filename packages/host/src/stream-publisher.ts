/**
 * A replica's own NATS connection, for the NATS streams whose token messages it publishes itself
 * (GenerateRequest.publish). Relayed, each message of a stream woke the supervisor (a frame on
 * the relay pipe, then the publish); published here, the replica thread that decoded the tokens
 * is the only process of ours that a message costs.
 *
 * Order: the supervisor still publishes the stream's final message (`done` or `error`) on its own
 * connection, so the replica sends the request's end to the supervisor only once the NATS server
 * has taken every token message (a flush: the server answers a PING after the messages before it).
 * On one server that puts the tokens first for the requester; in a cluster whose servers the two
 * connections reach differently the last tokens may come after `done`, which holds the whole
 * output anyway.
 *
 * While the connection is down (NATS unreachable at start, a reconnect) a new stream is relayed as
 * before; a publish that throws hands the rest of its stream to the relay.
 */
import { SharedConnection } from '@lmserve/nats/connection';
import { replyHeaders, type TokenMessage } from '@lmserve/nats/wire';
import type { Logger, NatsConnectionSettings, PublishTarget } from '@lmserve/protocol';
import type { MsgHdrs } from '@nats-io/transport-node';

/** How long a stream's end waits for the server to confirm its token messages. */
const SETTLE_LIMIT_MS = 2000;

const encoder = new TextEncoder();

export class StreamPublisher {
  readonly #connection: SharedConnection;

  /** `name`: the client name nats-server shows for it (`lmserve-host <worker> <replica>`). */
  constructor(settings: NatsConnectionSettings, log: Logger, name: string) {
    this.#connection = new SharedConnection(settings, log, () => undefined, name);
    this.#connection.retain();
  }

  /** Publishing for one request, or null while the connection is not up (relay it instead). */
  open(target: PublishTarget, id: string): PublishedStream | null {
    const nc = this.#connection.nc;
    if (!this.#connection.connected || !nc || nc.isClosed()) return null;
    return new PublishedStream(nc, target.subject, replyHeaders(target.headers), id);
  }

  close(): Promise<void> {
    return this.#connection.close();
  }
}

type Connection = NonNullable<SharedConnection['nc']>;

/** One request's token messages. */
export class PublishedStream {
  readonly #nc: Connection;
  readonly #subject: string;
  readonly #headers: MsgHdrs;
  readonly #id: string;
  #broken = false;

  constructor(nc: Connection, subject: string, headers: MsgHdrs, id: string) {
    this.#nc = nc;
    this.#subject = subject;
    this.#headers = headers;
    this.#id = id;
  }

  /** False once a publish failed: the rest of the stream goes through the relay. */
  get usable(): boolean {
    return !this.#broken;
  }

  /** Publishes one token message (`{"id","text","tokens"}`); false when it could not. */
  tokens(text: string, ids: number[]): boolean {
    if (this.#broken) return false;
    try {
      const message: TokenMessage = { id: this.#id, text, tokens: ids };
      this.#nc.publish(this.#subject, encoder.encode(JSON.stringify(message)), { headers: this.#headers });
      return true;
    } catch {
      this.#broken = true;
      return false;
    }
  }

  /** Resolves once the server has taken every message published so far (or after SETTLE_LIMIT_MS). */
  settled(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, SETTLE_LIMIT_MS);
    });
    return Promise.race([this.#nc.flush().catch(() => undefined), limit]).finally(() => clearTimeout(timer));
  }
}
