/**
 * Ollama's API: POST /api/generate and /api/chat (NDJSON streaming unless `stream: false`),
 * GET /api/tags, GET /api/ps, POST /api/show, GET /api/version, on a model port or on the
 * gateway (see CompatScope). Errors are Ollama's `{"error": "<message>"}` with the status; the
 * service's code travels in the `X-Error-Code` header. Durations are in nanoseconds.
 */
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { ActiveRequest, RequestPath } from '@lmserve/core';
import { LmError, toLmError, type GenerationResult, type Logger } from '@lmserve/protocol';
import { unauthorized, type CompatScope } from '../compat-scope.js';
import { directStream, directTemplate } from '../direct.js';
import { bodyError } from '../errors.js';
import { parseChatRequest, parseGenerateRequest, type OllamaCall } from './request.js';

/** The Ollama API version reported by /api/version (the release whose API this mirrors). */
export const OLLAMA_API_VERSION = '0.6.4';

export interface OllamaRoutesOptions {
  scope: CompatScope;
  transport: string;
  log: Logger;
  bodyLimit?: string | number;
}

type Kind = 'generate' | 'chat';

/** Sends `{"error": message}` (Retry-After on 503 and 429); ends a stream with an error line. */
export function sendOllamaError(res: Response, err: unknown, retryAfterS?: number): void {
  const error = toLmError(err);
  try {
    if (res.headersSent) {
      if (!res.writableEnded) res.end(`${JSON.stringify({ error: error.message })}\n`);
      return;
    }
    if (error.status === 503 || error.status === 429) res.setHeader('Retry-After', String(Math.max(1, Math.ceil(retryAfterS ?? 1))));
    res.setHeader('X-Error-Code', error.code);
    res.status(error.status).json({ error: error.message });
  } catch {
    res.destroy();
  }
}

const ns = (ms: number) => Math.round(ms * 1e6);

/** Ollama's model name: a tag is part of it (`tiny:latest`). */
function ollamaName(path: RequestPath): string {
  const name = path.backend.model;
  return name.includes(':') ? name : `${name}:latest`;
}

const DETAILS = { parent_model: '', format: 'gguf', family: '', families: null, parameter_size: '', quantization_level: '' };

function modelEntry(path: RequestPath) {
  return { name: ollamaName(path), model: ollamaName(path), modified_at: new Date(0).toISOString(), size: 0, digest: '', details: DETAILS };
}

function finalStats(result: GenerationResult) {
  const { usage, timings } = result;
  return {
    done_reason: result.finishReason === 'length' ? 'length' : 'stop',
    total_duration: ns(timings.totalMs),
    load_duration: 0,
    prompt_eval_count: usage.tokensIn,
    prompt_eval_duration: ns(timings.prefillMs),
    eval_count: usage.tokensOut,
    eval_duration: ns(timings.decodeMs),
  };
}

/** The text of a line: `message` in a chat, `response` in a generate. */
function piece(kind: Kind, text: string) {
  return kind === 'chat' ? { message: { role: 'assistant', content: text } } : { response: text };
}

/** A body with no prompt (generate) or no messages (chat): Ollama loads the model and answers done_reason "load". */
function isLoad(kind: Kind, body: unknown): boolean {
  const b = (body ?? {}) as { prompt?: unknown; messages?: unknown };
  return kind === 'chat' ? b.messages === undefined || b.messages === null || (Array.isArray(b.messages) && b.messages.length === 0) : b.prompt === undefined || b.prompt === null || b.prompt === '';
}

async function serve(kind: Kind, call: OllamaCall, res: Response, request: ActiveRequest, path: RequestPath): Promise<void> {
  const model = ollamaName(path);
  const open = () => {
    if (res.writableEnded || res.destroyed || res.headersSent) return;
    res.status(200);
    res.setHeader('Content-Type', 'application/x-ndjson');
    res.setHeader('Cache-Control', 'no-cache');
    res.flushHeaders();
  };
  const line = (data: unknown) => {
    if (res.writableEnded || res.destroyed) return;
    open();
    res.write(`${JSON.stringify(data)}\n`);
  };
  if (call.input === null) throw request.fail(new LmError('INVALID_REQUEST', 'nothing to generate', { field: kind === 'chat' ? 'messages' : 'prompt' }));
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const tokenLine = (text: string) => ({ model, created_at: new Date().toISOString(), ...piece(kind, text), done: false });
  const onTokens = call.stream
    ? (text: string) => {
        if (text !== '') line(tokenLine(text));
      }
    : null;
  // The model host may write the lines itself; their created_at is then the time it started.
  const direct = call.stream
    ? directStream(res, directTemplate((text) => `${JSON.stringify(tokenLine(text))}\n`, { withTokens: false, skipEmpty: true }), open)
    : undefined;
  let result: GenerationResult;
  try {
    result = await request.run({ input: call.input, params: call.params, raw: call.raw }, onTokens, abort.signal, direct);
  } catch (err) {
    sendOllamaError(res, err, path.backend.readiness().retryAfterS);
    return;
  }
  const last = { model, created_at: new Date().toISOString(), ...piece(kind, call.stream ? '' : result.text), done: true, ...finalStats(result) };
  if (call.stream) {
    line(last);
    res.end();
  } else if (!res.writableEnded) {
    res.json(last);
  }
}

