/**
 * Validation of what a client sends the library: names, descriptions, grammar text, root
 * rules, list paging. Everything here is synchronous and cheap; the parse by llama.cpp (the
 * injected check) comes after, in the library.
 */
import { checkGrammarText } from '@lmserve/core';
import { LmError } from '@lmserve/protocol';

/** Largest stored grammar, in bytes of UTF-8. */
export const MAX_GRAMMAR_CONTENT_BYTES = 64 * 1024;
/** Longest description, in characters. */
export const MAX_DESCRIPTION_LENGTH = 1024;
/** A grammar's name: a letter or digit, then up to 63 letters, digits, '.', '_' or '-' (and never ".."). */
export const GRAMMAR_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;
/** A rule name as llama.cpp's parser reads one: letters, digits and '-'. */
export const RULE_NAME_PATTERN = /^[a-zA-Z0-9-]{1,256}$/;
/** Most grammars one list page may hold. */
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LIST_LIMIT = 100;

/** The fields a client gives to create a grammar. */
export interface GrammarInput {
  name: string;
  /** Default: empty. */
  description?: string;
  content: string;
  /** The start rule; default "root". */
  root?: string;
}

/** The fields a client may change; at least one. */
export interface GrammarPatch {
  description?: string;
  content?: string;
  root?: string;
}

/** A validated creation body: every field present. */
export type ParsedGrammarInput = Required<GrammarInput>;

function invalid(field: string, message: string): never {
  throw new LmError('INVALID_REQUEST', message, { field });
}

/** True when `name` may name a grammar (a cheap test: no throw). */
export function isGrammarName(name: unknown): boolean {
  return typeof name === 'string' && GRAMMAR_NAME_PATTERN.test(name) && !name.includes('..');
}

/** Throws INVALID_REQUEST (field `name`) unless `name` may name a grammar. */
export function checkGrammarName(name: unknown, field = 'name'): string {
  if (typeof name !== 'string') invalid(field, `${field} must be a string`);
  if (!isGrammarName(name)) {
    invalid(
      field,
      `${field} must be 1 to 64 characters: a letter or digit, then letters, digits, '.', '_' or '-', without ".." ` +
        `(got ${JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name)})`,
    );
  }
  return name;
}

export function checkDescription(description: unknown): string {
  if (typeof description !== 'string') invalid('description', 'description must be a string');
  if (description.length > MAX_DESCRIPTION_LENGTH) {
    invalid('description', `description must be at most ${MAX_DESCRIPTION_LENGTH} characters (it has ${description.length})`);
  }
  return description;
}

export function checkRoot(root: unknown): string {
  if (typeof root !== 'string') invalid('root', 'root must be a string');
  if (!RULE_NAME_PATTERN.test(root)) {
    invalid('root', "root must be a rule name: 1 to 256 letters, digits or '-' (the characters a GBNF rule name may have)");
  }
  return root;
}

/**
 * The checks on grammar text that need no parser: a string, not empty, at most
 * MAX_GRAMMAR_CONTENT_BYTES (PAYLOAD_TOO_LARGE), and the core's guard (NUL, nesting,
 * repetitions: INVALID_GRAMMAR). All name the field `content`.
 */
export function checkContent(content: unknown): string {
  if (typeof content !== 'string') invalid('content', 'content must be a string of GBNF');
  if (content.trim() === '') invalid('content', 'content must not be empty');
  // Cheap bound first: a string of n UTF-16 units has at most 3n bytes of UTF-8.
  if (content.length * 3 > MAX_GRAMMAR_CONTENT_BYTES) {
    const bytes = Buffer.byteLength(content);
    if (bytes > MAX_GRAMMAR_CONTENT_BYTES) {
      throw new LmError(
        'PAYLOAD_TOO_LARGE',
        `content is ${bytes} bytes; a stored grammar may have at most ${MAX_GRAMMAR_CONTENT_BYTES} bytes (64 KiB) of UTF-8`,
        { field: 'content' },
      );
    }
  }
  checkGrammarText(content, 'content');
  return content;
}

/** True when `content` has a line defining `rule` (`rule ::= …`; llama.cpp starts every rule on its own line). */
export function definesRule(content: string, rule: string): boolean {
  // `rule` is letters, digits and '-' (checkRoot), so it needs no escaping.
  return new RegExp(`^[ \\t]*${rule}[ \\t]*::=`, 'm').test(content);
}

/** Throws INVALID_GRAMMAR (field `content`) naming the start rule when `content` does not define it. */
export function checkDefinesRoot(content: string, root: string): void {
  if (!definesRule(content, root)) {
    throw new LmError('INVALID_GRAMMAR', `content does not define the start rule "${root}" (a line "${root} ::= …")`, { field: 'content' });
  }
}

const CREATE_FIELDS = new Set(['name', 'description', 'content', 'root']);
const PATCH_FIELDS = new Set(['description', 'content', 'root']);

