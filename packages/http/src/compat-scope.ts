/**
 * What the OpenAI and Ollama routes need to know about where they are served: on a model port
 * (one model: a request's `model` field is not checked, as llama-server does) or on the gateway
 * (every model, routed by the `model` field), and which API keys open them.
 */
import type { Request } from 'express';
import { findModel, type ModelDirectory, type RequestPath } from '@lmserve/core';
import { LmError } from '@lmserve/protocol';
import { bearerMatches } from './bearer.js';

export interface CompatScope {
  /** Every model this scope serves (listings). */
  models(): readonly RequestPath[];
  /** The one model of a model port (requests refused before routing are recorded there); null on the gateway. */
  readonly fixed: RequestPath | null;
  /**
   * The model a request names. Throws LmError INVALID_REQUEST (no name, on the gateway) or
   * NOT_FOUND (no such model); `field` is the body's field ("model", Ollama's "name" too).
   */
  route(model: unknown, field?: string): RequestPath;
  /** True when the request may use `path` (null: a listing): it carries one of the keys that apply, or none applies. */
  authorized(req: Request, path: RequestPath | null): boolean;
}

/** The keys that open a model: any one of them (none: open). */
function allowed(req: Request, keys: ReadonlyArray<string | null>): boolean {
  const set = keys.filter((k): k is string => k !== null && k !== '');
  return set.length === 0 || set.some((key) => bearerMatches(req.headers.authorization, key));
}

/** A model port: its own model, whatever `model` says; its API_KEY. */
export function portScope(requests: RequestPath): CompatScope {
  return {
    models: () => [requests],
    fixed: requests,
    route: () => requests,
    authorized: (req) => allowed(req, [requests.backend.apiKey]),
  };
}

/**
 * The gateway: every model, by name. A request passes with the gateway-wide key or with the
 * routed model's own API_KEY; listings need the gateway key when one is set.
 */
export function gatewayScope(directory: ModelDirectory, gatewayKey: string | null): CompatScope {
  return {
    models: () => directory.models(),
    fixed: null,
    route: (model, field = 'model') => {
      if (typeof model !== 'string' || model === '') {
        throw new LmError('INVALID_REQUEST', `${field} is required on the gateway: the name of a served model`, { field });
      }
      const found = findModel(directory.models(), model);
      if (!found) throw new LmError('NOT_FOUND', `model "${model.slice(0, 200)}" is not served here`, { field });
      return found;
    },
    authorized: (req, path) => allowed(req, path === null ? [gatewayKey] : [gatewayKey, path.backend.apiKey]),
  };
}

/** The error for a request without a valid key, named after the setting that holds it. */
export function unauthorized(): LmError {
  return new LmError('UNAUTHORIZED', 'missing or wrong API key (Authorization: Bearer <API_KEY>)');
}
