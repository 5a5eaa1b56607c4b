/**
 * /grammars: CRUD on the service's grammar library, the same on every model port and on the
 * gateway. The library validates bodies and names, so the codes and fields are the same here
 * as on any other transport.
 */
import express, { type Request, type Response, type Router } from 'express';
import type { GrammarLibraryApi } from '@lmserve/core';
import { LmError } from '@lmserve/protocol';
import { sendError } from './errors.js';

/** Grammars are small (64 KiB of content); the body limit leaves room for JSON escaping. */
const BODY_LIMIT = '256kb';

function pageQuery(query: Request['query']): { offset: number; limit: number; withContent: boolean } {
  const int = (name: string, fallback: number, max: number) => {
    const raw = query[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (typeof raw !== 'string' || !/^\d+$/.test(raw) || n > max) {
      throw new LmError('INVALID_REQUEST', `${name} must be an integer from 0 to ${max}`, { field: name });
    }
    return n;
  };
  const content = query.content;
  if (content !== undefined && content !== 'true' && content !== 'false') {
    throw new LmError('INVALID_REQUEST', 'content must be true or false', { field: 'content' });
  }
  return { offset: int('offset', 0, 1_000_000), limit: Math.max(1, int('limit', 100, 1000)), withContent: content === 'true' };
}

export function grammarRoutes(library: () => GrammarLibraryApi | null): Router {
  const router = express.Router();
  const json = express.json({ limit: BODY_LIMIT, type: () => true });
  const open = () => {
    const lib = library();
    if (!lib) throw new LmError('STORE_UNAVAILABLE', 'the grammar library is not open');
    return lib;
  };
  const reply = (res: Response, status: number, work: Promise<unknown>) =>
    work.then(
      (body) => (body === undefined ? res.status(status).end() : res.status(status).json(body)),
      (err: unknown) => sendError(res, err),
    );

  router.get('/grammars', (req, res) => {
    res.json(open().list(pageQuery(req.query)));
  });
  router.get('/grammars/:name', (req, res) => {
    res.json(open().get(String(req.params.name)));
  });
  router.post('/grammars', json, (req, res) => {
    void reply(res, 201, open().create(req.body));
  });
  router.put('/grammars/:name', json, (req, res) => {
    void reply(res, 200, open().update(String(req.params.name), req.body));
  });
  router.delete('/grammars/:name', (req, res) => {
    void reply(res, 204, open().delete(String(req.params.name)).then(() => undefined));
  });
  return router;
}
