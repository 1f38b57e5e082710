/**
 * The NBD server: accepts TCP connections and keeps count of them; each runs its handshake
 * phase, then a transmission session (connection.ts). Any number of exports (name → backend)
 * may be served; the file export and a cluster node both use this class.
 *
 * Isolation: every connection has its own state; client input never throws past a connection
 * (protocol errors close that socket only), and a connection's failure never touches another.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Registry } from 'prom-client';
import { listenOn, type HostPort } from '../common/address.js';
import { InvalidArgument } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import { BufferPool } from './buffer-pool.js';
import { MemoryBudget } from './memory-budget.js';
import type { NbdExport } from './handshake.js';
import { NbdConnection, type ConnectionContext } from './connection.js';
import type { PskKeys } from './tls-psk.js';
import { NbdMetrics } from './metrics.js';
import { defaultTransmissionLimits, TransmissionSession, type TransmissionLimits } from './transmission.js';
import { within } from '../common/within.js';

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
  /**
   * A client that has not finished the handshake by then (default defaultNbdHandshakeLimitMs)
   * is disconnected: a connection that says nothing holds a slot of maxConnections for this
   * long at most.
   */
  handshakeLimitMs?: number;
  /**
   * Open connections (handshaking or transmitting) at most (default defaultMaxNbdConnections):
   * one more is closed at once, so that a client opening connections without end exhausts
   * this limit, not the process's file descriptors (which its WAL, data files and peers need).
   */
  maxConnections?: number;
  /**
   * Clients must upgrade to TLS (NBD_OPT_STARTTLS, FORCEDTLS) and prove one of these users'
   * pre-shared keys; absent: no TLS (NOTLS).
   */
  tlsPsk?: PskKeys;
  /**
   * How long close() lets sessions finish before it destroys the sockets of those still open,
   * and how long a session finishing on its own (NBD_CMD_DISC, client EOF) waits on a client
   * that takes none of its replies and does not close its side (default defaultNbdCloseGraceMs).
   */
  closeGraceMs?: number;
  /**
   * Bytes held across all connections for requests in flight and replies queued (default
   * defaultNbdMemoryBudgetBytes); a connection whose next request does not fit stops reading
   * until it does (see memory-budget.ts).
   */
  memoryBudgetBytes?: number;
  logger?: Logger;
}

export const defaultMaxNbdConnections = 1024;
/** From accept to the start of transmission, TLS included; qemu-nbd's default limit too. */
export const defaultNbdHandshakeLimitMs = 10_000;
/**
 * close() asks every session to finish (answer what is in flight, write its replies out) and
 * waits this long for them; then it destroys the sockets of those still open. A session whose
 * client reads none of its replies never finishes by itself (its reads stay paused behind its
 * queued replies), and it must not hold a node's stop forever.
 */
export const defaultNbdCloseGraceMs = 5_000;
/**
 * Each connection may hold up to 64 MiB in flight and 16 MiB of replies queued
 * (defaultTransmissionLimits); this bounds them all together, well below what a node's heap can
 * spare, and well above what its clients need at full speed.
 */
export const defaultNbdMemoryBudgetBytes = 512 * 1024 * 1024;
/**
 * The least memory budget a flag may set (--memory-budget, --nbd-memory-budget). A bare number
 * is bytes, so `512` meant as MiB sets 512 bytes, under which every client but one request per
 * connection waits its turn: below 1 MiB, a unit was surely left out.
 */
export const minNbdMemoryBudgetBytes = 1024 * 1024;
/** The most a flag may set: past 1 TiB it bounds nothing on any machine a node runs on; a typo. */
export const maxNbdMemoryBudgetBytes = 1024 ** 4;
/** At most one warning per this long about each kind of connection closed by a limit. */
const limitWarningIntervalMs = 10_000;

/**
 * A warning about connections a limit closed, given at most once per interval with the number
 * closed since the last one: a flood of them must not flood the log too.
 */
class LimitWarning {
  private sinceWarning = 0;
  private lastWarningMs = -Infinity;

  constructor(private readonly message: string) {}

  note(log: Logger, fields: Record<string, unknown>): void {
    this.sinceWarning++;
    const now = performance.now();
    if (now - this.lastWarningMs < limitWarningIntervalMs) return;
    log.warn(this.message, { ...fields, sinceLastWarning: this.sinceWarning });
    this.sinceWarning = 0;
    this.lastWarningMs = now;
  }
}

export class NbdServer {
  private readonly server: Server;
  private readonly pool: BufferPool;
  private readonly budget: MemoryBudget;
  private readonly limits: TransmissionLimits;
  private readonly metrics: NbdMetrics | null;
  private readonly log: Logger;
  private readonly handshaking = new Set<NbdConnection>();
  private readonly sessions = new Set<TransmissionSession>();
  private shuttingDown = false;
  private closing: Promise<void> | null = null;
  /** Shared by every connection's reads: each read is consumed before the next one starts. */
  private readonly readBuffer = Buffer.allocUnsafeSlow(readBufferBytes);
  private nextConnectionId = 1;
  private readonly maxConnections: number;
  private readonly handshakeLimitMs: number;
  private readonly closeGraceMs: number;
  private readonly refusedWarning = new LimitWarning('NBD connection refused: the server has its maximum open');
  private readonly handshakeTimeoutWarning = new LimitWarning('NBD connection closed: its handshake did not finish in time');

