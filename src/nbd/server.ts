/**
 * The NBD server: accepts TCP connections, runs the handshake phase on each, then hands the
 * socket to a transmission session. Any number of exports (name → backend) may be served; the
 * file export and a cluster node both use this class.
 *
 * Isolation: every connection has its own state; client input never throws past a connection
 * (protocol errors close that socket only), and a connection's failure never touches another.
 */
import { createServer, Socket as NetSocket, type Server, type Socket } from 'node:net';
import type { Registry } from 'prom-client';
import { listenOn, type HostPort } from '../common/address.js';
import { createLogger, type Logger } from '../common/log.js';
import { BufferPool } from './buffer-pool.js';
import { Handshake, type NbdExport } from './handshake.js';
import { NbdMetrics } from './metrics.js';
import { defaultTransmissionLimits, TransmissionSession, type TransmissionLimits } from './transmission.js';

export type { NbdExport } from './handshake.js';

/** Size of the buffer socket reads land in (one read can carry a whole 512 KiB WRITE and more). */
const readBufferBytes = 1024 * 1024;

export interface NbdServerOptions {
  exports: ReadonlyMap<string, NbdExport>;
  /** Export served to clients asking for the empty name (default: the only export). */
  defaultExport?: string;
  /** Registry for the server's metrics; omit for none. */
  registry?: Registry;
  limits?: Partial<TransmissionLimits>;
  /**
   * Socket reads land in one shared buffer (see adoptWithReadBuffer); false uses plain 'data'
   * events, the path taken anyway when the runtime cannot adopt a socket handle.
   */
  sharedReadBuffer?: boolean;
  /** A client that has not finished the handshake by then is disconnected. */
  handshakeTimeoutMs?: number;
  logger?: Logger;
}

export class NbdServer {
  private readonly server: Server;
  private readonly pool: BufferPool;
  private readonly limits: TransmissionLimits;
  private readonly metrics: NbdMetrics | null;
  private readonly log: Logger;
  private readonly handshaking = new Set<Socket>();
  private readonly sessions = new Set<TransmissionSession>();
  private shuttingDown = false;
  private closing: Promise<void> | null = null;
  /** Shared by every connection's reads: each read is consumed before the next one starts. */
  private readonly readBuffer = Buffer.allocUnsafeSlow(readBufferBytes);
  private nextConnectionId = 1;

  constructor(private readonly opts: NbdServerOptions) {
    this.limits = { ...defaultTransmissionLimits, ...opts.limits };
    for (const [name, e] of opts.exports) {
      if (e.backend.blockSizes.maximum > this.limits.maxPayloadBytes) {
        throw new Error(`export ${name}: maximum block size exceeds the server's payload limit`);
      }
    }
    this.pool = new BufferPool(this.limits.maxPayloadBytes);
    this.metrics = opts.registry ? new NbdMetrics(opts.registry) : null;
    this.log = opts.logger ?? createLogger('nbd');
    this.server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error('listener error', { err }));
  }

  /** Open connections (handshaking or transmitting). */
  get connectionCount(): number {
    return this.handshaking.size + this.sessions.size;
  }

  async listen(address: HostPort): Promise<HostPort> {
    return listenOn(this.server, address, 'NBD server');
  }

  /**
   * Stops accepting, ends handshakes, lets every session answer its in-flight requests and
   * closes them, then flushes every export. Backends stay open (their owner closes them).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.shuttingDown = true;
    // Stops listening at once; its callback (all connections gone) is not awaited because
    // adopted sockets are not counted by net.Server. Sessions are awaited instead.
    this.server.close();
    for (const s of this.handshaking) s.destroy();
    const sessions = [...this.sessions];
    for (const s of sessions) s.shutdown();
    await Promise.all(sessions.map((s) => s.done));
    for (const e of this.opts.exports.values()) {
      if (!e.backend.capabilities.readOnly) await e.backend.flush();
    }
  }

  private accept(accepted: Socket): void {
    const id = this.nextConnectionId++;
    const log = this.log.child({ conn: id, peer: `${accepted.remoteAddress}:${accepted.remotePort}` });
    if (this.shuttingDown) {
      accepted.destroy();
      return;
    }
    // The connection's input handler; set below once the phase objects exist.
    let onInput: (chunk: Buffer, transient: boolean) => void = () => {};
    // Nothing a client sends may throw past its own connection: an unexpected error (a bug)
    // closes this socket and is logged; the process and other connections carry on.
    const guarded = (chunk: Buffer, transient: boolean): void => {
      try {
        onInput(chunk, transient);
      } catch (err) {
        log.error('connection failed', { err });
        onInput = () => {};
        socket.destroy();
      }
    };
    const socket: Socket =
      this.opts.sharedReadBuffer === false ? accepted : adoptWithReadBuffer(accepted, this.readBuffer, (n, buf) => guarded(buf.subarray(0, n), true));
    const transient = socket !== accepted;
    if (!transient) socket.on('data', (chunk: Buffer) => guarded(chunk, false));
    socket.setNoDelay(true); // replies are batched by cork/uncork; never wait on Nagle
    this.metrics?.connections.inc();
    socket.once('close', () => this.metrics?.connections.dec());
    socket.on('error', (err) => log.debug('socket error', { err }));
    this.handshaking.add(socket);
    log.debug('connected', { userReadBuffer: transient });

    const hs = new Handshake({
      exports: this.opts.exports,
      defaultExport: this.opts.defaultExport,
      shuttingDown: () => this.shuttingDown,
    });
    const timer = setTimeout(() => {
      log.warn('handshake timed out');
      socket.destroy();
    }, this.opts.handshakeTimeoutMs ?? 60_000);
    timer.unref();
    const flush = (): void => {
      socket.cork();
      for (const b of hs.output) socket.write(b);
      socket.uncork();
      hs.output.length = 0;
    };
    // The handshake copies whatever it keeps, so transient chunks are safe to hand it.
    onInput = (chunk) => {
      const step = hs.push(chunk);
      flush();
      if (step.kind === 'continue') return;
      onInput = () => {};
      clearTimeout(timer);
      this.handshaking.delete(socket);
      if (step.kind === 'close') {
        if (step.protocolError) {
          log.warn('handshake protocol error, closing', { reason: step.reason });
          this.metrics?.protocolErrors.inc();
          socket.destroy();
        } else {
          log.debug('handshake ended', { reason: step.reason });
          socket.end();
        }
        return;
      }
      log.debug('transmission', {
        export: step.negotiated.exportName,
        structuredReplies: step.negotiated.structuredReplies,
        baseAllocation: step.negotiated.baseAllocation,
      });
      const session = new TransmissionSession(socket, step.negotiated, this.pool, this.limits, this.metrics, log);
      this.sessions.add(session);
      void session.done.then(() => this.sessions.delete(session));
      onInput = (c, t) => session.onData(c, t);
      if (this.shuttingDown) session.shutdown();
      session.start(step.leftover);
    };
    socket.on('end', () => {
      // EOF before transmission: nothing more can be negotiated.
      if (this.handshaking.has(socket)) socket.end();
    });
    socket.once('close', () => {
      clearTimeout(timer);
      this.handshaking.delete(socket);
    });
    flush();
    socket.resume();
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
