/**
 * A streaming HTTP client for completion servers that answer with server-sent events, and the
 * narrow `StreamProtocol` interface a server's request/response format plugs into (llama-server's
 * /completion, our /v1/completions in the original shape and in OpenAI's).
 */
import { Agent, request as httpRequest } from 'node:http';
import type { BenchRequest, RequestOutcome } from './target.js';

/** What one SSE `data:` payload told us. */
export interface StreamEventInfo {
  /** Generated tokens this event carries (0 for bookkeeping events). */
  tokens: number;
  /** Generated text this event carries, when the protocol reports it. */
  text?: string;
  /** Set on the final event: the server's own usage numbers. */
  final?: {
    tokensOut: number | null;
    tokensIn: number | null;
    cachedTokens: number | null;
    finishReason: string | null;
    /** The server's own time to first token, when it reports one. */
    serverTtftMs?: number | null;
    /** The whole generated text, when the final event carries it (replaces the streamed pieces). */
    output?: string;
  };
  /** Set when the event reports a failure. */
  error?: string;
  /** Some of the final numbers ahead of the final event (OpenAI's finish_reason comes a chunk before its usage). */
  partial?: { finishReason?: string | null };
}

export interface StreamProtocol {
  /** Request path, e.g. "/completion". */
  readonly path: string;
  body(request: BenchRequest): unknown;
  /** Interprets one parsed `data:` JSON payload. */
  parseEvent(data: unknown): StreamEventInfo;
  /**
   * The same request without streaming (`--stream off`): its body, and how to read the one JSON
   * answer (default: parseEvent, whose `final` must then be set).
   */
  readonly plain?: { body(request: BenchRequest): unknown; parse?(data: unknown): StreamEventInfo };
}

export interface HttpStreamClientOptions {
  host: string;
  port: number;
  protocol: StreamProtocol;
  /** A request that takes longer fails (the benchmark must never hang). */
  timeoutMs?: number;
  /**
   * false: one JSON answer per request (the protocol's `plain` form), as most load tools send;
   * the outcome then has no TTFT and no streamed events. Default true.
   */
  stream?: boolean;
  /**
   * Keep connections open between requests, as most load tools' HTTP clients do (default: a fresh
   * connection per request). A request whose reused connection the server had closed meanwhile
   * is sent again once on a new one.
   */
  keepAlive?: boolean;
}

/**
 * Posts requests and reads their SSE streams, by default on one fresh loopback connection per
 * request: reused keep-alive sockets that the server closed while idle (during the other side's
 * turn) fail with "socket hang up", and a connect over loopback costs far less than a millisecond.
 * With `keepAlive`, connections are reused and such a failure is retried once on a new one.
 */
export class HttpStreamClient {
  readonly #options: HttpStreamClientOptions;
  readonly #agent: Agent;

  constructor(options: HttpStreamClientOptions) {
    this.#options = options;
    this.#agent = new Agent({ keepAlive: options.keepAlive === true, maxSockets: Infinity });
  }

  /**
   * `signal` aborts the request (the connection is closed; the outcome reports the abort).
   * `onTokens` hears each event's token count as it arrives: what a load generator needs to count
   * the tokens streamed within a time window, which the final usage numbers cannot tell.
   */
  async run(request: BenchRequest, signal?: AbortSignal, onTokens?: (count: number) => void): Promise<RequestOutcome> {
    const first = await this.#send(request, signal, onTokens);
    // A kept connection the server closed while idle: nothing reached the server, send it again.
    if (first.staleConnection && !signal?.aborted) return this.#send(request, signal, onTokens);
    delete first.staleConnection;
    return first;
  }

