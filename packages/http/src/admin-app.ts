/** Admin REST under /admin on the gateway address, behind `Authorization: Bearer ADMIN_TOKEN`. */
import express, { type Express, type Request, type Response } from 'express';
import { LmError, type WorkerInfo } from '@lmserve/protocol';
import type { AdminBackend } from './backend.js';
import { errorMiddleware, sendError } from './errors.js';
import { bearerMatches } from './model-app.js';

export function createAdminApp(backend: AdminBackend, token: string): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use('/admin', (req, res, next) => {
    if (bearerMatches(req.headers.authorization, token)) next();
    else sendError(res, new LmError('UNAUTHORIZED', 'missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)'));
  });

  app.get('/admin/status', (_req, res) => {
    res.json(backend.status());
  });

  app.get('/admin/workers', (_req, res) => {
    res.json({ workers: backend.listWorkers() });
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
