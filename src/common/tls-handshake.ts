/**
 * Waiting for a TLS handshake on a socket that TLS took over (peer connections, NBD's
 * STARTTLS): resolves once it completed; on failure, a close or the timeout, destroys both the
 * TLS socket and the raw one under it and rejects with Unauthenticated.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Unauthenticated } from './errors.js';

/** `done`: 'secure' for the server side of a TLSSocket, 'secureConnect' for a client's. */
export function awaitTlsHandshake(tls: TLSSocket, raw: Socket, done: 'secure' | 'secureConnect', timeoutMs: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const finish = (err: Error | undefined): void => {
      clearTimeout(timer);
      tls.off(done, onDone);
      tls.off('error', onError);
      tls.off('close', onClose);
      if (err) {
        tls.destroy();
        raw.destroy();
        reject(err);
      } else resolve(tls);
    };
    const onDone = (): void => finish(undefined);
    const onError = (err: Error): void => finish(new Unauthenticated(`the TLS handshake failed: ${err.message}`));
    const onClose = (): void => finish(new Unauthenticated('the connection closed during the TLS handshake'));
    const timer = setTimeout(() => finish(new Unauthenticated(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    tls.once(done, onDone);
    tls.on('error', onError);
    tls.once('close', onClose);
  });
}
