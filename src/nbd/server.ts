/**
 * The NBD server: accepts TCP connections, runs the handshake phase on each, then hands the
 * socket to a transmission session. Any number of exports (name → backend) may be served; the
 * file export and a cluster node both use this class.
 *
 * Isolation: every connection has its own state; client input never throws past a connection
 * (protocol errors close that socket only), and a connection's failure never touches another.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { HostPort } from '../common/address.js';
import { createLogger, type Logger } from '../common/log.js';
import { BufferPool } from './buffer-pool.js';
import { Handshake, type NbdExport } from './handshake.js';
import { NbdMetrics } from './metrics.js';
import { defaultTransmissionLimits, TransmissionSession, type TransmissionLimits } from './transmission.js';

export type { NbdExport } from './handshake.js';

export interface NbdServerOptions {
  exports: ReadonlyMap<string, NbdExport>;
  /** Export served to clients asking for the empty name (default: the only export). */
  defaultExport?: string;
  /** Registry for the server's metrics; omit for none. */
  registry?: Registry;
  limits?: Partial<TransmissionLimits>;
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
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error('listener error', { err }));
  }

  /** Open connections (handshaking or transmitting). */
  get connectionCount(): number {
    return this.handshaking.size + this.sessions.size;
  }

  async listen(address: HostPort): Promise<HostPort> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(address.port, address.host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const a = this.server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  /**
   * Stops accepting, ends handshakes, lets every session answer its in-flight requests and
   * closes them, then flushes every export. Backends stay open (their owner closes them).
   */
  async close(): Promise<void> {
    this.shuttingDown = true;
    const listening = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.handshaking) s.destroy();
    const sessions = [...this.sessions];
    for (const s of sessions) s.stop();
    await Promise.all(sessions.map((s) => s.done));
    await listening;
    for (const e of this.opts.exports.values()) {
      if (!e.backend.capabilities.readOnly) await e.backend.flush();
    }
  }

  private accept(socket: Socket): void {
    const id = this.nextConnectionId++;
    const log = this.log.child({ conn: id, peer: `${socket.remoteAddress}:${socket.remotePort}` });
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true); // replies are batched by cork/uncork; never wait on Nagle
    this.metrics?.connections.inc();
    socket.once('close', () => this.metrics?.connections.dec());
    socket.on('error', (err) => log.debug('socket error', { err }));
    this.handshaking.add(socket);
    log.debug('connected');

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
      for (const b of hs.output) socket.write(b);
      hs.output.length = 0;
    };
    const onData = (chunk: Buffer): void => {
      const step = hs.push(chunk);
      socket.cork();
      flush();
      socket.uncork();
      if (step.kind === 'continue') return;
      socket.off('data', onData);
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
      if (this.shuttingDown) session.stop();
      session.start(step.leftover);
    };
    socket.on('data', onData);
    socket.on('end', () => {
      // EOF before transmission: nothing more can be negotiated.
      if (this.handshaking.has(socket)) socket.end();
    });
    socket.once('close', () => {
      clearTimeout(timer);
      this.handshaking.delete(socket);
    });
    flush();
  }
}
