/**
 * The per-model HTTP API: POST /v1/completions (JSON or SSE), GET /healthz, GET /readyz.
 * A client that disconnects cancels its generation.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import express, { type Express, type Request, type Response } from 'express';
import { LmError, toLmError, type Logger } from '@lmserve/protocol';
import type { CompletionResult, ModelBackend } from './backend.js';
import { parseCompletionBody } from './completion-schema.js';
import { errorMiddleware, sendError } from './errors.js';
import { SseStream } from './sse.js';

export interface ModelAppOptions {
  backend: ModelBackend;
  log: Logger;
  /** Largest request body accepted (default 4 MiB: grammars can be long). */
  bodyLimit?: string;
}

function completionBody(id: string, model: string, result: CompletionResult) {
  return {
    id,
    model,
    output: result.text,
    finish_reason: result.finishReason,
    usage: { tokens_in: result.usage.tokensIn, tokens_out: result.usage.tokensOut },
    timings: { ttft_ms: result.timings.ttftMs, dur_ms: result.timings.totalMs },
  };
}

export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!match?.[1]) return false;
  const given = Buffer.from(match[1].trim());
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function createModelApp(options: ModelAppOptions): Express {
  const { backend, log } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', (_req, res) => {
    const r = backend.readiness();
    if (!r.ready) res.setHeader('Retry-After', String(r.retryAfterS));
    res.status(r.ready ? 200 : 503).json({ model: backend.model, state: r.state, reason: r.reason });
  });

  app.use('/v1', (req, res, next) => {
    if (backend.apiKey === null || bearerMatches(req.headers.authorization, backend.apiKey)) {
      next();
      return;
    }
    sendError(res, new LmError('UNAUTHORIZED', 'missing or wrong API key (Authorization: Bearer <API_KEY>)'));
  });

  // Any content type is read as JSON: `curl -d` sends form-urlencoded by default.
  app.post('/v1/completions', express.json({ limit: options.bodyLimit ?? '4mb', type: () => true }), (req, res) => {
    void handleCompletion(req, res);
  });

  async function handleCompletion(req: Request, res: Response): Promise<void> {
    let parsed;
    try {
      parsed = parseCompletionBody(req.body);
    } catch (err) {
      sendError(res, err);
      return;
    }
    const id = `cmpl-${randomUUID()}`;
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const sse = parsed.stream ? new SseStream(res) : undefined;
    const onTokens = sse ? (text: string, ids: number[]) => sse.send('token', { id, text, tokens: ids }) : () => undefined;
    try {
      const result = await backend.complete({ id, input: parsed.input, params: parsed.params, raw: parsed.raw }, onTokens, abort.signal);
      const body = completionBody(id, backend.model, result);
      if (sse) {
        sse.send('done', body);
        sse.end();
      } else if (!res.writableEnded) {
        res.json(body);
      }
    } catch (err) {
      const error = toLmError(err);
      if (error.status >= 500) log.warn('completion failed', { id, code: error.code, reason: error.message });
      if (sse?.started) {
        sse.send('error', { error: error.toJSON() });
        sse.end();
      } else {
        sendError(res, error, backend.readiness().retryAfterS);
      }
    }
  }

  app.use((_req, res) => sendError(res, new LmError('NOT_FOUND', 'no such route')));
  app.use(errorMiddleware);
  return app;
}
