import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';
import type { ListenAddress } from '@lmserve/core';

/**
 * Listens with an express app. Generations can outlast Node's default request timeout (5 min),
 * so that timeout is off; idle keep-alive sockets still close (see `closeIdle`).
 */
export function listen(app: Express, address: ListenAddress): Promise<Server> {
  const server = createServer(app);
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5000;
  // server.timeout is 0, so a socket's timeout is the keep-alive one: the connection is idle.
  server.on('timeout', closeIdle);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/**
 * Closes an idle keep-alive connection with a FIN sent by this process (a shutdown), then its
 * descriptor. Node's own handling only closes the descriptor, and a connection whose stream a
 * model host wrote (a direct stream) has a second descriptor there until the host is told to
 * let go: no FIN would leave until then, and a request the client sent meanwhile would be
 * answered with a reset.
 */
function closeIdle(socket: Socket): void {
  if (socket.destroyed) return;
  const fallback = setTimeout(() => socket.destroy(), 2000);
  fallback.unref();
  socket.once('close', () => clearTimeout(fallback));
  if (socket.writableFinished) {
    socket.destroy();
  } else {
    socket.once('finish', () => socket.destroy());
    socket.end();
  }
}

/** Stops accepting connections and closes idle ones; resolves when every connection is gone. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
