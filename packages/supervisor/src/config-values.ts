/**
 * Typed readers for configuration values over layered sources (the process environment, an env
 * file, defaults handed down by the supervisor). Each failure is an LmError whose message names
 * the key, the value and where that value came from, so a bad value is easy to find.
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { LmError } from '@lmserve/protocol';

/** The process environment, or a test's stand-in for it. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** One source of configuration values. */
export interface ConfigLayer {
  /** The layer's value of `key`; absent and empty both mean "not set here". */
  get(key: string): string | undefined;
  /** Where this layer's value of `key` lives, as messages name it: a file path, "environment variable X". */
  origin(key: string): string;
  /** The keys this layer holds, when all of them are meant as configuration (an env file, not the environment). */
  keys?(): Iterable<string>;
  /** The environment variable that holds `key` (environment layers only: a config lists what they set). */
  variable?(key: string): string;
}

/** The keys of an env file; every one of them is meant for us, so unknown ones are reported. */
export function fileLayer(file: string, vars: ReadonlyMap<string, string>): ConfigLayer {
  return { get: (key) => vars.get(key), origin: () => file, keys: () => vars.keys() };
}

/**
 * Variables `<prefix><KEY>` of the environment. The environment holds much else, so it never
 * contributes unknown keys.
 */
export function environmentLayer(env: Environment, prefix = ''): ConfigLayer {
  return {
    get: (key) => env[`${prefix}${key}`],
    origin: (key) => `environment variable ${prefix}${key}`,
    variable: (key) => `${prefix}${key}`,
  };
}

/** Fixed values (null: not set), all from one place, e.g. defaults the supervisor hands its workers. */
export function valuesLayer(values: Readonly<Record<string, string | null | undefined>>, origin: string): ConfigLayer {
  return { get: (key) => (Object.hasOwn(values, key) ? (values[key] ?? undefined) : undefined), origin: () => origin };
}

export class ConfigReader {
  /** Highest precedence first. */
  readonly #layers: readonly ConfigLayer[];
  /** Keys whose value came from the environment, with the variable's name. */
  readonly #fromEnvironment = new Map<string, string>();

  constructor(layers: readonly ConfigLayer[]) {
    this.#layers = layers;
  }

  /** The first layer that sets `key` (non-empty) and its value. */
  #lookup(key: string): { value: string; layer: ConfigLayer } | undefined {
    for (const layer of this.#layers) {
      const value = layer.get(key);
      if (value !== undefined && value !== '') {
        if (layer.variable) this.#fromEnvironment.set(key, layer.variable(key));
        return { value, layer };
      }
    }
    return undefined;
  }

  /** Where `key`'s value comes from; for an unset key, every place it could have been set. */
  origin(key: string): string {
    const found = this.#lookup(key);
    if (found) return found.layer.origin(key);
    return `not set in ${this.#layers.map((layer) => layer.origin(key)).join(' or ')}`;
  }

  /** `shown`: the value as the message may show it (a URL with its password masked). */
  fail(key: string, expected: string, shown?: (value: string) => string): never {
    const found = this.#lookup(key);
    const message = found
      ? `invalid ${key}="${shown ? shown(found.value) : found.value}" in ${found.layer.origin(key)}: ${expected}`
      : `invalid ${key} (${this.origin(key)}): ${expected}`;
    throw new LmError('INVALID_REQUEST', message, { field: key });
  }

  /** The value of the highest layer that sets `key`, or `fallback` when none does. */
  string(key: string, fallback: string): string {
    return this.#lookup(key)?.value ?? fallback;
  }

  int(key: string, fallback: number, min: number, max: number): number {
    const raw = this.#lookup(key)?.value;
    if (raw === undefined) return fallback;
    if (!/^-?\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      this.fail(key, `must be an integer from ${min} to ${max}`);
    }
    return Number(raw);
  }

  /** `auto` (any case; also when unset) or a whole number from min to max; else fails with `expected`. */
  autoOrInt(key: string, min: number, max: number, expected: string): 'auto' | number {
    const raw = this.string(key, 'auto').toLowerCase();
    if (raw === 'auto') return 'auto';
    if (!/^\d+$/.test(raw)) this.fail(key, expected);
    return this.int(key, 0, min, max);
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

  /** A comma-separated list of URLs (a NATS cluster's seed servers); null when unset. */
  urlList(key: string, protocols: readonly string[]): string | null {
    const raw = this.string(key, '');
    if (raw === '') return null;
    const parts = raw.split(',').map((part) => part.trim());
    for (const part of parts) {
      let parsed: URL | undefined;
      try {
        parsed = new URL(part);
      } catch {
        parsed = undefined;
      }
      if (!parsed || !protocols.includes(parsed.protocol) || parsed.hostname === '') {
        const each = parts.length > 1 ? ' (each of the comma-separated servers)' : '';
        this.fail(key, `must be a ${protocols.join(' or ')} URL${each}`, maskUrlCredentials);
      }
    }
    return parts.join(',');
  }

  /** A path (resolved against `base`) to a file that exists now; null when unset. */
  existingFile(key: string, base: string): string | null {
    const raw = this.string(key, '');
    if (raw === '') return null;
    const path = resolve(base, raw);
    let isFile = false;
    try {
      isFile = statSync(path).isFile();
    } catch {
      isFile = false;
    }
    if (!isFile) this.fail(key, `no such file: ${path}`);
    return path;
  }

  matching(key: string, fallback: string, pattern: RegExp, expected: string): string {
    const raw = this.string(key, fallback);
    if (!pattern.test(raw)) this.fail(key, expected);
    return raw;
  }

  /** Keys present in the env file layers that `known` does not list (likely typos). */
  unknownKeys(known: readonly string[]): string[] {
    const keys = new Set<string>();
    for (const layer of this.#layers) for (const key of layer.keys?.() ?? []) keys.add(key);
    return [...keys].filter((key) => !known.includes(key));
  }

  /** The environment variables whose values were used so far (to log what overrode the files). */
  environmentOverrides(): string[] {
    return [...this.#fromEnvironment.values()];
  }
}

/** Credentials in URLs (`nats://user:pass@host`, `nats://token@host`) replaced by `***`, for messages. */
export function maskUrlCredentials(text: string): string {
  return text.replace(/(\/\/)[^/@,\s]*@/g, '$1***@');
}
