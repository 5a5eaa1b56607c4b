export type {
  GrammarLibraryApi,
  GrammarPage,
  GrammarResolver,
  LibraryGrammar,
  ModelBackend,
  Readiness,
  StoredGrammar,
  DirectStream,
  TokenSink,
} from './backend.js';
export { isInlineGrammar } from './backend.js';
export { RequestPath, ActiveRequest, capMaxTokens, checkRequestLimits } from './request-path.js';
export type { RequestLimits, RequestPathOptions, RunRequest } from './request-path.js';
export { ServiceObserver, RecentLog, MAX_INTER_TOKEN_SAMPLES } from './observer.js';
export type { EventCode, EventListener, RequestEnd, RequestListener, RequestStatus, ServiceEvent } from './observer.js';
export { newRequestId, transportOf, isTransportName } from './request-id.js';
export type { JobsSettings, MetricsSource, Transport, TransportEndpoint, TransportSettings, TransportStatus, TransportWorker } from './transport.js';
export {
  PARAMETERS,
  MAX_GRAMMAR_BYTES,
  MAX_JSON_SCHEMA_BYTES,
  MAX_STOP_LENGTH,
  MAX_STOP_STRINGS,
  paramsSchema,
  parseParams,
  parameterNames,
  parameterTableMarkdown,
  toGenerationParams,
  zodError,
} from './params.js';
export type { ParamDialect, ParamSpec, ParamType } from './params.js';
export { completionBody } from './completion-body.js';
export type { CompletionBody } from './completion-body.js';
export { parseGenerateBody, parseInput, checkParams, inputLength, MAX_INPUT_CHARS, MAX_MESSAGES } from './generate-body.js';
export type { ParsedGenerate } from './generate-body.js';
export { checkGrammarText, MAX_GRAMMAR_DEPTH, MAX_GRAMMAR_REPEAT } from './grammar-guard.js';
export { parseListenAddress, formatAddress, isLoopback } from './address.js';
export type { ListenAddress } from './address.js';
export type { EventQuery, EventRow, RequestQuery, RequestRow, WorkerRecords } from './records.js';
export { parseRequestQuery, parseEventQuery, MAX_RECORDS_PER_READ } from './record-query.js';
export { baseModelName, findModel, modelNameMatches } from './model-directory.js';
export type { ModelDirectory } from './model-directory.js';
