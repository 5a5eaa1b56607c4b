/** What every transport needs from whatever serves a model: the model contract. */
import type { GenerateRequest, GenerationResult, WorkerState } from '@lmserve/protocol';

export interface Readiness {
  ready: boolean;
  state: WorkerState;
  reason: string | null;
  /** Seconds a client should wait before retrying while not ready. */
  retryAfterS: number;
}

/** Receives each batch of new text (one decode step) of a running generation. */
export type TokenSink = (text: string, ids: number[]) => void;

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
   * Runs one generation; `onTokens` gets each batch of new text as it is generated. Rejects
   * with an LmError; an aborted signal cancels the generation (it resolves as "cancelled").
   */
  complete(request: GenerateRequest, onTokens: TokenSink, signal: AbortSignal): Promise<GenerationResult>;
}
