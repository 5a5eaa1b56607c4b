/**
 * Finding a model by the name a client sends (OpenAI's and Ollama's `model` field). Ollama
 * clients send `name:tag`: `llama3` and `llama3:latest` name the same model.
 */
import type { RequestPath } from './request-path.js';

/** The models a transport can reach by name: the gateway sees every worker, a model port its own. */
export interface ModelDirectory {
  /** Every configured model, in a stable order. */
  models(): readonly RequestPath[];
}

/** A name without Ollama's default tag (`llama3:latest` → `llama3`). */
export function baseModelName(name: string): string {
  return name.endsWith(':latest') ? name.slice(0, -':latest'.length) : name;
}

/** True when a client's `requested` name names the model `model` (exactly, or up to `:latest`). */
export function modelNameMatches(model: string, requested: string): boolean {
  return model === requested || baseModelName(model) === baseModelName(requested);
}

/** The model a name routes to: the first ready one among those it names, else the first it names. */
export function findModel(paths: readonly RequestPath[], requested: string): RequestPath | null {
  const named = paths.filter((p) => modelNameMatches(p.backend.model, requested));
  return named.find((p) => p.backend.readiness().ready) ?? named[0] ?? null;
}
