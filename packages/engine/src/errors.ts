import { LmError, isErrorCode, type ErrorCode } from '@lmserve/protocol';

/**
 * The LmError for an error the addon threw. Native errors carry `code` (and `field` for a bad
 * request). A code this side does not know (an addon ahead of @lmserve/protocol) becomes
 * INTERNAL, never some other code's status; `fallback` is only for errors without a code (the
 * binding's argument TypeErrors).
 */
export function nativeError(err: unknown, fallback: ErrorCode = 'INTERNAL'): LmError {
  if (err instanceof LmError) return err;
  if (!(err instanceof Error)) return new LmError(fallback, String(err));
  const { code, field } = err as { code?: unknown; field?: unknown };
  const options = { cause: err, ...(typeof field === 'string' ? { field } : {}) };
  if (code === undefined) return new LmError(fallback, err.message, options);
  if (isErrorCode(code)) return new LmError(code, err.message, options);
  return new LmError('INTERNAL', `${err.message} (unknown native code ${String(code)})`, options);
}

/** The LmError for an error event of the decode loop (same rule: unknown codes are INTERNAL). */
export function nativeEventError(code: string, message: string): LmError {
  if (isErrorCode(code)) return new LmError(code, message);
  return new LmError('INTERNAL', `${message} (unknown native code ${code})`);
}
