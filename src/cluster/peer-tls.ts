/**
 * Encryption of peer connections (`--peer-tls`): after the cluster-key exchange of
 * peer-auth.ts, both sides run TLS 1.3 over the same socket, keyed by a pre-shared key derived
 * from the cluster key. No certificates: the key every node already holds is the credential,
 * and TLS's PSK mode with an (EC)DHE exchange gives each connection fresh keys (forward
 * secrecy) and AES-128-GCM on every byte after the handshake, so frames can be neither read
 * nor altered on the way.
 *
 * Each side's handshake proves the PSK again; a side that does not hold it fails the handshake
 * and the connection is closed like any unauthenticated one.
 */
import type { Socket } from 'node:net';
import { connect, TLSSocket, type TlsOptions } from 'node:tls';
import { awaitTlsHandshake } from '../common/tls-handshake.js';
import type { ClusterKey } from './peer-auth.js';

/** The PSK identity both sides name; the key is what matters, this only labels it. */
const pskIdentity = 'raftblock-peer';
const pskPurpose = 'raftblock peer tls psk v1';
/** TLS 1.3's AES-GCM suite with SHA-256, the hash a PSK of Node's callback is bound to. */
const cipherSuite = 'TLS_AES_128_GCM_SHA256';
export const tlsHandshakeTimeoutMs = 5000;

function common(key: ClusterKey): Pick<TlsOptions, 'minVersion' | 'maxVersion' | 'ciphers'> & { psk: Buffer } {
  return { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: cipherSuite, psk: key.derive(pskPurpose) };
}

/**
 * Runs TLS as the client on `socket` (connected, through the exchange with `tls` set, paused,
 * nothing buffered). Resolves with the TLS socket once the handshake completed.
 */
export function secureAsDialer(socket: Socket, key: ClusterKey, timeoutMs = tlsHandshakeTimeoutMs): Promise<TLSSocket> {
  const { psk, ...opts } = common(key);
  const tls = connect({ ...opts, socket, pskCallback: () => ({ psk, identity: pskIdentity }) });
  return awaitTlsHandshake(tls, socket, 'secureConnect', timeoutMs);
}

/** Runs TLS as the server on an accepted `socket`; like secureAsDialer. */
export function secureAsAcceptor(socket: Socket, key: ClusterKey, timeoutMs = tlsHandshakeTimeoutMs): Promise<TLSSocket> {
  const { psk, ...opts } = common(key);
  const tls = new TLSSocket(socket, {
    ...opts,
    isServer: true,
    // Refused (null) for any other identity: a peer of this project names only this one.
    pskCallback: (_sock: TLSSocket, identity: string) => (identity === pskIdentity ? psk : null),
  } as TlsOptions & { isServer: true });
  return awaitTlsHandshake(tls, socket, 'secure', timeoutMs);
}
