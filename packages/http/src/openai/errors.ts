/**
 * Errors in OpenAI's shape: `{"error": {"message", "type", "code", "param"}}` with the code's
 * HTTP status. `code` is the service's stable error code (README, Errors); `type` is the class
 * OpenAI (and llama-server) give that status; `param` is the request field at fault.
 */
import type { Response } from 'express';
import { toLmError, type LmError } from '@lmserve/protocol';

export interface OpenAiErrorBody {
  error: { message: string; type: string; code: string; param: string | null };
}

/** OpenAI's error type for a status. */
export function openAiErrorType(status: number): string {
  if (status === 400 || status === 413 || status === 422) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'unavailable_error';
  return 'server_error';
}

export function openAiErrorBody(error: LmError): OpenAiErrorBody {
  return { error: { message: error.message, type: openAiErrorType(error.status), code: error.code, param: error.field ?? null } };
}

/** Sends the error (Retry-After on 503 and 429); ends a response whose headers are already out. */
export function sendOpenAiError(res: Response, err: unknown, retryAfterS?: number): void {
  const error = toLmError(err);
  try {
    if (res.headersSent) {
      res.end();
      return;
    }
    if (error.status === 503 || error.status === 429) res.setHeader('Retry-After', String(Math.max(1, Math.ceil(retryAfterS ?? 1))));
    res.status(error.status).json(openAiErrorBody(error));
  } catch {
    res.destroy();
  }
}
