export { AuditStore, AUDIT_DEFAULTS } from './audit-store.js';
export type { AuditStoreOptions, AuditStoreStats } from './audit-store.js';
export { SCHEMA_VERSION } from './schema.js';
// The SQLite mechanics every file of the service shares (the grammar library uses them too).
export { RefusedFile, all, compileOnly, describeError, openVersioned, run, schemaVersion } from './versioned-sqlite.js';
export type { SchemaVersionTable, VersionedSchema } from './versioned-sqlite.js';
