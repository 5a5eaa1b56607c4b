import type { ErrorRequestHandler, Response } from 'express';
import { LmError, toLmError } from '@lmserve/protocol';

/** Sends `{error: {code, message, field?}}` with the code's HTTP status. */
export function sendError(res: Response, err: unknown, retryAfterS?: number): void {
  const error = toLmError(err);
  if (res.headersSent) {
    res.end();
    return;
  }
  if (error.status === 503 && retryAfterS !== undefined) res.setHeader('Retry-After', String(Math.max(1, Math.ceil(retryAfterS))));
  res.status(error.status).json({ error: error.toJSON() });
}

/** Body-parser failures (malformed JSON, too large) and anything else thrown in a route. */
export const errorMiddleware: ErrorRequestHandler = (err, _req, res, _next) => {
  const type = (err as { type?: unknown }).type;
  if (type === 'entity.parse.failed') {
    sendError(res, new LmError('INVALID_REQUEST', 'the request body is not valid JSON', { field: 'body' }));
  } else if (type === 'entity.too.large') {
    sendError(res, new LmError('INVALID_REQUEST', 'the request body is too large', { field: 'body' }));
  } else if (typeof type === 'string') {
    sendError(res, new LmError('INVALID_REQUEST', `the request body could not be read (${type})`, { field: 'body' }));
  } else {
    sendError(res, err);
  }
};