export function ollamaRoutes(options: OllamaRoutesOptions): Router {
  const { scope, transport, log } = options;
  const router = express.Router();
  const json = express.json({ limit: options.bodyLimit ?? '4mb', type: () => true });

  const unreadable = (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const error = scope.fixed && !scope.authorized(req, scope.fixed) ? unauthorized() : bodyError(err);
    sendOllamaError(res, scope.fixed ? scope.fixed.begin(transport).fail(error) : error);
  };

  /** The model a body names, or an error already sent (a 401 hides whether an unknown name exists). */
  const routeOf = (req: Request, res: Response): RequestPath | null => {
    const body = req.body as { model?: unknown; name?: unknown } | null;
    try {
      return scope.route(body?.model ?? body?.name, body?.model === undefined && body?.name !== undefined ? 'name' : 'model');
    } catch (err) {
      sendOllamaError(res, scope.authorized(req, null) ? err : unauthorized());
      return null;
    }
  };

  const generate = (kind: Kind) => (req: Request, res: Response) => {
    const path = routeOf(req, res);
    if (!path) return;
    if (isLoad(kind, req.body)) {
      // Ollama's way to load a model: nothing to generate, and ours are loaded already.
      if (!scope.authorized(req, path)) sendOllamaError(res, unauthorized());
      else res.json({ model: ollamaName(path), created_at: new Date().toISOString(), ...piece(kind, ''), done: true, done_reason: 'load' });
      return;
    }
    const request = path.begin(transport);
    res.setHeader('X-Request-Id', request.id);
    if (!scope.authorized(req, path)) {
      sendOllamaError(res, request.fail(unauthorized()));
      return;
    }
    let call: OllamaCall;
    try {
      call = kind === 'chat' ? parseChatRequest(req.body) : parseGenerateRequest(req.body);
    } catch (err) {
      sendOllamaError(res, request.fail(err));
      return;
    }
    serve(kind, call, res, request, path).catch((err: unknown) => {
      log.error('Ollama handler failed', { error: toLmError(err).message });
      sendOllamaError(res, err);
    });
  };
  router.post('/api/generate', json, generate('generate'), unreadable);
  router.post('/api/chat', json, generate('chat'), unreadable);

  const listing = (req: Request, res: Response, next: NextFunction) => {
    if (scope.authorized(req, null)) next();
    else sendOllamaError(res, unauthorized());
  };
  // Ollama clients and UIs probe the root to find a server.
  router.get('/', (_req, res) => {
    res.type('text/plain').send('Ollama is running');
  });
  router.get('/api/version', (_req, res) => {
    res.json({ version: OLLAMA_API_VERSION });
  });
  router.get('/api/tags', listing, (_req, res) => {
    res.json({ models: scope.models().map(modelEntry) });
  });
  router.get('/api/ps', listing, (_req, res) => {
    const loaded = scope.models().filter((p) => p.backend.readiness().ready);
    res.json({ models: loaded.map((p) => ({ ...modelEntry(p), expires_at: '9999-12-31T23:59:59Z', size_vram: 0 })) });
  });
  router.post('/api/show', json, (req: Request, res: Response) => {
    const path = routeOf(req, res);
    if (!path) return;
    if (!scope.authorized(req, path)) {
      sendOllamaError(res, unauthorized());
      return;
    }
    res.json({
      license: '',
      modelfile: `FROM ${path.backend.model}\n`,
      parameters: '',
      template: '',
      details: DETAILS,
      model_info: {},
      capabilities: ['completion'],
      modified_at: new Date(0).toISOString(),
    });
  }, (err: unknown, _req: Request, res: Response, _next: NextFunction) => sendOllamaError(res, bodyError(err)));
  return router;
}
