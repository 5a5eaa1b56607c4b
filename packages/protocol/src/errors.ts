/**
 * Stable error codes and the HTTP status each maps to. Every hop (addon, engine, host,
 * supervisor, HTTP, NATS) speaks these codes; tests assert on `code`, never on message text.
 */
export const ErrorStatus = {
  INVALID_REQUEST: 400,
  CONTEXT_OVERFLOW: 400,
  INVALID_GRAMMAR: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  QUEUE_FULL: 429,
  CANCELLED: 499,
  INTERNAL: 500,
  MODEL_FILE_NOT_FOUND: 500,
  INVALID_MODEL_FILE: 500,
  UNSUPPORTED_ARCHITECTURE: 500,
  LOAD_ABORTED: 503,
  MODEL_NOT_READY: 503,
  MODEL_CRASHED: 503,
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
    this.code = code;
    this.status = ErrorStatus[code];
    this.field = options.field;
  }

  toJSON(): { code: ErrorCode; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

/** Wraps anything thrown (a native error with `.code`, a plain Error) into an LmError. */
export function toLmError(err: unknown, fallback: ErrorCode = 'INTERNAL'): LmError {
  if (err instanceof LmError) return err;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return new LmError(isErrorCode(code) ? code : fallback, err.message, { cause: err });
  }
  return new LmError(fallback, String(err));
}
