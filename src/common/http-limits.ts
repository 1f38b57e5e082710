/**
 * Limits every HTTP port of a process takes (a node's admin and metrics port, export-file's
 * metrics port): a client that opens connections without end, or sends its request a byte at a
 * time, holds at most `maxHttpConnections` sockets for at most the timeouts below, so it cannot
 * take the file descriptors or the memory the storage needs, and operators and monitoring get
 * through again once it stops.
 */
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';

export const maxHttpConnections = 256;
/** A request's headers must arrive within this long of its first byte. */
export const httpHeadersTimeoutMs = 10_000;
/** A whole request (headers and body; not the answer) must arrive within this long. */
export const httpRequestTimeoutMs = 30_000;

export function limitHttpServer(server: HttpServer | HttpsServer): void {
  server.maxConnections = maxHttpConnections;
  server.headersTimeout = httpHeadersTimeoutMs;
  server.requestTimeout = httpRequestTimeoutMs;
}
