/**
 * One NBD client connection, from accept to the start of transmission: its socket (the raw one,
 * then the TLS socket over it after STARTTLS), the handshake fed from it, the handshake
 * deadline, and the hand-over of the socket to a TransmissionSession once an export is
 * negotiated. NbdServer only accepts connections and keeps count of them.
 *
 * Isolation: nothing a client sends may throw past its own connection. An unexpected error (a
 * bug) closes this socket and is logged; the process and other connections carry on.
 */
import { Socket as NetSocket, type Socket } from 'node:net';
import type { Logger } from '../common/log.js';
import type { BufferPool } from './buffer-pool.js';
import type { MemoryBudget } from './memory-budget.js';
import { Handshake, type NbdExport } from './handshake.js';
import type { NbdMetrics } from './metrics.js';
import { startTlsAsServer, type PskKeys } from './tls-psk.js';
import { TransmissionSession, type TransmissionLimits } from './transmission.js';

/** What a connection needs of its server. */
export interface ConnectionContext {
  exports: ReadonlyMap<string, NbdExport>;
  defaultExport?: string;
  /** Keys clients must prove after STARTTLS (FORCEDTLS); undefined: no TLS. */
  tlsPsk?: PskKeys;
  /** Reads land in `readBuffer` (adoptWithReadBuffer) unless false or TLS. */
  sharedReadBuffer: boolean;
  readBuffer: Buffer;
  handshakeLimitMs: number;
  /** See NbdServerOptions.closeGraceMs; a finishing session waits this long on a stalled client. */
  closeGraceMs: number;
  /** The handshake deadline passed: counted and warned about by the server (this then closes). */
  handshakeTimedOut(log: Logger): void;
  pool: BufferPool;
  /** The server's, shared by all its sessions. */
  budget: MemoryBudget;
  limits: TransmissionLimits;
  metrics: NbdMetrics | null;
  shuttingDown(): boolean;
  /** The handshake phase is over (transmission began, or the connection closed). */
  handshakeEnded(conn: NbdConnection): void;
  /** A session took over the connection. */
  sessionStarted(session: TransmissionSession): void;
}

type InputHandler = (chunk: Buffer, transient: boolean) => void;
const ignoreInput: InputHandler = () => {};

export class NbdConnection {
  private readonly ctx: ConnectionContext;
  private readonly log: Logger;
  /** The raw socket (possibly re-wrapped to read into the shared buffer). */
  private readonly socket: Socket;
  /** The socket the handshake and the session speak on: `socket`, or TLS over it after STARTTLS. */
  private io: Socket;
  private readonly hs: Handshake;
  private readonly timer: NodeJS.Timeout;
  /** Where the next bytes from the client go: the handshake, a session, or nowhere. */
  private onInput: InputHandler = ignoreInput;
  private inHandshake = true;
  private closed = false;
  private readonly onPlainData = (chunk: Buffer): void => this.guarded(chunk, false);

  constructor(accepted: Socket, ctx: ConnectionContext, log: Logger) {
    this.ctx = ctx;
    this.log = log;
    // TLS reads through its own stream, so a TLS server takes plain 'data' events throughout.
    this.socket =
      ctx.tlsPsk !== undefined || !ctx.sharedReadBuffer ? accepted : adoptWithReadBuffer(accepted, ctx.readBuffer, (n, buf) => this.guarded(buf.subarray(0, n), true));
    this.io = this.socket;
    const transient = this.socket !== accepted;
    if (!transient) this.socket.on('data', this.onPlainData);
    this.socket.setNoDelay(true); // replies are batched by cork/uncork; never wait on Nagle
    ctx.metrics?.connections.inc();
    this.socket.on('error', (err) => log.debug('socket error', { err }));
    log.debug('connected', { userReadBuffer: transient });
    this.hs = new Handshake({
      exports: ctx.exports,
      defaultExport: ctx.defaultExport,
      shuttingDown: () => ctx.shuttingDown(),
      tlsRequired: ctx.tlsPsk !== undefined,
    });
    this.timer = setTimeout(() => {
      ctx.handshakeTimedOut(log);
      this.destroy();
    }, ctx.handshakeLimitMs);
    this.timer.unref();
  }

  /** Sends the server's greeting and starts reading. */
  start(): void {
    this.onInput = (chunk) => this.handshakeInput(chunk);
    this.socket.on('end', () => this.onEnd());
    this.socket.once('close', () => this.onClose());
    this.flush();
    this.socket.resume();
  }

  /** Closes the connection at once (a server shutting down, a handshake deadline). */
  destroy(): void {
    this.io.destroy();
    this.socket.destroy();
  }

