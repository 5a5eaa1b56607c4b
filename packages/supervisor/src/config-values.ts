/**
 * Typed readers for env-file values. Each failure is an LmError whose message names the key,
 * the value and the file, so a bad value is easy to find.
 */
import { LmError } from '@lmserve/protocol';

export class ConfigReader {
  readonly file: string;
  readonly #vars: Map<string, string>;

  constructor(file: string, vars: Map<string, string>) {
    this.file = file;
    this.#vars = vars;
  }

  fail(key: string, expected: string): never {
    const value = this.#vars.get(key) ?? '';
    throw new LmError('INVALID_REQUEST', `invalid ${key}="${value}" in ${this.file}: ${expected}`, { field: key });
  }

  /** The raw value, or `fallback` when the key is absent or empty. */
  string(key: string, fallback: string): string {
    const value = this.#vars.get(key);
    return value === undefined || value === '' ? fallback : value;
  }

  int(key: string, fallback: number, min: number, max: number): number {
    const raw = this.#vars.get(key);
    if (raw === undefined || raw === '') return fallback;
    if (!/^-?\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      this.fail(key, `must be an integer from ${min} to ${max}`);
    }
    return Number(raw);
  }

  choice<T extends string>(key: string, fallback: T, choices: readonly T[]): T {
    const raw = this.string(key, fallback).toLowerCase();
    if (!(choices as readonly string[]).includes(raw)) this.fail(key, `must be one of ${choices.join(', ')}`);
    return raw as T;
  }

  url(key: string, protocols: readonly string[]): string | null {
    const raw = this.string(key, '');
    if (raw === '') return null;
    let parsed: URL | undefined;
    try {
      parsed = new URL(raw);
    } catch {
      parsed = undefined;
    }
    if (!parsed || !protocols.includes(parsed.protocol)) this.fail(key, `must be a ${protocols.join(' or ')} URL`);
    return raw;
  }

  matching(key: string, fallback: string, pattern: RegExp, expected: string): string {
    const raw = this.string(key, fallback);
    if (!pattern.test(raw)) this.fail(key, expected);
    return raw;
  }

  /** Keys present in the file that `known` does not list (likely typos). */
  unknownKeys(known: readonly string[]): string[] {
    return [...this.#vars.keys()].filter((key) => !known.includes(key));
  }
}
