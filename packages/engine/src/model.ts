import { stat } from 'node:fs/promises';
import { LmError, type GenerationParams } from '@lmserve/protocol';
import { binding, type GrammarReport, type NativeModel, type NativeModelInfo } from './binding.js';
import { Engine, type EngineOptions, type SubmitRequest, type TemplatedPrompt } from './engine.js';
import { nativeError } from './errors.js';
import { Generation } from './generation.js';

export type ModelInfo = NativeModelInfo & { path: string };

export interface LoadOptions {
  /** Layers to offload to the GPU: 'auto' or a negative number is llama.cpp's default (all); 0 = CPU only. */
  gpuLayers?: number | 'auto';
  /** Layers per GPU device (measureModel's fit); empty: llama.cpp's default split. */
  tensorSplit?: number[];
  /** Tensor-name patterns kept in host memory (measureModel's fit). */
  cpuTensors?: string[];
  /** Map the file instead of reading it (default true). */
  useMmap?: boolean;
  /** Called with 0..1 while the weights load (on the JS thread, throttled to 1% steps). */
  onProgress?: (progress: number) => void;
  /** Aborts the load; the promise rejects with LOAD_ABORTED. */
  signal?: AbortSignal;
  /**
   * Load only the vocabulary, no weights (llama.cpp's vocab_only): tokenize, detokenize, info
   * and checkGrammar work; createEngine and generate fail with INVALID_REQUEST. For a process
   * that checks untrusted grammars without the model's memory.
   */
  vocabOnly?: boolean;
}

export interface ChatMessage {
  role: string;
  content: string;
}

/** Options of the engine behind Model.generate() (one sequence, created on first use). */
export interface GenerateOptions {
  signal?: AbortSignal;
  contextSize?: number;
  threads?: number;
}

/**
 * Loads a GGUF model off the JS thread. Loading the same file twice in one process shares the
 * weights (the native side reference-counts them).
 */
