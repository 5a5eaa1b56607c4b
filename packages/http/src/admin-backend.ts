/** What the admin REST needs from the supervisor. */
import type { GrammarLibraryApi, MetricsSource, ModelDirectory, RequestEnd, ServiceEvent } from '@lmserve/core';
import type { SupervisorStatus, WorkerInfo } from '@lmserve/protocol';

export interface RecentQuery {
  /** Only entries with a sequence number above this one. */
  since: number;
  worker: string | null;
  limit: number;
}

/** The gateway's view of the supervisor: admin actions, and every model's RequestPath (`models()`) for the OpenAI and Ollama routes. */
export interface AdminBackend extends ModelDirectory {
  status(): SupervisorStatus;
  listWorkers(): WorkerInfo[];
  /**
   * Each rejects with LmError NOT_FOUND for an unknown worker name, and CONFLICT while another
   * admin action runs on that worker (the same action joins the one in progress).
   */
  startWorker(name: string): Promise<WorkerInfo>;
  stopWorker(name: string): Promise<WorkerInfo>;
  restartWorker(name: string): Promise<WorkerInfo>;
  /** The supervisor's recent lifecycle events and request ends (oldest first). */
  recentEvents(query: RecentQuery): Array<{ seq: number; event: ServiceEvent }>;
  recentRequests(query: RecentQuery): Array<{ seq: number; request: RequestEnd }>;
  /** Every model's metrics and the supervisor's (GET /metrics on the gateway); null when METRICS=off. */
  metrics(): MetricsSource | null;
  /** The service's grammar library (/grammars on the gateway, behind the admin token); null while not open. */
  grammars(): GrammarLibraryApi | null;
  /** Stops the supervisor (after the response is sent). */
  shutdown(): void;
}
