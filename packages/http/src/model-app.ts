/**
 * The per-model HTTP API: POST /v1/completions (JSON or SSE), GET /healthz, GET /readyz, and
 * OpenAI's and Ollama's APIs (openai/, ollama/). Every completion goes through the core's
 * RequestPath (ids, the observer); this file only speaks HTTP. A client that disconnects
 * cancels its generation.
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import {
  completionBody,
  parseEventQuery,
  parseGenerateBody,
  parseRequestQuery,
  type ActiveRequest,
  type GrammarLibraryApi,
  type MetricsSource,
  type RequestPath,
  type TransportStatus,
  type WorkerRecords,
} from '@lmserve/core';
import { LmError, toLmError, type Logger, type TokenLogprob } from '@lmserve/protocol';
import { bearerMatches } from './bearer.js';
import { directStream, directTemplate } from './direct.js';
import { portScope } from './compat-scope.js';
import { bodyError, errorMiddleware, sendError } from './errors.js';
import { ollamaRoutes } from './ollama/routes.js';
import { openAiErrorType } from './openai/errors.js';
import { handleOpenAi, openAiRoutes } from './openai/routes.js';
import { grammarRoutes } from './grammar-routes.js';
import { SseStream } from './sse.js';

export interface ModelAppOptions {
  requests: RequestPath;
  /** The worker's audit trail: GET /logs and GET /events (404 when null: AUDIT=off). */
  records?: WorkerRecords | null;
  /** GET /metrics (404 when null: METRICS=off). */
  metrics?: MetricsSource | null;
  /** /grammars CRUD on the service's library. */
  grammars?: GrammarLibraryApi | null;
  /** The other transports' states for /readyz (its `nats` field); absent: none. */
  transportStatus?: () => Record<string, TransportStatus>;
  log: Logger;
  /** Largest request body accepted (default 4 MiB). */
  bodyLimit?: string | number;
}

/** The transport name in request ids and the audit trail. */
export const HTTP_TRANSPORT = 'http';

export { bearerMatches };