export async function loadModel(path: string, options: LoadOptions = {}): Promise<Model> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new LmError('INVALID_REQUEST', 'path must be a non-empty string', { field: 'path' });
  }
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new LmError('MODEL_FILE_NOT_FOUND', `model file not found: ${path}`);
  if (!st.isFile()) throw new LmError('MODEL_FILE_NOT_FOUND', `model path is not a file: ${path}`);
  if (options.signal?.aborted) throw new LmError('LOAD_ABORTED', `model load aborted: ${path}`);
  const asked = options.gpuLayers === undefined || options.gpuLayers === 'auto' ? -1 : options.gpuLayers;
  const gpuLayers = typeof asked === 'number' && asked < 0 ? -1 : asked;
  if (!Number.isInteger(gpuLayers)) {
    throw new LmError('INVALID_REQUEST', "options.gpuLayers must be an integer or 'auto'", { field: 'options.gpuLayers' });
  }
  // Progress calls are queued from the loading thread and may land after the load settles:
  // drop those, and end with exactly one 1.0.
  let settled = false;
  let last = -1;
  const report = (p: number) => {
    if (settled || p <= last) return;
    last = p;
    options.onProgress?.(p);
  };
  if (options.vocabOnly !== undefined && typeof options.vocabOnly !== 'boolean') {
    throw new LmError('INVALID_REQUEST', 'options.vocabOnly must be a boolean', { field: 'options.vocabOnly' });
  }
  const loader = new (binding().ModelLoader)(
    path,
    {
      gpuLayers,
      useMmap: options.useMmap ?? true,
      vocabOnly: options.vocabOnly ?? false,
      ...(options.tensorSplit?.length ? { tensorSplit: options.tensorSplit } : {}),
      ...(options.cpuTensors?.length ? { cpuTensors: options.cpuTensors } : {}),
    },
    options.onProgress ? report : undefined,
  );
  const onAbort = () => loader.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const native = await loader.load();
    report(1);
    settled = true;
    return new Model(native, path);
  } catch (err) {
    settled = true;
    throw nativeError(err);
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

export class Model {
  readonly path: string;
  readonly info: ModelInfo;
  readonly #native: NativeModel;
  readonly #engines = new Set<Engine>();
  #defaultEngine: Promise<Engine> | undefined;
  #disposed = false;

  /** @internal Use loadModel(). */
  constructor(native: NativeModel, path: string) {
    this.#native = native;
    this.path = path;
    this.info = { ...native.info(), path };
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): number[] {
    this.#check();
    if (typeof text !== 'string') throw new LmError('INVALID_REQUEST', 'text must be a string', { field: 'text' });
    try {
      return Array.from(this.#native.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false));
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
  }

  detokenize(tokens: readonly number[] | Int32Array, options: { special?: boolean } = {}): string {
    this.#check();
    const arr = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    try {
      return this.#native.detokenize(arr, options.special ?? false);
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
  }

  /** Renders messages with the model's chat template (or `template`), via llama.cpp's built-in matcher. */
  /**
   * Whether `text` holds a control token's text (e.g. `</s>`, `<|im_end|>`): what parse_special
   * would turn into that token.
   */
  hasControlText(text: string): boolean {
    this.#check();
    if (typeof text !== 'string') throw new LmError('INVALID_REQUEST', 'text must be a string', { field: 'text' });
    return this.#native.hasControlText(text);
  }

  /** The tokens a templated prompt in parts is submitted as (engine.ts TemplatedPrompt). */
  tokenizePrompt(prompt: TemplatedPrompt): number[] {
    this.#check();
    try {
      return Array.from(this.#native.tokenizePrompt([...prompt.parts]));
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
  }

  applyChatTemplate(messages: ChatMessage[], options: { addAssistant?: boolean; template?: string } = {}): string {
    this.#check();
    try {
      return this.#native.applyChatTemplate(messages, options.addAssistant ?? true, options.template);
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
  }

  /**
   * null when the GBNF grammar can be used for generation, else why not: the parser's message
   * with where it stopped (`expecting name at line 2, column 9: \`| x\``), a rule used but not
   * defined, a missing root rule (`the root rule 'root' is not defined ...`), left recursion, or
   * a grammar too wide to sample from (see inspectGrammar). Parsed with llama.cpp's own parser;
   * nothing is printed to stderr, so no redirection is needed in any process.
   */
  checkGrammar(grammar: string, root = 'root'): string | null {
    this.#check();
    if (typeof grammar !== 'string') throw new LmError('INVALID_REQUEST', 'grammar must be a string', { field: 'grammar' });
    try {
      return binding().checkGrammar(this.#native, grammar, root);
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
  }

  /**
   * checkGrammar's verdict with the grammar's size and width. The width of a rule is how many
   * parser stacks it can open at one point (`root ::= "a" | "b" | "c"`: 3; a rule referenced at
   * the start of an alternative counts with its own alternatives). Each token sampled under the
   * grammar may cost vocabulary size × width checks, so grammars wider than `maxWidth` (default
   * 1024, env LMSERVE_GRAMMAR_MAX_WIDTH; 0 lifts it) are refused with INVALID_GRAMMAR.
   */
  inspectGrammar(grammar: string, root = 'root'): GrammarReport {
    this.#check();
    if (typeof grammar !== 'string') throw new LmError('INVALID_REQUEST', 'grammar must be a string', { field: 'grammar' });
    try {
      return binding().inspectGrammar(this.#native, grammar, root);
    } catch (err) {
      throw nativeError(err, 'INVALID_REQUEST');
    }
  }

  /** Creates a continuous-batching engine (its own llama_context) over this model. */
  async createEngine(options: EngineOptions = {}): Promise<Engine> {
    this.#check();
    let engine: Engine | undefined;
    engine = await Engine.create(this.#native, options, () => {
      if (engine) this.#engines.delete(engine);
    });
    // dispose() may have run while the context was being created: it could not see this
    // engine, so it would hold a context (and keep the weights) that nothing frees.
    if (this.#disposed) {
      engine.dispose();
      throw new LmError('DISPOSED', 'the model was disposed while the engine was being created');
    }
    this.#engines.add(engine);
    return engine;
  }

  /**
   * Single-sequence generation: streams token chunks; `result` holds the final text, finish
   * reason, usage and timings. Calls share one lazily created one-slot engine and run in turn.
   */
  generate(prompt: SubmitRequest['prompt'], params: GenerationParams = {}, options: GenerateOptions = {}): Generation {
    this.#check();
    const generation = new Generation(options.signal);
    if (!this.#defaultEngine) {
      const contextSize = options.contextSize ?? Math.min(this.info.trainedContextLength || 4096, 4096);
      const engineOptions: EngineOptions = { slots: 1, contextSize, maxQueue: 1024 };
      if (options.threads !== undefined) engineOptions.threads = options.threads;
      this.#defaultEngine = this.createEngine(engineOptions);
      this.#defaultEngine.catch(() => (this.#defaultEngine = undefined));
    }
    this.#defaultEngine.then(
      (engine) => {
        try {
          const request: SubmitRequest = { prompt, params };
          engine.submitInto(generation, request);
        } catch (err) {
          generation.fail(nativeError(err));
        }
      },
      (err: unknown) => generation.fail(nativeError(err)),
    );
    return generation;
  }

  /** Disposes the model's engines and releases its weights (once no other thread uses them). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const engine of [...this.#engines]) engine.dispose();
    this.#engines.clear();
    this.#defaultEngine = undefined;
    this.#native.dispose();
  }

  #check(): void {
    if (this.#disposed) throw new LmError('DISPOSED', 'the model has been disposed');
  }
}