/**
 * Validates a request body for creating (`partial: false`) or changing (`partial: true`) a
 * grammar, and returns its fields. Unknown fields are refused naming the field. In a partial
 * body, `name` is accepted only when it equals `options.name` (the grammar being changed: a
 * client may send back what it read); a grammar cannot be renamed.
 *
 * Errors: INVALID_REQUEST (field: the field at fault, or `body`), PAYLOAD_TOO_LARGE (`content`
 * over 64 KiB), INVALID_GRAMMAR (`content` fails the guard, or does not define its root rule).
 */
export function parseGrammarBody(body: unknown, options: { partial: false }): ParsedGrammarInput;
export function parseGrammarBody(body: unknown, options: { partial: true; name?: string }): GrammarPatch;
export function parseGrammarBody(body: unknown, options: { partial: boolean; name?: string }): ParsedGrammarInput | GrammarPatch;
export function parseGrammarBody(body: unknown, options: { partial: boolean; name?: string }): ParsedGrammarInput | GrammarPatch {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) invalid('body', 'the body must be a JSON object');
  const fields = body as Record<string, unknown>;
  const allowed = options.partial ? PATCH_FIELDS : CREATE_FIELDS;
  for (const key of Object.keys(fields)) {
    // A key whose value is undefined is absent (JSON bodies have none; objects built in code may).
    if (allowed.has(key) || fields[key] === undefined) continue;
    if (options.partial && key === 'name') {
      if (options.name !== undefined && fields.name === options.name) continue;
      invalid('name', 'name cannot be changed: a grammar is renamed by creating the new one and deleting the old');
    }
    invalid(key, `unknown field ${key} (a grammar has ${[...allowed].join(', ')})`);
  }
  const given = (key: string) => fields[key] !== undefined;
  if (options.partial) {
    const patch: GrammarPatch = {};
    if (given('description')) patch.description = checkDescription(fields.description);
    if (given('root')) patch.root = checkRoot(fields.root);
    if (given('content')) patch.content = checkContent(fields.content);
    if (patch.description === undefined && patch.content === undefined && patch.root === undefined) {
      invalid('body', 'nothing to change: give description, content or root');
    }
    // With both given, the root is checked here; with one, against the stored other by the library.
    if (patch.content !== undefined && patch.root !== undefined) checkDefinesRoot(patch.content, patch.root);
    return patch;
  }
  if (!given('name')) invalid('name', 'name is required');
  const name = checkGrammarName(fields.name);
  const description = given('description') ? checkDescription(fields.description) : '';
  const root = given('root') ? checkRoot(fields.root) : 'root';
  if (!given('content')) invalid('content', 'content is required (the GBNF text)');
  const content = checkContent(fields.content);
  checkDefinesRoot(content, root);
  return { name, description, content, root };
}

export interface ListOptions {
  /** Grammars to skip (default 0). */
  offset?: number;
  /** Grammars to return, 1 … 1000 (default 100). */
  limit?: number;
  /** Include each grammar's content (default false). */
  withContent?: boolean;
}

/** Validates list options (INVALID_REQUEST naming `offset`, `limit` or `withContent`); fills the defaults. */
export function checkListOptions(options: ListOptions = {}): Required<ListOptions> {
  const { offset = 0, limit = DEFAULT_LIST_LIMIT, withContent = false } = options;
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) invalid('offset', 'offset must be an integer of 0 or more');
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
    invalid('limit', `limit must be an integer between 1 and ${MAX_LIST_LIMIT}`);
  }
  if (typeof withContent !== 'boolean') invalid('withContent', 'withContent must be a boolean');
  return { offset, limit, withContent };
}

/**
 * List options from a URL query (`?offset=&limit=&with_content=`): strings as URLSearchParams
 * gives them (null or undefined: absent). Unknown keys are refused naming the key.
 */
export function parseListQuery(query: URLSearchParams | Record<string, string | null | undefined>): Required<ListOptions> {
  const entries: Array<[string, string]> =
    query instanceof URLSearchParams
      ? [...query.entries()]
      : Object.entries(query).filter((e): e is [string, string] => typeof e[1] === 'string');
  const options: ListOptions = {};
  for (const [key, value] of entries) {
    if (key === 'offset' || key === 'limit') {
      if (!/^\d{1,9}$/.test(value)) invalid(key, `${key} must be a non-negative integer`);
      options[key] = Number(value);
    } else if (key === 'with_content') {
      if (!['true', 'false', '1', '0', ''].includes(value)) invalid('with_content', 'with_content must be true or false');
      options.withContent = value === 'true' || value === '1' || value === '';
    } else {
      invalid(key, `unknown query parameter ${key} (offset, limit, with_content)`);
    }
  }
  const checked = checkListOptions(options);
  return checked;
}
