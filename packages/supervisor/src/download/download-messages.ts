/** What the download thread posts to the supervisor. */
import type { DownloadFailure, DownloadProgress, DownloadResult } from './model-download.js';

export type ThreadMessage =
  | { type: 'progress'; progress: DownloadProgress }
  | { type: 'retry'; attempt: number; delayMs: number; reason: string; code: DownloadFailure }
  | { type: 'waiting'; pid: number; host: string }
  | { type: 'done'; result: DownloadResult }
  | { type: 'failed'; code: DownloadFailure; message: string; permanent: boolean; details: Record<string, unknown> };
