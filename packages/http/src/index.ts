export { createModelApp, bearerMatches, HTTP_TRANSPORT } from './model-app.js';
export type { ModelAppOptions } from './model-app.js';
export { HttpTransport } from './http-transport.js';
export { createAdminApp } from './admin-app.js';
export type { GatewayOptions } from './admin-app.js';
export { OLLAMA_API_VERSION } from './ollama/routes.js';
export { listen, closeServer } from './serve.js';
export { sendError } from './errors.js';
export type { AdminBackend, RecentQuery } from './admin-backend.js';
// Kept for configuration code that parsed addresses through this package.
export { parseListenAddress, formatAddress, isLoopback } from '@lmserve/core';
export type { ListenAddress } from '@lmserve/core';
