export { ErrorStatus, LmError, errorCodeOf, isErrorCode, toLmError } from './errors.js';
export type { ErrorCode } from './errors.js';
export type {
  EngineStats,
  FinishReason,
  GenerationParams,
  GenerationResult,
  Timings,
  TokenAlternative,
  TokenChunk,
  TokenLogprob,
  Usage,
} from './generation.js';
export type {
  ChatMessage,
  ChatRole,
  GenerateInput,
  DirectTemplate,
  GenerateRequest,
  DeviceUsage,
  LoadReport,
  GenerationEvent,
  HostSpec,
  HostStats,
  PromptCacheStats,
  HostProcessStats,
  HostToReplica,
  HostToSupervisor,
  ModelSummary,
  NatsConnectionSettings,
  PromptTemplate,
  PublishTarget,
  ReplicaExit,
  ReplicaToHost,
  SupervisorToHost,
  WorkerState,
} from './messages.js';
export { LOOP_LAG_SAMPLE_MS } from './messages.js';
export { createLogger, isLogLevel } from './log.js';
export { envInteger } from './env-integer.js';
export { FrameDecoder, MAX_FRAME_BYTES, decodeFrame, encodeFrame } from './relay-frame.js';
export type { LogLevel, Logger } from './log.js';
export type { DownloadInfo, MemoryFitInfo, SupervisorStatus, WorkerInfo } from './admin.js';
