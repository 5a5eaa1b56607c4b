/** What the HTTP layer needs from whatever serves a model or administers workers. */
import type {
  FinishReason,
  GenerationParams,
  SupervisorStatus,
  Timings,
  Usage,
  WorkerInfo,
  WorkerState,
} from '@lmserve/protocol';

export interface Readiness {
  ready: boolean;
  state: WorkerState;
  reason: string | null;
  /** Seconds a client should wait before retrying while not ready. */
  retryAfterS: number;
}

export interface CompletionRequest {
  /** Request id, unique on this model while in flight. */
  id: string;
  input: string;
  params: GenerationParams;
  raw: boolean;
}

export interface CompletionResult {
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
}

export interface ModelBackend {
  /** Model name reported to clients. */
  readonly model: string;
  /** When set, /v1 requests need `Authorization: Bearer <apiKey>`. */
  readonly apiKey: string | null;
  readiness(): Readiness;
  /**
   * Runs one completion; `onTokens` gets each batch of new text as it is generated. Rejects
   * with an LmError; an aborted signal cancels the generation (it resolves as "cancelled").
   */
  complete(request: CompletionRequest, onTokens: (text: string, ids: number[]) => void, signal: AbortSignal): Promise<CompletionResult>;
}

export interface AdminBackend {
  status(): SupervisorStatus;
  listWorkers(): WorkerInfo[];
  /** Each rejects with LmError NOT_FOUND for an unknown worker name. */
  startWorker(name: string): Promise<WorkerInfo>;
  stopWorker(name: string): Promise<WorkerInfo>;
  restartWorker(name: string): Promise<WorkerInfo>;
  /** Stops the supervisor (after the response is sent). */
  shutdown(): void;
}
