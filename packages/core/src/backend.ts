/** What every transport needs from whatever serves a model: the model contract. */
import type { Socket } from 'node:net';
import type { DirectTemplate, DownloadInfo, GenerateRequest, GenerationResult, TokenLogprob, WorkerState } from '@lmserve/protocol';

export interface Readiness {
  ready: boolean;
  state: WorkerState;
  reason: string | null;
  /** Seconds a client should wait before retrying while not ready. */
  retryAfterS: number;
  /** The model file's download (state `downloading`, or the one that failed); absent: none. */
  download?: DownloadInfo | null;
}

/**
 * Receives each batch of new text (one decode step) of a running generation, with one
 * log-probability entry per token when the request asked for them (params.logprobs >= 0).
 */
export type TokenSink = (text: string, ids: number[], logprobs?: TokenLogprob[]) => void;

/**
 * A streamed HTTP response that the process running the model may write itself, so tokens
 * skip this process: the client's connection and the template of one token chunk. `begin()`
 * sends what must come before the tokens (the headers, a first chunk) and resolves once it has
 * left this process; false: the response cannot be handed over (then the TokenSink gets the
 * tokens as usual). A backend that cannot use it ignores it.
 */
export interface DirectStream {
  socket: Socket;
  template: DirectTemplate;
  begin(): Promise<boolean>;
}

export interface ModelBackend {
  /** Worker name (envs/worker.<name>.env). */
  readonly name: string;
  /** Model name reported to clients (MODEL_NAME). */
  readonly model: string;
  /** When set, clients must present it (HTTP: `Authorization: Bearer <API_KEY>`). */
  readonly apiKey: string | null;
  /** Pid of the process that runs the model now (null while none runs). */
  readonly hostPid: number | null;
  readiness(): Readiness;
  /**
   * Runs one generation; `onTokens` gets each batch of new text as it is generated (null: the
   * caller wants only the result, so no per-step events need to be produced or relayed). Rejects
   * with an LmError; an aborted signal cancels the generation (it resolves as "cancelled").
   * With `direct` (and `onTokens`), the backend may write the tokens to the client itself.
   */
  complete(request: GenerateRequest, onTokens: TokenSink | null, signal: AbortSignal, direct?: DirectStream): Promise<GenerationResult>;
}

/** A grammar of the library, as a request uses it. */
export interface LibraryGrammar {
  content: string;
  root: string;
}

/** Names to grammars (the service's grammar library). Synchronous: the library is in memory. */
export interface GrammarResolver {
  resolve(name: string): LibraryGrammar | null;
}

/** `params.grammar` is inline GBNF when it holds a rule (`::=`), else the name of a library grammar. */
export function isInlineGrammar(grammar: string): boolean {
  return grammar.includes('::=');
}

/** A grammar of the library as the API shows it. */
export interface StoredGrammar {
  name: string;
  description: string;
  /** Absent in lists unless asked for. */
  content?: string;
  root: string;
  version: number;
  builtin: boolean;
  created_at: string;
  updated_at: string;
}

export interface GrammarPage {
  grammars: StoredGrammar[];
  total: number;
  offset: number;
  limit: number;
}

/**
 * The grammar library as transports serve it (CRUD). Bodies are validated by the library, so
 * every transport refuses the same things with the same codes and fields.
 */
export interface GrammarLibraryApi extends GrammarResolver {
  list(query: { offset: number; limit: number; withContent: boolean }): GrammarPage;
  /** Throws LmError NOT_FOUND. */
  get(name: string): StoredGrammar;
  create(body: unknown): Promise<StoredGrammar>;
  update(name: string, body: unknown): Promise<StoredGrammar>;
  delete(name: string): Promise<void>;
}
