/**
 * Peer authentication: with a cluster key configured (`--cluster-key-file`), every peer
 * connection starts with a challenge-response on the raw socket, before the first frame:
 *
 *   dialer   → acceptor   hello:   magic "RBPA" | version 1 | flags (1) | key id (4) | 6 zero bytes | nonce_d (16)
 *   acceptor → dialer     proof:   nonce_a (16) | HMAC-SHA256(key, "raftblock acceptor" | nonce_d | nonce_a)
 *   dialer   → acceptor   proof:   HMAC-SHA256(key, "raftblock dialer" | nonce_a | nonce_d)
 *   acceptor → dialer     go (1):  0x01, only with TLS (flag bit 0), after which TLS starts (peer-tls.ts)
 *
 * Each side proves the key over a nonce the other just chose, so a recorded exchange cannot
 * be replayed, and the role labels keep one side's proof from being reflected as the
 * other's. The dialer sends nothing of its own (no frame, no queued request) before the
 * acceptor has proved the key: an impostor at a peer's address learns nothing. The acceptor
 * reads no frame before the dialer's proof. Frames then flow as without a key: this
 * authenticates who may connect, it does not encrypt or sign the traffic. With `--peer-tls`
 * both sides then run TLS 1.3 keyed by the same cluster key (peer-tls.ts), which does.
 *
 * Key rotation: a node holds one key it proves (its first `--cluster-key-file`) and may accept
 * others (the further ones). The dialer names its key by id in the hello; the acceptor proves
 * that key if it holds it, else its own, and the dialer takes the acceptor's proof for any key
 * it holds; both then use the key the acceptor proved. So two nodes talk while they share a
 * key, whichever each proves, and a cluster moves to a new key by rolling restarts: every node
 * accepts the new key, then proves it, then drops the old one. A hello from a node that names
 * no key id (zeros) is answered with the acceptor's own key.
 *
 * The TLS flag in the hello only makes a mismatch a clear refusal: each side holds to its own
 * setting (a TLS node never takes frames in the clear), so flipping the bit on the way cannot
 * downgrade a connection. The go byte keeps the TLS handshake's first bytes out of the raw
 * socket's buffer before TLS takes the socket over: neither side sends a byte of TLS before
 * the other is ready to read it through TLS.
 *
 * A node without a key speaking to one with a key fails closed either way: its first frame is
 * no hello (refused), and a hello read as a frame announces an impossible length (refused).
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { InvalidArgument, Unauthenticated } from '../common/errors.js';
import { readSecretFile } from '../common/secret-file.js';

const magic = Buffer.from('RBPA\x01', 'latin1');
const flagsOffset = magic.length;
const keyIdOffset = flagsOffset + 1;
const keyIdBytes = 4;
const noKeyId = Buffer.alloc(keyIdBytes);
const flagTls = 0x01;
const goByte = 0x01;
const helloBytes = 32;
const nonceBytes = 16;
const macBytes = 32;
/** Key material below this many bytes is refused (a typo, an empty file). */
export const minKeyBytes = 16;
/** A side that has not sent its part of the exchange by then is dropped. */
export const authTimeoutMs = 5000;

/** The cluster's pre-shared key. */
export class ClusterKey {
  /** Names the key in a hello without revealing it (an HMAC of a fixed label, cut short). */
  readonly id: Buffer;

  private constructor(private readonly key: Buffer) {
    this.id = createHmac('sha256', key).update('raftblock key id').digest().subarray(0, keyIdBytes);
  }

  /**
   * Reads a key file: its bytes, less trailing line ends (so a key written as hex or base64
   * text with `echo` matches the same text written without a newline). Every node of a
   * cluster reads a copy of the same file.
   */
  static fromFile(path: string): ClusterKey {
    return new ClusterKey(Buffer.from(readSecretFile(path, 'cluster key', minKeyBytes)));
  }

  static fromBytes(bytes: Uint8Array, what = 'the cluster key'): ClusterKey {
    if (bytes.length < minKeyBytes) throw new InvalidArgument(`${what} holds ${bytes.length} bytes; a cluster key needs at least ${minKeyBytes}`);
    return new ClusterKey(Buffer.from(bytes));
  }

  /** Fresh key material for a new cluster (32 random bytes, as hex text). */
  static generateText(): string {
    return randomBytes(32).toString('hex') + '\n';
  }

  mac(label: string, first: Buffer, second: Buffer): Buffer {
    return createHmac('sha256', this.key).update(label).update(first).update(second).digest();
  }

  /** A key for another use (`purpose` names it), so the key itself serves only the proofs above. */
  derive(purpose: string, bytes = 32): Buffer {
    return Buffer.from(hkdfSync('sha256', this.key, Buffer.alloc(0), purpose, bytes));
  }
}

