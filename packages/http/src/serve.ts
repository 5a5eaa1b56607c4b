import { createServer, type Server } from 'node:http';
import type { Express } from 'express';
import type { ListenAddress } from '@lmserve/core';

/**
 * Listens with an express app. Generations can outlast Node's default request timeout (5 min),
 * so that timeout is off; idle keep-alive sockets still close.
 */
export function listen(app: Express, address: ListenAddress): Promise<Server> {
  const server = createServer(app);
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** Stops accepting connections and closes idle ones; resolves when every connection is gone. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
