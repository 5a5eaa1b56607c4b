export { AuditStore, AUDIT_DEFAULTS } from './audit-store.js';
export type { AuditStoreOptions, AuditStoreStats } from './audit-store.js';
export { SCHEMA_VERSION } from './schema.js';
