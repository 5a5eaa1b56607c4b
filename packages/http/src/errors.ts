import type { ErrorRequestHandler, Response } from 'express';
import { LmError, toLmError } from '@lmserve/protocol';

/**
 * Sends `{error: {code, message, field?}}` with the code's HTTP status. A 503 or a 429 carries
 * Retry-After (whole seconds, at least 1), so clients back off instead of hammering.
 */
export function sendError(res: Response, err: unknown, retryAfterS?: number): void {
  const error = toLmError(err);
  try {
    if (res.headersSent) {
      res.end();
      return;
    }
    if (error.status === 503 || error.status === 429) {
      res.setHeader('Retry-After', String(Math.max(1, Math.ceil(retryAfterS ?? 1))));
    }
    res.status(error.status).json({ error: error.toJSON() });
  } catch {
    // the connection is gone: nobody is left to tell
    res.destroy();
  }
}

/** Body-parser failures (malformed JSON, too large) as LmErrors naming the body. */
export function bodyError(err: unknown): LmError {
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'entity.parse.failed') return new LmError('INVALID_REQUEST', 'the request body is not valid JSON', { field: 'body' });
  if (type === 'entity.too.large') {
    const limit = (err as { limit?: unknown }).limit;
    return new LmError('PAYLOAD_TOO_LARGE', `the request body is larger than ${typeof limit === 'number' ? `${limit} bytes` : 'the limit'}`, { field: 'body' });
  }
  if (typeof type === 'string') return new LmError('INVALID_REQUEST', `the request body could not be read (${type})`, { field: 'body' });
  // Any other client error of the body reader (a gzip body that is not gzip: zlib's error with status 400).
  const status = (err as { status?: unknown } | null)?.status;
  if (!(err instanceof LmError) && typeof status === 'number' && status >= 400 && status < 500) {
    return new LmError('INVALID_REQUEST', `the request body could not be read (${(err as Error).message})`, { field: 'body' });
  }
  return toLmError(err);
}

/** Anything thrown in a route that no route handled. */
export const errorMiddleware: ErrorRequestHandler = (err, _req, res, _next) => {
  sendError(res, bodyError(err));
};
