/**
 * OpenAI's API: POST /v1/chat/completions, POST /v1/completions (with `prompt`), GET /v1/models
 * and GET /v1/models/:id, on a model port or on the gateway (see CompatScope). A request becomes
 * a request of the core as soon as its model is known (on a model port: at once), before its key
 * and its body are checked, so refused ones are recorded too.
 */
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { ActiveRequest, RequestPath } from '@lmserve/core';
import { LmError, toLmError, type Logger } from '@lmserve/protocol';
import { unauthorized, type CompatScope } from '../compat-scope.js';
import { bodyError } from '../errors.js';
import { sendOpenAiError } from './errors.js';
import { parseChatRequest, parseCompletionRequest } from './request.js';
import { serveOpenAi, type OpenAiKind } from './serve.js';

export interface OpenAiRoutesOptions {
  scope: CompatScope;
  /** The transport name in request ids and the audit trail. */
  transport: string;
  log: Logger;
  bodyLimit?: string | number;
  /** Serve POST /v1/completions here (a model port's own route already does, for both shapes). */
  completions: boolean;
}

/** The owner every model is listed with. */
const OWNER = 'lmserve';

function modelObject(path: RequestPath, created: number) {
  return { id: path.backend.model, object: 'model', created, owned_by: OWNER };
}

/** Runs a parsed call of a request already begun and authorized; answers every error itself. */
export function handleOpenAi(kind: OpenAiKind, body: unknown, res: Response, request: ActiveRequest, path: RequestPath, log: Logger): void {
  let call;
  try {
    call = kind === 'chat' ? parseChatRequest(body) : parseCompletionRequest(body);
  } catch (err) {
    sendOpenAiError(res, request.fail(err));
    return;
  }
  serveOpenAi(kind, call, res, request, path).catch((err: unknown) => {
    log.error('OpenAI handler failed', { error: toLmError(err).message });
    sendOpenAiError(res, err);
  });
}

export function openAiRoutes(options: OpenAiRoutesOptions): Router {
  const { scope, transport, log } = options;
  const router = express.Router();
  const started = Math.floor(Date.now() / 1000);
  const json = express.json({ limit: options.bodyLimit ?? '4mb', type: () => true });

  // A body that cannot be read is recorded on a model port (its model is known); on the gateway
  // there is no model to record it under.
  const unreadable = (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (scope.fixed && !scope.authorized(req, scope.fixed)) {
      sendOpenAiError(res, scope.fixed.begin(transport).fail(unauthorized()));
      return;
    }
    sendOpenAiError(res, scope.fixed ? scope.fixed.begin(transport).fail(bodyError(err)) : bodyError(err));
  };

  const generate = (kind: OpenAiKind) => (req: Request, res: Response) => {
    const body: unknown = req.body;
    let path: RequestPath;
    try {
      path = scope.route((body as { model?: unknown } | null)?.model);
    } catch (err) {
      // Without a valid key, an unknown model is a 401 too: names are not given away.
      sendOpenAiError(res, scope.authorized(req, null) ? err : unauthorized());
      return;
    }
    const request = path.begin(transport);
    res.setHeader('X-Request-Id', request.id);
    if (!scope.authorized(req, path)) {
      sendOpenAiError(res, request.fail(unauthorized()));
      return;
    }
    handleOpenAi(kind, body, res, request, path, log);
  };

  router.post('/v1/chat/completions', json, generate('chat'), unreadable);
  if (options.completions) router.post('/v1/completions', json, generate('text'), unreadable);

  const listing = (req: Request, res: Response, next: NextFunction) => {
    if (scope.authorized(req, null)) next();
    else sendOpenAiError(res, unauthorized());
  };
  router.get('/v1/models', listing, (_req, res) => {
    res.json({ object: 'list', data: scope.models().map((p) => modelObject(p, started)) });
  });
  // Names may hold slashes (`org/model`): the rest of the path is the id.
  router.get('/v1/models/*id', listing, (req, res) => {
    const id: unknown = req.params.id;
    const name = Array.isArray(id) ? id.join('/') : String(id);
    const found = scope.models().find((p) => p.backend.model === name) ?? (scope.fixed ? null : safeRoute(scope, name));
    if (!found) sendOpenAiError(res, new LmError('NOT_FOUND', `model "${name.slice(0, 200)}" is not served here`, { field: 'model' }));
    else res.json(modelObject(found, started));
  });
  return router;
}

function safeRoute(scope: CompatScope, name: string): RequestPath | null {
  try {
    return scope.route(name);
  } catch {
    return null;
  }
}
