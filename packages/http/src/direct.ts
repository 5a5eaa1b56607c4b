/**
 * Direct streams: a streamed response whose token chunks the model host writes to the client's
 * connection itself (DirectStream in @lmserve/core), so a token costs no wake-up of this process.
 *
 * Each route keeps one formatter for its token events. The template the host fills in is cut
 * out of that formatter's own output for a marker text and a marker token id, so the bytes the
 * host writes are the ones the route would have written (field order, escaping, framing).
 */
import type { Response } from 'express';
import type { DirectStream } from '@lmserve/core';
import type { DirectTemplate } from '@lmserve/protocol';

const MARK_TEXT = '\u0001lmserve-direct-text\u0001';
const MARK_ID = 987654321987;

/**
 * The template of `format` (one token event's bytes for a text and its token ids), or null when
 * its output does not have the text (and, with `withTokens`, the ids after it) exactly once.
 */
export function directTemplate(format: (text: string, ids: number[]) => string, options: { withTokens: boolean; skipEmpty: boolean }): DirectTemplate | null {
  const sample = format(MARK_TEXT, [MARK_ID]);
  const quoted = JSON.stringify(MARK_TEXT);
  const at = sample.indexOf(quoted);
  if (at < 0 || sample.indexOf(quoted, at + 1) >= 0) return null;
  const prefix = sample.slice(0, at);
  const rest = sample.slice(at + quoted.length);
  const id = String(MARK_ID);
  const k = rest.indexOf(id);
  if (prefix.includes(id)) return null;
  if (!options.withTokens) return k < 0 ? { prefix, afterText: rest, skipEmpty: options.skipEmpty } : null;
  if (k < 0 || rest.indexOf(id, k + 1) >= 0) return null;
  return { prefix, afterText: rest.slice(0, k), afterTokens: rest.slice(k + id.length), skipEmpty: options.skipEmpty };
}

/** How long begin() waits for the headers to leave this process before giving up. */
const BEGIN_LIMIT_MS = 1000;

/**
 * A DirectStream on an express response: `start()` sends the headers (and whatever must precede
 * the tokens). The response must use chunked transfer encoding (HTTP/1.1), which the host's
 * chunks continue; anything else (HTTP/1.0, a finished or broken response) is not handed over.
 */
export function directStream(res: Response, template: DirectTemplate | null, start: () => void): DirectStream | undefined {
  const socket = res.socket;
  // Plain TCP only: the host writes bytes as they are, which a TLS connection must not get.
  if (!template || !socket || process.platform === 'win32' || (socket as { encrypted?: boolean }).encrypted) return undefined;
  return {
    socket,
    template,
    async begin() {
      if (socket.destroyed || res.writableEnded || res.req.httpVersion !== '1.1') return false;
      start();
      if ((res as unknown as { chunkedEncoding?: boolean }).chunkedEncoding !== true) return false;
      // Written bytes may still be corked or queued: wait until the kernel has them. The response
      // corks its socket for the rest of the tick (uncorked by a process.nextTick callback queued
      // with the write), so one tick later they have normally left: a tick, not a turn of the
      // event loop (setImmediate), which under load is milliseconds of other requests' I/O.
      const deadline = performance.now() + BEGIN_LIMIT_MS;
      await new Promise((resolve) => process.nextTick(resolve));
      while (!socket.destroyed && socket.writableLength > 0 && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      if (socket.destroyed) return false;
      return socket.writableLength === 0;
    },
  };
}