export interface AuthOptions {
  /** TLS follows the exchange (`--peer-tls`): this side asks for it, or requires it. */
  tls?: boolean;
  /** Keys this side accepts besides the one it proves (a rotation under way). */
  alsoAccepted?: readonly ClusterKey[];
  timeoutMs?: number;
}

/**
 * The dialer's side, on a connected socket. Resolves with the key both sides proved once the
 * acceptor proved it and this side's proof is written; the socket is then paused, holding any
 * bytes that followed.
 */
export async function authenticateAsDialer(socket: Socket, key: ClusterKey, opts: AuthOptions = {}): Promise<ClusterKey> {
  const timeoutMs = opts.timeoutMs ?? authTimeoutMs;
  const nonceD = randomBytes(nonceBytes);
  const hello = Buffer.alloc(helloBytes);
  magic.copy(hello, 0);
  if (opts.tls) hello[flagsOffset] = flagTls;
  key.id.copy(hello, keyIdOffset);
  nonceD.copy(hello, helloBytes - nonceBytes);
  socket.write(hello);
  const reply = await readExactly(socket, nonceBytes + macBytes, timeoutMs, 'the acceptor\'s proof (a node with another key or another --peer-tls setting closes the connection instead)');
  const nonceA = reply.subarray(0, nonceBytes);
  const proof = reply.subarray(nonceBytes);
  // The acceptor proved ours if it holds it, else its own: taken if this side holds that one.
  const used = [key, ...(opts.alsoAccepted ?? [])].find((k) => timingSafeEqual(proof, k.mac('raftblock acceptor', nonceD, nonceA)));
  if (!used) throw new Unauthenticated('the node dialed does not hold this cluster\'s key');
  socket.write(used.mac('raftblock dialer', nonceA, nonceD));
  if (opts.tls) {
    const go = await readExactly(socket, 1, timeoutMs, 'the acceptor\'s go-ahead for TLS');
    if (go[0] !== goByte) throw new Unauthenticated(`the acceptor answered ${go[0]} where TLS was to start`);
  }
  return used;
}

/** The acceptor's side, on an accepted socket; like authenticateAsDialer, leaves it paused. */
export async function authenticateAsAcceptor(socket: Socket, key: ClusterKey, opts: AuthOptions = {}): Promise<ClusterKey> {
  const timeoutMs = opts.timeoutMs ?? authTimeoutMs;
  const hello = await readExactly(socket, helloBytes, timeoutMs, 'a hello');
  if (!hello.subarray(0, magic.length).equals(magic)) throw new Unauthenticated('the peer sent no authentication hello (does it run without the cluster key?)');
  const wantsTls = (hello[flagsOffset] & flagTls) !== 0;
  if (wantsTls !== (opts.tls ?? false)) {
    throw new Unauthenticated(wantsTls ? 'the peer asks for TLS and this node runs without --peer-tls' : 'the peer runs without --peer-tls and this node requires TLS');
  }
  const keyId = hello.subarray(keyIdOffset, keyIdOffset + keyIdBytes);
  // The dialer's key if this side holds it, else this side's own (see the top).
  const used = (keyId.equals(noKeyId) ? undefined : [key, ...(opts.alsoAccepted ?? [])].find((k) => k.id.equals(keyId))) ?? key;
  const nonceD = hello.subarray(helloBytes - nonceBytes);
  const nonceA = randomBytes(nonceBytes);
  socket.write(Buffer.concat([nonceA, used.mac('raftblock acceptor', nonceD, nonceA)]));
  const proof = await readExactly(socket, macBytes, timeoutMs, 'the dialer\'s proof');
  if (!timingSafeEqual(proof, used.mac('raftblock dialer', nonceA, nonceD))) throw new Unauthenticated('the peer does not hold this cluster\'s key');
  if (opts.tls) socket.write(Buffer.of(goByte));
  return used;
}

/**
 * The next `n` bytes of `socket`. Bytes past them are put back and the socket paused, so the
 * frame reader that takes over next (it resumes the socket) sees them first.
 */
function readExactly(socket: Socket, n: number, timeoutMs: number, what: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const done = (err: Error | null, value?: Buffer): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(value as Buffer);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      have += chunk.length;
      if (have < n) return;
      socket.pause();
      const all = Buffer.concat(chunks, have);
      if (have > n) socket.unshift(all.subarray(n));
      done(null, all.subarray(0, n));
    };
    const onError = (err: Error): void => done(new Unauthenticated(`connection failed while waiting for ${what}: ${err.message}`));
    const onClose = (): void => done(new Unauthenticated(`connection closed while waiting for ${what}`));
    const timer = setTimeout(() => done(new Unauthenticated(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.resume();
  });
}
