/** Wire shapes of the supervisor's admin REST (/admin), shared by the server and the CLI. */
import type { WorkerState } from './messages.js';

export interface WorkerInfo {
  name: string;
  model: string;
  state: WorkerState;
  /** Why the worker is not serving (config error, load failure with the host's last stderr lines). */
  reason: string | null;
  config_file: string;
  pid: number | null;
  address: string | null;
  port: number | null;
  slots: { busy: number; total: number };
  queue: number;
  in_flight: number;
  /** Seconds since the current host became ready; null when not ready. */
  uptime_s: number | null;
  restarts: number;
  requests: { done: number; cancelled: number; failed: number };
  /**
   * Each transport's state for this worker, by transport name (`nats`: connected, server, subject,
   * queue; `jobs`: connected, pending); a transport that reports nothing (HTTP) is absent.
   */
  transports: Record<string, { connected: boolean; [key: string]: unknown }>;
}

export interface SupervisorStatus {
  pid: number;
  uptime_s: number;
  gateway: string;
  envs_dir: string;
  workers: Array<Pick<WorkerInfo, 'name' | 'state' | 'port'>>;
}