  private guarded(chunk: Buffer, transient: boolean): void {
    try {
      this.onInput(chunk, transient);
    } catch (err) {
      this.log.error('connection failed', { err });
      this.onInput = ignoreInput;
      this.destroy();
    }
  }

  private flush(): void {
    this.io.cork();
    for (const b of this.hs.output) this.io.write(b);
    this.io.uncork();
    this.hs.output.length = 0;
  }

  private onEnd(): void {
    // EOF before transmission: nothing more can be negotiated.
    if (this.inHandshake) this.io.end();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.endHandshake();
    this.ctx.metrics?.connections.dec();
  }

  private endHandshake(): void {
    clearTimeout(this.timer);
    if (!this.inHandshake) return;
    this.inHandshake = false;
    this.ctx.handshakeEnded(this);
  }

  private protocolError(reason: string): void {
    this.log.warn('handshake protocol error, closing', { reason });
    this.ctx.metrics?.protocolErrors.inc();
  }

  // The handshake copies whatever it keeps, so transient chunks are safe to hand it.
  private handshakeInput(chunk: Buffer): void {
    const step = this.hs.push(chunk);
    this.flush();
    if (step.kind === 'continue') return;
    if (step.kind === 'starttls') {
      if (step.leftover.length === 0 && this.ctx.tlsPsk) return this.startTls(this.ctx.tlsPsk);
      this.protocolError('bytes sent between NBD_OPT_STARTTLS and its reply');
      this.onInput = ignoreInput;
      this.socket.destroy();
      return;
    }
    this.onInput = ignoreInput;
    this.endHandshake();
    if (step.kind === 'close') {
      if (step.protocolError) {
        this.protocolError(step.reason);
        this.destroy();
      } else {
        this.log.debug('handshake ended', { reason: step.reason });
        this.io.end();
      }
      return;
    }
    this.log.debug('transmission', {
      export: step.negotiated.exportName,
      structuredReplies: step.negotiated.structuredReplies,
      baseAllocation: step.negotiated.baseAllocation,
      tls: this.io !== this.socket,
    });
    const session = new TransmissionSession(this.io, step.negotiated, this.ctx.pool, this.ctx.limits, this.ctx.metrics, this.log, this.ctx.closeGraceMs, this.ctx.budget);
    this.ctx.sessionStarted(session);
    this.onInput = (c, t) => session.onData(c, t);
    if (this.ctx.shuttingDown()) session.shutdown();
    session.start(step.leftover);
  }

  private startTls(keys: PskKeys): void {
    // Raw bytes no longer reach the handshake: the next ones are the client's TLS hello.
    this.onInput = ignoreInput;
    this.socket.off('data', this.onPlainData);
    this.socket.pause();
    startTlsAsServer(this.socket, keys).then(
      ({ tls, user }) => {
        if (this.closed || this.ctx.shuttingDown()) {
          tls.destroy();
          return;
        }
        this.io = tls;
        tls.on('error', (err) => this.log.debug('TLS socket error', { err }));
        tls.on('end', () => this.onEnd());
        tls.once('close', () => this.onClose());
        this.hs.tlsStarted();
        this.onInput = (chunk) => this.handshakeInput(chunk);
        tls.on('data', (chunk: Buffer) => this.guarded(chunk, false));
        this.log.debug('TLS on', { user, protocol: tls.getProtocol(), cipher: tls.getCipher().name });
      },
      (err: Error) => {
        this.log.warn('TLS handshake failed, closing', { err: err.message });
        this.ctx.metrics?.protocolErrors.inc();
      },
    );
  }
}

/**
 * Re-wraps an accepted socket (created paused) so that libuv reads straight into `buffer`
 * instead of allocating a fresh chunk per read: `onRead(n, buffer)` sees each read and must
 * consume or copy it before returning. This roughly halves the CPU cost of receiving WRITE
 * payloads (no per-read allocation, no GC of 64 KiB chunks, larger reads). Node offers this
 * (`onread`) only to sockets it constructs, so the accepted socket's handle is adopted by a new
 * Socket; when that is not possible the accepted socket is returned unchanged.
 */
function adoptWithReadBuffer(accepted: Socket, buffer: Buffer, onRead: (n: number, buf: Buffer) => void): Socket {
  const handle = (accepted as unknown as { _handle?: { useUserBuffer?: unknown } })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return accepted;
  try {
    const socket = new NetSocket({
      handle: handle as never,
      allowHalfOpen: true,
      onread: { buffer, callback: (n: number, buf: Uint8Array) => void onRead(n, buf as Buffer) },
    } as ConstructorParameters<typeof NetSocket>[0]);
    // The old wrapper must never touch the handle again.
    (accepted as unknown as { _handle: unknown })._handle = null;
    socket.pause();
    return socket;
  } catch {
    return accepted;
  }
}
