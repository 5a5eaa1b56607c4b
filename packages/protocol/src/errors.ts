/**
 * Stable error codes and the HTTP status each maps to. Every hop (addon, engine, host,
 * supervisor, HTTP, NATS) speaks these codes; tests assert on `code`, never on message text.
 */
export const ErrorStatus = {
  INVALID_REQUEST: 400,
  CONTEXT_OVERFLOW: 400,
  INVALID_GRAMMAR: 400,
  GRAMMAR_NOT_FOUND: 400,
  UNAUTHORIZED: 401,
  READ_ONLY: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  QUEUE_FULL: 429,
  CANCELLED: 499,
  INTERNAL: 500,
  MODEL_FILE_NOT_FOUND: 500,
  INVALID_MODEL_FILE: 500,
  UNSUPPORTED_ARCHITECTURE: 500,
  LOAD_ABORTED: 503,
  MODEL_NOT_READY: 503,
  MODEL_CRASHED: 503,
  STORE_UNAVAILABLE: 503,
  TIMEOUT: 504,
  KV_CACHE_FULL: 503,
  DISPOSED: 503,
} as const;

export type ErrorCode = keyof typeof ErrorStatus;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ErrorStatus, value);
}

/** The one error class of the project: a stable `code`, the HTTP `status` it maps to. */
export class LmError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** The request field at fault, when there is one (e.g. "params.temperature"). */
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; field?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LmError';
    // A code that slipped past the types (from another process, a newer addon) is INTERNAL.
    this.code = isErrorCode(code) ? code : 'INTERNAL';
    this.status = ErrorStatus[this.code];
    this.field = options.field;
  }

  toJSON(): { code: ErrorCode; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

/** A code this side does not know (a newer addon, a corrupt message) is INTERNAL (500). */
export function errorCodeOf(value: unknown, fallback: ErrorCode = 'INTERNAL'): ErrorCode {
  return isErrorCode(value) ? value : fallback;
}

/**
 * Wraps anything thrown (a native error with `.code`, a plain Error, a string, an object whose
 * getters throw) into an LmError. Never throws itself: it runs inside error handling.
 */
export function toLmError(err: unknown, fallback: ErrorCode = 'INTERNAL'): LmError {
  try {
    if (err instanceof LmError) return err;
    if (err instanceof Error) {
      const code = (err as { code?: unknown }).code;
      return new LmError(errorCodeOf(code, fallback), String(err.message), { cause: err });
    }
    return new LmError(fallback, typeof err === 'string' ? err : safeString(err));
  } catch {
    return new LmError(fallback, 'an error that could not be described');
  }
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}