  #send(request: BenchRequest, signal?: AbortSignal, onTokens?: (count: number) => void): Promise<RequestOutcome & { staleConnection?: boolean }> {
    const { host, port, protocol, timeoutMs = 300_000, stream = true } = this.#options;
    if (!stream && !protocol.plain) throw new Error(`${protocol.path}: this protocol has no non-streaming form`);
    const payload = Buffer.from(JSON.stringify(stream ? protocol.body(request) : protocol.plain!.body(request)));
    const started = performance.now();
    const outcome: RequestOutcome & { staleConnection?: boolean } = {
      ok: false,
      ttftMs: null,
      totalMs: 0,
      tokensOut: null,
      tokensIn: null,
      cachedTokens: null,
      streamedEvents: 0,
      finishReason: null,
    };
    return new Promise<RequestOutcome>((resolve) => {
      let settled = false;
      const finish = (error?: string) => {
        if (settled) return;
        settled = true;
        outcome.totalMs = performance.now() - started;
        if (error) outcome.error = error;
        outcome.ok = !error && outcome.tokensOut !== null;
        if (!error && outcome.tokensOut === null) outcome.error = 'the stream ended without a final event';
        resolve(outcome);
      };
      const req = httpRequest(
        {
          host,
          port,
          path: protocol.path,
          method: 'POST',
          agent: this.#agent,
          headers: { 'content-type': 'application/json', 'content-length': payload.length, accept: stream ? 'text/event-stream' : 'application/json' },
        },
        (res) => {
          res.setEncoding('utf8');
          if (res.statusCode !== 200) {
            let body = '';
            res.on('data', (d: string) => (body += d));
            res.on('end', () => finish(`HTTP ${res.statusCode}: ${body.slice(0, 300)}`));
            return;
          }
          if (!stream) {
            let body = '';
            res.on('data', (d: string) => (body += d));
            res.on('end', () => {
              let info: StreamEventInfo;
              try {
                const data: unknown = JSON.parse(body);
                info = (protocol.plain!.parse ?? protocol.parseEvent)(data);
              } catch (err) {
                finish(`unparsable answer: ${body.slice(0, 200)} (${(err as Error).message})`);
                return;
              }
              if (info.error) return finish(info.error);
              if (info.text) outcome.output = info.text;
              if (info.final) Object.assign(outcome, info.final);
              if (outcome.tokensOut !== null) onTokens?.(outcome.tokensOut);
              finish(outcome.tokensOut === null ? 'the answer has no usage' : undefined);
            });
            res.on('error', (err) => finish(`response error: ${err.message}`));
            return;
          }
          let buffer = '';
          const onEventBlock = (block: string) => {
            for (const line of block.split('\n')) {
              if (!line.startsWith('data:')) continue;
              const text = line.slice(5).trim();
              if (text === '' || text === '[DONE]') continue;
              let info: StreamEventInfo;
              try {
                info = protocol.parseEvent(JSON.parse(text));
              } catch (err) {
                finish(`unparsable event: ${text.slice(0, 200)} (${(err as Error).message})`);
                req.destroy();
                return;
              }
              if (info.tokens > 0) {
                if (outcome.ttftMs === null) outcome.ttftMs = performance.now() - started;
                outcome.streamedEvents++;
                onTokens?.(info.tokens);
              }
              if (info.text) outcome.output = (outcome.output ?? '') + info.text;
              if (info.error) {
                finish(info.error);
                return;
              }
              if (info.partial) Object.assign(outcome, info.partial);
              if (info.final) Object.assign(outcome, info.final, info.final.finishReason === null && outcome.finishReason !== null ? { finishReason: outcome.finishReason } : {});
            }
          };
          res.on('data', (chunk: string) => {
            buffer += chunk;
            let cut: number;
            while ((cut = buffer.indexOf('\n\n')) >= 0) {
              onEventBlock(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 2);
            }
          });
          res.on('end', () => {
            if (buffer.trim()) onEventBlock(buffer);
            finish();
          });
          res.on('error', (err) => finish(`response error: ${err.message}`));
        },
      );
      req.setTimeout(timeoutMs, () => {
        req.destroy(new Error(`no answer within ${timeoutMs} ms`));
      });
      let answered = false;
      req.on('response', () => (answered = true));
      req.on('error', (err) => {
        if (req.reusedSocket && !answered) outcome.staleConnection = true;
        finish(`request error: ${err.message}`);
      });
      if (signal) {
        const onAbort = () => {
          finish('aborted');
          req.destroy();
        };
        if (signal.aborted) onAbort();
        else {
          signal.addEventListener('abort', onAbort, { once: true });
          req.on('close', () => signal.removeEventListener('abort', onAbort));
        }
      }
      req.end(payload);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}
