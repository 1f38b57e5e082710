/**
 * TLS for NBD clients, keyed by pre-shared keys: the PSK file format of GnuTLS's `psktool`,
 * which nbdkit, qemu (`tls-creds-psk`) and libnbd (`tls-psk-file=`) read too, one
 * `username:hexkey` per line. A client names its username in the TLS handshake and proves the
 * key that goes with it; there are no certificates to issue.
 *
 * The server runs FORCEDTLS (handshake.ts): a client must send NBD_OPT_STARTTLS before any
 * other option, and everything after it, the export's name included, travels encrypted.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { TLSSocket, type TLSSocketOptions } from 'node:tls';
import { InvalidArgument } from '../common/errors.js';
import { awaitTlsHandshake } from '../common/tls-handshake.js';

/** PSK keys shorter than this are refused (a typo, a test value left in place). */
export const minPskBytes = 16;
export const nbdTlsHandshakeTimeoutMs = 10_000;

/**
 * TLS 1.3 suites, then for TLS 1.2 clients the PSK suite with an ephemeral key exchange, then
 * plain PSK ones. All AEAD.
 */
const ciphers = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
].join(':');

/** The users a PSK file names, each with its key. */
export class PskKeys {
  private constructor(private readonly keys: ReadonlyMap<string, Buffer>) {}

  static fromFile(path: string): PskKeys {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new InvalidArgument(`cannot read the PSK file ${path}: ${(err as Error).message}`);
    }
    return PskKeys.parse(text, path);
  }

  /** `username:hexkey` lines; blank lines and lines starting with # are skipped. */
  static parse(text: string, what = 'the PSK file'): PskKeys {
    const keys = new Map<string, Buffer>();
    const lines = text.split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line === '' || line.startsWith('#')) continue;
      const colon = line.lastIndexOf(':');
      const user = line.slice(0, colon);
      const hex = line.slice(colon + 1);
      if (colon <= 0 || !/^[0-9a-fA-F]+$/.test(hex) || hex.length % 2 !== 0) {
        throw new InvalidArgument(`${what}, line ${i + 1}: expected username:hexkey`);
      }
      if (hex.length / 2 < minPskBytes) throw new InvalidArgument(`${what}, line ${i + 1}: the key of ${user} holds ${hex.length / 2} bytes; at least ${minPskBytes} are needed`);
      if (keys.has(user)) throw new InvalidArgument(`${what}, line ${i + 1}: user ${user} is named twice`);
      keys.set(user, Buffer.from(hex, 'hex'));
    }
    if (keys.size === 0) throw new InvalidArgument(`${what} names no user`);
    return new PskKeys(keys);
  }

  keyOf(user: string): Buffer | undefined {
    return this.keys.get(user);
  }
}

/**
 * Runs the server side of TLS on `socket` (an NBD connection that just acknowledged
 * NBD_OPT_STARTTLS; nothing of the client's handshake read yet). Resolves with the TLS socket
 * and the client's username once the handshake completed; rejects (and destroys the socket)
 * on a failed handshake, an unknown user or a wrong key.
 */
export function startTlsAsServer(socket: Socket, keys: PskKeys, timeoutMs = nbdTlsHandshakeTimeoutMs): Promise<{ tls: TLSSocket; user: string }> {
  let user = '';
  const tls = new TLSSocket(socket, {
    isServer: true,
    minVersion: 'TLSv1.2',
    ciphers,
    pskCallback: (_tls: TLSSocket, identity: string) => {
      const key = keys.keyOf(identity);
      if (key) user = identity;
      return key ?? null;
    },
    // pskCallback is a server option of TLSSocket too, though its type lists it for servers only.
  } as TLSSocketOptions);
  return awaitTlsHandshake(tls, socket, 'secure', timeoutMs).then(() => ({ tls, user }));
}
