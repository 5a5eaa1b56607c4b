/**
 * Structured JSON log lines on stderr: the one format every process of the service writes
 * (the supervisor keeps a host's last lines to explain why it died).
 *
 * Built on winston: one winston logger and one transport per `createLogger` call; `child()`
 * loggers are winston children of that root (they share its transport) carrying their merged
 * fields. A line is `{"ts", "level", ...fields, "msg", ...data}` in that key order, written
 * synchronously (a line logged just before `process.exit` is not lost). Fields and data travel
 * through winston under symbol keys, so no field or data key can collide with winston's own
 * `level`/`message` properties. A suppressed level costs one lookup (winston's `isLevelEnabled`, asked once per
 * logger). Nothing here
 * throws: a value JSON cannot encode, a `write` function that throws or a closed stderr (EPIPE)
 * lose at most that line.
 */
import winston from 'winston';
import TransportStream from 'winston-transport';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** winston's numbering: lower is more severe. */
const winstonLevels: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export interface Logger {
  debug(msg: string, data?: Record<string, unknown>): void;
  info(msg: string, data?: Record<string, unknown>): void;
  warn(msg: string, data?: Record<string, unknown>): void;
  error(msg: string, data?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(rank, value);
}

/** winston's own keys (triple-beam): the final line is read from MESSAGE. */
const MESSAGE = Symbol.for('message');
const LEVEL = Symbol.for('level');
/** Where a line's fixed fields and its data ride through winston. */
const FIELDS = Symbol('lmserve.log.fields');
const DATA = Symbol('lmserve.log.data');

interface LineInfo {
  level: LogLevel;
  message: string;
  [LEVEL]?: string;
  [MESSAGE]?: string;
  [FIELDS]?: Record<string, unknown>;
  [DATA]?: Record<string, unknown> | undefined;
}

/** JSON.stringify that survives cycles, BigInts and throwing toJSON/getters (never throws). */
function encode(value: Record<string, unknown>): string {
  try {
    return JSON.stringify(value);
  } catch {
    // fall through to the careful encoding
  }
  try {
    const ancestors: object[] = [];
    return JSON.stringify(value, function (this: unknown, _key, v: unknown) {
      if (typeof v === 'bigint') return v.toString();
      if (typeof v !== 'object' || v === null) return v;
      // `this` is the object holding v: drop the ancestors that are not on v's path.
      while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
      if (ancestors.includes(v)) return '[Circular]';
      ancestors.push(v);
      return v;
    });
  } catch (err) {
    let reason = 'unserializable';
    try {
      reason = String(err);
    } catch {
      // keep the generic reason
    }
    return JSON.stringify({ ts: value.ts, level: value.level, msg: String(value.msg), log_error: reason });
  }
}

/** winston format: the line, keys in their fixed order. */
const lineFormat = winston.format((info) => {
  const line = info as unknown as LineInfo;
  line[MESSAGE] = encode({ ts: new Date().toISOString(), level: line.level, ...line[FIELDS], msg: line.message, ...line[DATA] });
  return info;
});

/** A transport that hands each formatted line to a function, synchronously. */
class LineTransport extends TransportStream {
  readonly #write: (line: string) => void;

  constructor(write: (line: string) => void) {
    super();
    this.#write = write;
  }

  override log(info: unknown, next: () => void): void {
    const line = (info as LineInfo)[MESSAGE];
    try {
      if (line !== undefined) this.#write(`${line}\n`);
    } catch {
      // A logger never takes its process down: the line is lost, the caller goes on.
    }
    next();
  }
}

let stderrGuarded = false;

/** Writes to stderr; EPIPE (a closed reader) and writes after destroy are dropped, never thrown. */
function writeStderr(line: string): void {
  const stderr = process.stderr;
  if (!stderrGuarded) {
    stderrGuarded = true;
    // Without a listener, an asynchronous EPIPE on stderr is an uncaught exception.
    stderr.on('error', () => undefined);
  }
  if (stderr.destroyed || stderr.writableEnded) return;
  stderr.write(line, () => undefined);
}

type WinstonLike = Pick<winston.Logger, 'log'>;

/** Which levels a root logger writes: asked of winston once, since a logger's level never changes. */
type Enabled = Record<LogLevel, boolean>;

function wrap(root: winston.Logger, enabled: Enabled, target: WinstonLike, fields: Record<string, unknown>): Logger {
  const log = (level: LogLevel, msg: string, data?: Record<string, unknown>) => {
    // A suppressed level stops here: no info object, no timestamp, no JSON.
    if (!enabled[level]) return;
    try {
      const info: LineInfo = { level, message: msg, [DATA]: data };
      // A child's fields come from its winston child metadata; the root's are added here.
      if (target === root) info[FIELDS] = fields;
      target.log(info as unknown as winston.LogEntry);
    } catch {
      // never let logging throw into the caller
    }
  };
  return {
    debug: (msg, data) => log('debug', msg, data),
    info: (msg, data) => log('info', msg, data),
    warn: (msg, data) => log('warn', msg, data),
    error: (msg, data) => log('error', msg, data),
    // Always a child of the root, carrying every field so far (winston's nested children let
    // the parent's metadata win over the child's; merging here keeps "the child's field wins").
    child: (more) => {
      const merged = { ...fields, ...more };
      return wrap(root, enabled, root.child({ [FIELDS]: merged } as unknown as object), merged);
    },
  };
}

export function createLogger(
  fields: Record<string, unknown>,
  options: { level?: LogLevel; write?: (line: string) => void } = {},
): Logger {
  const envLevel = process.env.LMSERVE_LOG_LEVEL;
  const level: LogLevel = options.level ?? (isLogLevel(envLevel) ? envLevel : 'info');
  const root = winston.createLogger({
    levels: winstonLevels,
    level,
    format: lineFormat(),
    transports: [new LineTransport(options.write ?? writeStderr)],
    exitOnError: false,
  });
  // A transport error is re-emitted on the logger: without a listener it would be thrown.
  root.on('error', () => undefined);
  const enabled: Enabled = {
    debug: root.isLevelEnabled('debug'),
    info: root.isLevelEnabled('info'),
    warn: root.isLevelEnabled('warn'),
    error: root.isLevelEnabled('error'),
  };
  return wrap(root, enabled, root, fields);
}
