/** The tests' nats-server: scripts/lib/nats-server.ts (shared with the benchmark's NATS row). */
export { NatsServer, natsServerAvailable, natsServerBinary, type NatsServerOptions } from '../../scripts/lib/nats-server.js';
