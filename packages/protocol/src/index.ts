export { ErrorStatus, LmError, isErrorCode, toLmError } from './errors.js';
export type { ErrorCode } from './errors.js';
export type {
  EngineStats,
  FinishReason,
  GenerationParams,
  GenerationResult,
  Timings,
  TokenChunk,
  Usage,
} from './generation.js';
