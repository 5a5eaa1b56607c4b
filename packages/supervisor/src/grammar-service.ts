/**
 * The service's one grammar library (GRAMMARS_DB), opened by the supervisor and served by every
 * transport. Grammars are checked by llama.cpp's own parser in a checker process (the
 * supervisor never loads the addon), against the vocabulary of the first model file it finds:
 * CRUD keeps working while no model is ready.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { GrammarLibraryApi } from '@lmserve/core';
import { GrammarLibrary, parseGrammarBody } from '@lmserve/grammars';
import { GrammarChecker } from '@lmserve/host';
import { LmError, type Logger } from '@lmserve/protocol';

/** A model file whose vocabulary the checker loads: a worker's, else one the setup generated. */
export function checkerModelPath(root: string, dataDir: string, workerModels: readonly string[]): string | null {
  const candidates = [...workerModels, join(dataDir, 'models', 'demo', 'model.gguf'), join(root, 'data', 'models', 'tiny', 'model.gguf')];
  return candidates.find((path) => existsSync(path)) ?? null;
}

export class GrammarService {
  readonly library: GrammarLibrary;
  readonly #checker: GrammarChecker | null;

  private constructor(library: GrammarLibrary, checker: GrammarChecker | null) {
    this.library = library;
    this.#checker = checker;
  }

  static async open(options: { path: string; modelPath: string | null; log: Logger }): Promise<GrammarService> {
    const checker = options.modelPath ? new GrammarChecker({ modelPath: options.modelPath, log: options.log }) : null;
    const check = async (content: string, root: string) => {
      if (!checker) throw new LmError('STORE_UNAVAILABLE', 'no model file to check grammars against (set a worker MODEL_PATH)');
      return checker.check(content, root);
    };
    try {
      return new GrammarService(await GrammarLibrary.open({ path: options.path, check, log: options.log }), checker);
    } catch (err) {
      checker?.close();
      throw err;
    }
  }

  /** The library as transports serve it. */
  api(): GrammarLibraryApi {
    const lib = this.library;
    return {
      resolve: (name) => {
        if (!lib.has(name)) return null;
        const { content, root } = lib.get(name);
        return { content, root };
      },
      list: (query) => lib.list({ offset: query.offset, limit: query.limit, withContent: query.withContent }),
      get: (name) => lib.get(name),
      create: (body) => lib.create(parseGrammarBody(body, { partial: false })),
      update: (name, body) => lib.update(name, parseGrammarBody(body, { partial: true, name })),
      delete: async (name) => {
        await lib.delete(name);
      },
    };
  }

  async close(): Promise<void> {
    this.#checker?.close();
    await this.library.close();
  }
}
