/**
 * The gateway: admin REST under /admin behind `Authorization: Bearer ADMIN_TOKEN`, every model's
 * metrics, and OpenAI's and Ollama's APIs for every model, routed by the request's `model`
 * field (behind the gateway-wide API_KEY or the routed model's own).
 */
import express, { type Express, type Request, type Response } from 'express';
import { LmError, type Logger, type WorkerInfo } from '@lmserve/protocol';
import type { AdminBackend, RecentQuery } from './admin-backend.js';
import { errorMiddleware, sendError } from './errors.js';
import { grammarRoutes } from './grammar-routes.js';
import { bearerMatches } from './bearer.js';
import { gatewayScope } from './compat-scope.js';
import { HTTP_TRANSPORT } from './model-app.js';
import { ollamaRoutes } from './ollama/routes.js';
import { openAiRoutes } from './openai/routes.js';

function recentQuery(query: Request['query']): RecentQuery {
  const number = (value: unknown, fallback: number, max: number, field: string) => {
    if (value === undefined) return fallback;
    const n = Number(value);
    if (typeof value !== 'string' || !Number.isInteger(n) || n < 0 || n > max) {
      throw new LmError('INVALID_REQUEST', `${field} must be an integer from 0 to ${max}`, { field });
    }
    return n;
  };
  const worker = query.worker;
  if (worker !== undefined && typeof worker !== 'string') throw new LmError('INVALID_REQUEST', 'worker must be a name', { field: 'worker' });
  return {
    since: number(query.since, 0, Number.MAX_SAFE_INTEGER, 'since'),
    worker: worker ?? null,
    limit: number(query.limit, 1000, 100_000, 'limit'),
  };
}

export interface GatewayOptions {
  /** supervisor.env's API_KEY: opens every model's OpenAI and Ollama routes here (null: only the models' own keys apply). */
  apiKey?: string | null;
  log: Logger;
}

export function createAdminApp(backend: AdminBackend, token: string, options: GatewayOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // One scrape for every model; metrics hold no prompts, so no token (the gateway is loopback by default).
  app.get('/metrics', (_req, res) => {
    const metrics = backend.metrics();
    if (!metrics) throw new LmError('NOT_FOUND', 'metrics are off for this service (METRICS=off)');
    metrics.text().then(
      (text) => res.setHeader('Content-Type', metrics.contentType).send(text),
      (err: unknown) => sendError(res, err),
    );
  });

  const scope = gatewayScope(backend, options.apiKey ?? null);
  const log = options.log.child({ component: 'gateway' });
  app.use(openAiRoutes({ scope, transport: HTTP_TRANSPORT, log, completions: true }));
  app.use(ollamaRoutes({ scope, transport: HTTP_TRANSPORT, log }));

  const adminOnly = (req: Request, res: Response, next: () => void) => {
    if (bearerMatches(req.headers.authorization, token)) next();
    else sendError(res, new LmError('UNAUTHORIZED', 'missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)'));
  };
  app.use('/admin', adminOnly);
  // The one grammar library of the service, also reachable here when no model runs.
  app.use('/grammars', adminOnly);
  app.use(grammarRoutes(() => backend.grammars()));

  app.get('/admin/status', (_req, res) => {
    res.json(backend.status());
  });

  app.get('/admin/workers', (_req, res) => {
    res.json({ workers: backend.listWorkers() });
  });

  // Recent lifecycle events and request ends, oldest first: ?since=<seq>&worker=<name>&limit=<n>.
  app.get('/admin/events', (req, res) => {
    const query = recentQuery(req.query);
    res.json({ events: backend.recentEvents(query).slice(-query.limit) });
  });

  app.get('/admin/requests', (req, res) => {
    const query = recentQuery(req.query);
    res.json({ requests: backend.recentRequests(query).slice(-query.limit) });
  });

  const action = (run: (name: string) => Promise<WorkerInfo>) => (req: Request, res: Response) => {
    run(String(req.params.name)).then(
      (worker) => res.json({ worker }),
      (err: unknown) => sendError(res, err),
    );
  };
  app.post('/admin/workers/:name/start', action((name) => backend.startWorker(name)));
  app.post('/admin/workers/:name/stop', action((name) => backend.stopWorker(name)));
  app.post('/admin/workers/:name/restart', action((name) => backend.restartWorker(name)));

  app.post('/admin/shutdown', (_req, res) => {
    res.status(202).json({ status: 'shutting down' });
    res.on('finish', () => backend.shutdown());
  });

  app.use((_req, res) => sendError(res, new LmError('NOT_FOUND', 'no such route')));
  app.use(errorMiddleware);
  return app;
}