  constructor(private opts: NbdServerOptions) {
    this.limits = { ...defaultTransmissionLimits, ...opts.limits };
    this.maxConnections = opts.maxConnections ?? defaultMaxNbdConnections;
    this.handshakeLimitMs = opts.handshakeLimitMs ?? defaultNbdHandshakeLimitMs;
    this.closeGraceMs = opts.closeGraceMs ?? defaultNbdCloseGraceMs;
    if (!Number.isSafeInteger(this.maxConnections) || this.maxConnections < 1) throw new Error(`maxConnections must be a positive integer, got ${opts.maxConnections}`);
    if (!(this.handshakeLimitMs > 0)) throw new Error(`handshakeLimitMs must be positive, got ${opts.handshakeLimitMs}`);
    if (!(this.closeGraceMs > 0)) throw new InvalidArgument(`closeGraceMs must be positive, got ${opts.closeGraceMs}`);
    const budgetBytes = opts.memoryBudgetBytes ?? defaultNbdMemoryBudgetBytes;
    if (!Number.isSafeInteger(budgetBytes) || budgetBytes < 1) throw new InvalidArgument(`memoryBudgetBytes must be a positive integer, got ${opts.memoryBudgetBytes}`);
    this.budget = new MemoryBudget(budgetBytes);
    for (const [name, e] of opts.exports) {
      if (e.backend.blockSizes.maximum > this.limits.maxPayloadBytes) {
        throw new Error(`export ${name}: maximum block size exceeds the server's payload limit`);
      }
    }
    this.pool = new BufferPool(this.limits.maxPayloadBytes);
    this.metrics = opts.registry ? new NbdMetrics(opts.registry, this.budget) : null;
    this.log = opts.logger ?? createLogger('nbd');
    this.server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error('listener error', { err }));
  }

  /**
   * Replaces the TLS keys (a PSK file re-read): connections from now on prove the new ones;
   * open sessions keep going. Only for a server that requires TLS already.
   */
  setTlsPsk(keys: PskKeys): void {
    if (this.opts.tlsPsk === undefined) throw new Error('this NBD server runs without TLS; it cannot take keys now');
    this.opts = { ...this.opts, tlsPsk: keys };
  }

  /** Open connections (handshaking or transmitting). */
  get connectionCount(): number {
    return this.handshaking.size + this.sessions.size;
  }

  /** Bytes of the memory budget held now (requests in flight, replies queued). */
  get budgetHeldBytes(): number {
    return this.budget.usedBytes;
  }

  async listen(address: HostPort): Promise<HostPort> {
    return listenOn(this.server, address, 'NBD server');
  }

  /**
   * Stops accepting, ends handshakes, lets every session answer its in-flight requests and
   * closes them (those not finished within closeGraceMs are cut off), then flushes every
   * export. Backends stay open (their owner closes them).
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
    for (const s of this.sessions) s.shutdown();
    if (!(await settlesWithin(this.sessionsDone(), this.closeGraceMs))) {
      this.log.warn('NBD sessions not finished within the close grace, closing them', { sessions: this.sessions.size, closeGraceMs: this.closeGraceMs });
      // Their requests in flight still complete (the backend sees the abort signal) before
      // each session settles; replies queued for a client that took none are dropped.
      for (const s of this.sessions) s.destroy();
      await this.sessionsDone();
    }
    for (const e of this.opts.exports.values()) {
      if (!e.backend.capabilities.readOnly) await e.backend.flush();
    }
  }

  /** Resolves once every session open now has settled (a session leaves the set when it does). */
  private sessionsDone(): Promise<unknown> {
    return Promise.all([...this.sessions].map((s) => s.done));
  }

  private accept(accepted: Socket): void {
    const id = this.nextConnectionId++;
    const log = this.log.child({ conn: id, peer: `${accepted.remoteAddress}:${accepted.remotePort}` });
    if (this.shuttingDown) {
      accepted.destroy();
      return;
    }
    if (this.connectionCount >= this.maxConnections) {
      accepted.destroy();
      this.refused(log);
      return;
    }
    const conn = new NbdConnection(accepted, this.connectionContext(), log);
    this.handshaking.add(conn);
    conn.start();
  }

  /** Counts a connection refused at the limit; warns at most once per interval. */
  private refused(log: Logger): void {
    this.metrics?.connectionsRefused.inc();
    this.refusedWarning.note(log, { maxConnections: this.maxConnections });
  }

  /** What a new connection needs: the options as they are now (setTlsPsk may change them). */
  private connectionContext(): ConnectionContext {
    return {
      exports: this.opts.exports,
      defaultExport: this.opts.defaultExport,
      tlsPsk: this.opts.tlsPsk,
      sharedReadBuffer: this.opts.sharedReadBuffer !== false,
      readBuffer: this.readBuffer,
      handshakeLimitMs: this.handshakeLimitMs,
      closeGraceMs: this.closeGraceMs,
      handshakeTimedOut: (log) => {
        this.metrics?.handshakeTimeouts.inc();
        this.handshakeTimeoutWarning.note(log, { handshakeLimitMs: this.handshakeLimitMs });
      },
      pool: this.pool,
      budget: this.budget,
      limits: this.limits,
      metrics: this.metrics,
      shuttingDown: () => this.shuttingDown,
      handshakeEnded: (conn) => this.handshaking.delete(conn),
      sessionStarted: (session) => {
        this.sessions.add(session);
        void session.done.then(() => this.sessions.delete(session));
      },
    };
  }
}

/** Whether `p` settles within `ms` (the timer is cleared either way). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return (await within(p.then(() => true), ms)) ?? false;
}