export function createModelApp(options: ModelAppOptions): Express {
  const { requests, log } = options;
  const backend = requests.backend;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', (_req, res) => {
    const r = backend.readiness();
    if (!r.ready) res.setHeader('Retry-After', String(r.retryAfterS));
    const download = r.download ? { download: r.download } : {};
    res.status(r.ready ? 200 : 503).json({ model: backend.model, state: r.state, reason: r.reason, nats: natsReadiness(), ...download });
  });

  // NATS shows as a field: a broken NATS connection never makes the HTTP port unready.
  function natsReadiness(): Record<string, unknown> | null {
    let status: Record<string, TransportStatus>;
    try {
      status = options.transportStatus?.() ?? {};
    } catch {
      return null;
    }
    const nats = status.nats;
    return nats ? { ...nats, jetstream: status.jobs ?? null } : null;
  }

  // Every POST /v1/completions is a request of the core from its first byte on: its id is
  // created before authentication and parsing, so refused ones are published too.
  app.post('/v1/completions', (req, res, next) => {
    const request = requests.begin(HTTP_TRANSPORT);
    res.locals.request = request;
    res.setHeader('X-Request-Id', request.id);
    const apiKey = backend.apiKey;
    if (apiKey !== null && !bearerMatches(req.headers.authorization, apiKey)) {
      const error = (res.locals.request as ActiveRequest).fail(
        new LmError('UNAUTHORIZED', 'missing or wrong API key (Authorization: Bearer <API_KEY>)'),
      );
      // The body is not read yet, so it may be either API's: both error shapes in one.
      res.status(error.status).json({ error: { ...error.toJSON(), type: openAiErrorType(error.status), param: null } });
      return;
    }
    next();
  });

  // Any content type is read as JSON: `curl -d` sends form-urlencoded by default.
  const json = express.json({ limit: options.bodyLimit ?? '4mb', type: () => true });
  app.post(
    '/v1/completions',
    json,
    (req: Request, res: Response) => {
      handleCompletion(req, res, res.locals.request as ActiveRequest).catch((err: unknown) => {
        log.error('completion handler failed', { error: toLmError(err).message });
        sendError(res, err);
      });
    },
    (err: unknown, _req: Request, res: Response, _next: NextFunction) => {
      sendError(res, (res.locals.request as ActiveRequest).fail(bodyError(err)));
    },
  );

  async function handleCompletion(req: Request, res: Response, request: ActiveRequest): Promise<void> {
    // A body with `prompt` (and no `input`) is OpenAI's completion request.
    const body = req.body as Record<string, unknown> | null;
    if (body !== null && typeof body === 'object' && !Array.isArray(body) && 'prompt' in body && !('input' in body)) {
      handleOpenAi('text', body, res, request, requests, log);
      return;
    }
    let parsed;
    try {
      parsed = parseGenerateBody(req.body);
    } catch (err) {
      sendError(res, request.fail(err));
      return;
    }
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const sse = parsed.stream ? new SseStream(res) : undefined;
    const id = request.id;
    // params.logprobs: each token event carries its tokens' log-probabilities.
    const tokenEvent = (text: string, tokens: number[], logprobs?: TokenLogprob[]) => (logprobs ? { id, text, tokens, logprobs } : { id, text, tokens });
    const onTokens = sse ? (text: string, ids: number[], logprobs?: TokenLogprob[]) => sse.send('token', tokenEvent(text, ids, logprobs)) : null;
    // Without log-probabilities the model host may write the token events itself.
    const direct =
      sse && (parsed.params.logprobs ?? -1) < 0
        ? directStream(res, directTemplate((text, tokens) => SseStream.format('token', tokenEvent(text, tokens)), { withTokens: true, skipEmpty: false }), () => sse.open())
        : undefined;
    try {
      const result = await request.run({ input: parsed.input, params: parsed.params, raw: parsed.raw }, onTokens, abort.signal, direct);
      const body = completionBody(id, backend.model, result);
      if (sse) {
        sse.send('done', body);
        sse.end();
      } else if (!res.writableEnded) {
        res.json(body);
      }
    } catch (err) {
      const error = toLmError(err);
      if (sse?.started) {
        sse.send('error', { error: error.toJSON() });
        sse.end();
      } else {
        sendError(res, error, backend.readiness().retryAfterS);
      }
    }
  }

  // OpenAI's and Ollama's routes check the API key themselves, answering in their own shapes.
  const scope = portScope(requests);
  app.use(openAiRoutes({ scope, transport: HTTP_TRANSPORT, log, bodyLimit: options.bodyLimit, completions: false }));
  app.use(ollamaRoutes({ scope, transport: HTTP_TRANSPORT, log, bodyLimit: options.bodyLimit }));

  const authorized = (req: Request, res: Response, next: NextFunction) => {
    if (backend.apiKey === null || bearerMatches(req.headers.authorization, backend.apiKey)) {
      next();
      return;
    }
    sendError(res, new LmError('UNAUTHORIZED', 'missing or wrong API key (Authorization: Bearer <API_KEY>)'));
  };
  app.use('/v1', authorized);

  // The audit trail holds prompts and outputs: behind the API key like the completions.
  const records = options.records ?? null;
  const noAudit = () => new LmError('NOT_FOUND', 'the audit trail is off for this service (AUDIT=off)');
  app.get('/logs', authorized, (req, res) => {
    if (!records) throw noAudit();
    const query = parseRequestQuery(req.query as Record<string, unknown>);
    records.requests(query).then((rows) => res.json(rows), (err: unknown) => sendError(res, err));
  });
  app.get('/events', authorized, (req, res) => {
    if (!records) throw noAudit();
    const query = parseEventQuery(req.query as Record<string, unknown>);
    records.events(query).then((rows) => res.json(rows), (err: unknown) => sendError(res, err));
  });

  const grammars = options.grammars ?? null;
  app.use('/grammars', authorized);
  app.use(grammarRoutes(() => grammars));

  const metrics = options.metrics ?? null;
  app.get('/metrics', (_req, res) => {
    if (!metrics) throw new LmError('NOT_FOUND', 'metrics are off for this service (METRICS=off)');
    metrics.text().then(
      (text) => res.setHeader('Content-Type', metrics.contentType).send(text),
      (err: unknown) => sendError(res, err),
    );
  });
  app.use((_req, res) => sendError(res, new LmError('NOT_FOUND', 'no such route')));
  app.use(errorMiddleware);
  return app;
}
