/**
 * The transmission phase of one connection: decode requests, validate them against the
 * export, run them on the backend concurrently, and write replies as they complete (out of
 * order), batched per tick with cork/uncork.
 *
 * Hot-path discipline: request objects come from a per-connection free list and carry
 * pre-bound completion callbacks (no closure per I/O); payloads live in pooled buffers; bytes
 * and requests in flight are bounded, and the socket is paused while over either bound, while
 * the socket's own write queue is too long, or while the server's memory budget
 * (memory-budget.ts) cannot spare what the next request needs.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { assert } from '../common/assert.js';
import type { Logger } from '../common/log.js';
import type { BlockExtent } from './backend.js';
import type { BufferPool, PooledBuffer } from './buffer-pool.js';
import type { BudgetHolder, MemoryBudget } from './memory-budget.js';
import { nbdErrnoOf } from './errno.js';
import type { Negotiated } from './handshake.js';
import type { NbdMetrics } from './metrics.js';
import {
  BASE_ALLOCATION_CONTEXT_ID,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_NAMES,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_SIMPLE_REPLY_HEADER_BYTES,
  NBD_STATE_HOLE,
  NBD_STRUCTURED_REPLY_HEADER_BYTES,
  NBD_STATE_ZERO,
} from './protocol.js';
import {
  encodeBlockStatusChunk,
  encodeErrorChunk,
  OFFSET_DATA_PREFIX_BYTES,
  OFFSET_HOLE_CHUNK_BYTES,
  type StatusDescriptor,
  writeNoneChunk,
  writeOffsetDataPrefix,
  writeOffsetHole,
  writeSimpleReply,
} from './reply-codec.js';
import { NbdRequest, NEED_BUDGET, NEED_MORE, PROTOCOL_ERROR, RequestDecoder } from './request-codec.js';

export interface TransmissionLimits {
  /** Largest READ/WRITE payload accepted. */
  maxPayloadBytes: number;
  /** Requests executing at once on this connection before the socket is paused. */
  maxInflightRequests: number;
  /** Payload bytes held by executing requests before the socket is paused. */
  maxInflightBytes: number;
  /** Reply bytes queued in the socket before reading pauses until it drains. */
  maxQueuedReplyBytes: number;
}

export const defaultTransmissionLimits: TransmissionLimits = {
  maxPayloadBytes: 32 * 1024 * 1024,
  maxInflightRequests: 256,
  maxInflightBytes: 64 * 1024 * 1024,
  maxQueuedReplyBytes: 16 * 1024 * 1024,
};

/** A request in flight: NbdRequest plus what its completion needs, reused across requests. */
class InflightRequest extends NbdRequest {
  readBuffer: PooledBuffer | null = null;
  startMs = 0;
  /** Bytes counted against maxInflightBytes. */
  heldBytes = 0;
  /**
   * Its READ reply is queued in the socket: the object (with its read buffer and budget) is
   * let go by onReplyWritten, not when the request finishes.
   */
  replyQueued = false;
  readonly onSuccess: (value: unknown) => void;
  readonly onFailure: (err: unknown) => void;
  /** Write callback of the last chunk that references readBuffer. */
  readonly onReplyWritten: () => void;
  constructor(session: TransmissionSession) {
    super();
    this.onSuccess = (value) => session.guard(this, value, true);
    this.onFailure = (err) => session.guard(this, err, false);
    this.onReplyWritten = () => session.replyWritten(this);
  }
}

const FLAGS_ALWAYS = NBD_CMD_FLAG_FUA; // spec: FUA is valid on every command once SEND_FUA is set

export class TransmissionSession implements BudgetHolder {
  private readonly decoder: RequestDecoder<InflightRequest>;
  private readonly free: InflightRequest[] = [];
  private next: InflightRequest | null = null;
  private inflight = 0;
  private inflightBytes = 0;
  private socketPaused = false;
  private waitingDrain = false;
  /** No more requests will be read (DISC, client EOF, server shutdown). */
  private stopping = false;
  private closed = false;
  private corked = false;
  private finishing = false;
  /** The client half-closed its side. */
  private eof = false;
  private pumping = false;
  /** The server is shutting down: remaining buffered requests get ESHUTDOWN. */
  private shuttingDown = false;
  private readonly size: number;
  private readonly allowedFlags: number[] = [];
  private closedResolve!: () => void;
  /**
   * Aborted once the client is gone: the socket closed, or the client closed its side without
   * NBD_CMD_DISC (killed, or gave up). The backend may then stop working on its requests. After
   * a DISC the client may still wait for its replies (the spec has them completed), so a
   * half-close after DISC aborts nothing.
   */
  private readonly gone = new AbortController();
  private discReceived = false;
  /** Resolves once the socket is closed and every request has completed. */
  readonly done: Promise<void>;
  budgetHeld = 0;
  budgetWanted = 0;
  /** Budget granted after a wait, not yet given to the request it was for. */
  private budgetReady = 0;
  private readonly uncork = (): void => {
    this.corked = false;
    if (!this.closed) this.socket.uncork();
  };

  constructor(
    private readonly socket: Socket,
    readonly negotiated: Negotiated,
    private readonly pool: BufferPool,
    private readonly limits: TransmissionLimits,
    private readonly metrics: NbdMetrics | null,
    private readonly log: Logger,
    /** How long a finishing session waits on a client that makes no progress (maybeFinish). */
    private readonly closeGraceMs: number,
    private readonly budget: MemoryBudget,
  ) {
    this.done = new Promise((resolve) => (this.closedResolve = resolve));
    this.decoder = new RequestDecoder(pool, limits.maxPayloadBytes, this.admit);
    const caps = negotiated.export.backend.capabilities;
    this.size = negotiated.export.backend.size();
    this.allowedFlags[NBD_CMD_READ] = FLAGS_ALWAYS | (negotiated.structuredReplies ? NBD_CMD_FLAG_DF : 0);
    this.allowedFlags[NBD_CMD_WRITE] = FLAGS_ALWAYS;
    this.allowedFlags[NBD_CMD_DISC] = FLAGS_ALWAYS;
    this.allowedFlags[NBD_CMD_FLUSH] = FLAGS_ALWAYS;
    this.allowedFlags[NBD_CMD_TRIM] = FLAGS_ALWAYS;
    this.allowedFlags[NBD_CMD_CACHE] = FLAGS_ALWAYS;
    this.allowedFlags[NBD_CMD_WRITE_ZEROES] = FLAGS_ALWAYS | NBD_CMD_FLAG_NO_HOLE | (caps.canFastZero ? NBD_CMD_FLAG_FAST_ZERO : 0);
    this.allowedFlags[NBD_CMD_BLOCK_STATUS] = FLAGS_ALWAYS | NBD_CMD_FLAG_REQ_ONE;

    // Input arrives through onData(), called by the connection (see server.ts: the socket may
    // read into a shared buffer, in which case chunks are only valid during the call).
    socket.on('end', () => {
      // The client sent everything it will send; requests still buffered are answered first.
      this.eof = true;
      if (!this.discReceived) this.gone.abort();
      this.pump();
    });
    socket.on('drain', () => {
      if (this.waitingDrain) {
        this.waitingDrain = false;
        this.pump();
      }
    });
    socket.on('close', () => this.onClose());
    socket.on('error', (err) => this.log.debug('socket error', { err }));
  }

  /** Bytes the client sent after the handshake in the same chunk. */
  start(leftover: Buffer): void {
    if (leftover.length > 0) this.decoder.push(leftover);
    this.pump();
  }

  /**
   * Server shutdown: nothing new starts. In-flight requests complete; every request that arrives
   * meanwhile is answered ESHUTDOWN (as the spec advises, so the client disconnects softly);
   * once nothing is in flight the connection closes.
   */
  shutdown(): void {
    if (this.stopping || this.shuttingDown) return;
    this.shuttingDown = true;
    this.pump();
  }

  /**
   * Cuts the connection off at once (a server whose close grace ran out): replies not yet
   * written are dropped; `done` resolves once the requests in flight complete.
   */
  destroy(): void {
    this.socket.destroy();
  }

  /** Stops reading requests; the connection closes once in-flight requests are answered. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.maybeFinish();
  }

  /**
   * Client bytes. With `transient` the chunk is a view of a buffer the socket reuses for its next
   * read, so whatever the decoder has not consumed by the end of this call is copied out.
   */
  onData(chunk: Buffer, transient: boolean): void {
    if (this.stopping || this.closed) return;
    this.decoder.push(chunk);
    this.pump();
    if (transient) this.decoder.detach();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopping = true;
    this.gone.abort();
    this.decoder.dispose();
    if (this.next?.payload) {
      this.next.payload.release();
      this.next.payload = null;
    }
    // Budget held for a request that will not be dispatched now, or waited for.
    if (this.next && this.next.budgetBytes > 0) {
      this.budget.release(this, this.next.budgetBytes);
      this.next.budgetBytes = 0;
    }
    this.budget.cancel(this);
    if (this.budgetReady > 0) {
      this.budget.release(this, this.budgetReady);
      this.budgetReady = 0;
    }
    if (this.inflight === 0) this.closedResolve();
  }

  /**
   * Admission of a parsed request header (the decoder's): a READ or WRITE takes its length
   * from the server's memory budget before its payload is read or its read issued; false
   * (NEED_BUDGET) stops reading until the budget grants it.
   */
  private readonly admit = (req: InflightRequest): boolean => {
    const bytes = (req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE) && req.length <= this.limits.maxPayloadBytes ? req.length : 0;
    if (bytes === 0) return true;
    if (this.budgetReady > 0) {
      // Granted for this very header, which the decoder kept while we waited.
      assert(this.budgetReady === bytes, `budget granted for ${this.budgetReady} bytes, the request needs ${bytes}`);
      this.budgetReady = 0;
      req.budgetBytes = bytes;
      return true;
    }
    if (this.budgetWanted > 0 || !this.budget.take(this, bytes)) return false;
    req.budgetBytes = bytes;
    return true;
  };

  /** BudgetHolder: called from within another holder's release, so the pump runs later. */
  budgetGranted(bytes: number): void {
    this.budgetReady = bytes;
    process.nextTick(this.pumpAfterGrant);
  }

  private readonly pumpAfterGrant = (): void => {
    if (!this.closed) this.pump();
  };

  private pause(): void {
    if (!this.socketPaused) {
      this.socketPaused = true;
      this.socket.pause();
    }
  }

  private resume(): void {
    if (this.socketPaused) {
      this.socketPaused = false;
      this.socket.resume();
    }
  }

  /** Decodes and dispatches as many requests as the bounds allow. */
  private pump(): void {
    // Requests answered synchronously (validation errors, zero-length, ESHUTDOWN) call back into
    // pump() through finishRequest(); the loop below already continues, so a nested call returns
    // at once instead of growing the stack by one frame per buffered request.
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.pumpLoop();
    } finally {
      this.pumping = false;
    }
  }

  private pumpLoop(): void {
    while (!this.stopping) {
      if (!this.shuttingDown && (this.inflight >= this.limits.maxInflightRequests || this.inflightBytes >= this.limits.maxInflightBytes)) {
        this.pause();
        return;
      }
      if (this.socket.writableLength > this.limits.maxQueuedReplyBytes) {
        this.waitingDrain = true;
        this.pause();
        return;
      }
      const req = this.next ?? this.allocate();
      this.next = req;
      const r = this.decoder.poll(req);
      if (r === NEED_MORE) {
        if (this.eof || (this.shuttingDown && this.inflight === 0)) this.stop();
        else this.resume();
        return;
      }
      if (r === NEED_BUDGET) {
        this.pause();
        return;
      }
      if (r === PROTOCOL_ERROR) {
        this.log.warn('protocol error, closing connection', { reason: this.decoder.errorMessage });
        this.metrics?.protocolErrors.inc();
        this.stopping = true;
        this.socket.destroy();
        return;
      }
      this.next = null;
      this.dispatch(req);
    }
  }

  private allocate(): InflightRequest {
    return this.free.pop() ?? new InflightRequest(this);
  }

  private dispatch(req: InflightRequest): void {
    req.startMs = performance.now();
    req.readBuffer = null;
    req.heldBytes = req.payload ? req.length : 0;
    this.inflight++;
    this.inflightBytes += req.heldBytes;
    const type = req.type;
    if (type === NBD_CMD_DISC) {
      this.discReceived = true;
      this.stopping = true;
      this.finishRequest(req);
      return;
    }
    if (this.shuttingDown) return this.reject(req, NBD_ESHUTDOWN, 'server is shutting down');
    const allowed = this.allowedFlags[type];
    if (allowed === undefined) return this.reject(req, NBD_EINVAL, `unknown command ${type}`);
    if ((req.flags & ~allowed) !== 0) return this.reject(req, NBD_EINVAL, `flags 0x${req.flags.toString(16)} not valid for ${NBD_CMD_NAMES[type]}`);
    const backend = this.negotiated.export.backend;
    const caps = backend.capabilities;
    const end = req.offset + req.length;
    const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
    try {
      switch (type) {
        case NBD_CMD_READ:
          if (req.length > this.limits.maxPayloadBytes) return this.reject(req, NBD_EINVAL, 'read longer than the maximum block size');
          if (end > this.size) return this.reject(req, NBD_EINVAL, 'read beyond the end of the export');
          if (req.length === 0) return this.succeeded(req, undefined);
          req.readBuffer = this.pool.acquire(req.length);
          req.heldBytes = req.length;
          this.inflightBytes += req.length;
          backend.read(req.offset, req.length, req.readBuffer.buf, this.gone.signal).then(req.onSuccess, req.onFailure);
          return;
        case NBD_CMD_WRITE:
          if (req.oversized) return this.reject(req, NBD_EINVAL, 'write longer than the maximum block size');
          if (caps.readOnly) return this.reject(req, NBD_EPERM, 'export is read-only');
          if (end > this.size) return this.reject(req, NBD_ENOSPC, 'write beyond the end of the export');
          if (req.length === 0) return this.succeeded(req, undefined);
          {
            const b = req.payload!.buf;
            backend.write(req.offset, b.length === req.length ? b : b.subarray(0, req.length), fua, this.gone.signal).then(req.onSuccess, req.onFailure);
          }
          return;
        case NBD_CMD_FLUSH:
          backend.flush().then(req.onSuccess, req.onFailure);
          return;
        case NBD_CMD_TRIM:
          if (caps.readOnly) return this.reject(req, NBD_EPERM, 'export is read-only');
          if (!caps.canTrim) return this.reject(req, NBD_EINVAL, 'trim not supported');
          if (end > this.size) return this.reject(req, NBD_EINVAL, 'trim beyond the end of the export');
          if (req.length === 0) return this.succeeded(req, undefined);
          backend.trim(req.offset, req.length, fua, this.gone.signal).then(req.onSuccess, req.onFailure);
          return;
        case NBD_CMD_WRITE_ZEROES:
          if (caps.readOnly) return this.reject(req, NBD_EPERM, 'export is read-only');
          if (!caps.canWriteZeroes) return this.reject(req, NBD_EINVAL, 'write zeroes not supported');
          if (end > this.size) return this.reject(req, NBD_ENOSPC, 'write zeroes beyond the end of the export');
          if (req.length === 0) return this.succeeded(req, undefined);
          backend
            .writeZeroes(req.offset, req.length, {
              fua,
              noHole: (req.flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
              fastZero: (req.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
            }, this.gone.signal)
            .then(req.onSuccess, req.onFailure);
          return;
        case NBD_CMD_CACHE:
          if (!caps.canCache) return this.reject(req, NBD_EINVAL, 'cache not supported');
          if (end > this.size) return this.reject(req, NBD_EINVAL, 'cache beyond the end of the export');
          if (req.length === 0) return this.succeeded(req, undefined);
          backend.cache(req.offset, req.length, this.gone.signal).then(req.onSuccess, req.onFailure);
          return;
        case NBD_CMD_BLOCK_STATUS:
          if (!this.negotiated.baseAllocation) return this.reject(req, NBD_EINVAL, 'no metadata context negotiated');
          if (req.length === 0) return this.reject(req, NBD_EINVAL, 'block status of zero bytes');
          if (end > this.size) return this.reject(req, NBD_EINVAL, 'block status beyond the end of the export');
          backend.blockStatus(req.offset, req.length, this.gone.signal).then(req.onSuccess, req.onFailure);
          return;
        default:
          return this.reject(req, NBD_EINVAL, `unknown command ${type}`);
      }
    } catch (err) {
      // A backend that throws synchronously is a bug there; the client still gets an answer.
      this.failed(req, err);
    }
  }

  /**
   * Completion of a backend call (bound per request object). A throw here would be an unhandled
   * rejection, which ends the process; instead the connection is closed and the bug logged.
   */
  guard(req: InflightRequest, value: unknown, ok: boolean): void {
    try {
      if (ok) this.succeeded(req, value);
      else this.failed(req, value);
    } catch (err) {
      this.log.error('completion failed, closing connection', { err, command: NBD_CMD_NAMES[req.type] });
      this.socket.destroy();
    }
  }

  /** Reply to a request whose backend call succeeded. */
  succeeded(req: InflightRequest, value: unknown): void {
    if (this.closed) return this.finishRequest(req);
    const s = this.negotiated.structuredReplies;
    switch (req.type) {
      case NBD_CMD_READ:
        if (s) this.sendStructuredRead(req, value as BlockExtent[] | undefined);
        else this.sendSimpleRead(req);
        this.metrics?.bytesRead.inc(req.length);
        break;
      case NBD_CMD_BLOCK_STATUS:
        this.send(encodeBlockStatusChunk(req.handleHi, req.handleLo, BASE_ALLOCATION_CONTEXT_ID, this.descriptors(req, value as BlockExtent[])));
        break;
      default:
        if (req.type === NBD_CMD_WRITE) this.metrics?.bytesWritten.inc(req.length);
        this.sendSimple(req, 0);
    }
    this.metrics?.request(req.type, (performance.now() - req.startMs) / 1000);
    this.finishRequest(req);
  }

  failed(req: InflightRequest, err: unknown): void {
    const errno = nbdErrnoOf(err);
    if (errno === 5) this.log.warn('backend error', { command: NBD_CMD_NAMES[req.type], offset: req.offset, length: req.length, err });
    const message = err instanceof Error ? err.message : String(err);
    this.reject(req, errno, message, req.type === NBD_CMD_READ && req.length > 0 ? req.offset : undefined);
  }

  private reject(req: InflightRequest, errno: number, message: string, errorOffset?: number): void {
    this.metrics?.error(req.type, errno);
    this.metrics?.request(req.type, (performance.now() - req.startMs) / 1000);
    if (!this.closed) {
      if (this.negotiated.structuredReplies) this.send(encodeErrorChunk(req.handleHi, req.handleLo, errno, message, errorOffset));
      else this.sendSimple(req, errno);
    }
    this.finishRequest(req);
  }

  private finishRequest(req: InflightRequest): void {
    if (req.payload) {
      req.payload.release();
      req.payload = null;
    }
    this.inflight--;
    this.inflightBytes -= req.heldBytes;
    req.heldBytes = 0;
    // A READ reply still queued keeps its buffer and budget until it is written out
    // (replyWritten); a WRITE's budget covered its payload, released just above.
    if (!req.replyQueued) this.letGo(req);
    if (this.closed) {
      if (this.inflight === 0) this.closedResolve();
      return;
    }
    if (this.stopping) this.maybeFinish();
    else if (this.shuttingDown || (this.socketPaused && !this.waitingDrain)) this.pump();
  }

  /** The last chunk of a READ reply is written out (or dropped with a destroyed socket). */
  replyWritten(req: InflightRequest): void {
    req.replyQueued = false;
    this.letGo(req);
  }

  /** Returns what a request held (read buffer, budget) and the object to the free list. */
  private letGo(req: InflightRequest): void {
    if (req.readBuffer) {
      req.readBuffer.release();
      req.readBuffer = null;
    }
    if (req.budgetBytes > 0) {
      this.budget.release(this, req.budgetBytes);
      req.budgetBytes = 0;
    }
    this.free.push(req);
  }

  private maybeFinish(): void {
    if (this.inflight > 0 || this.closed || this.finishing) return;
    this.finishing = true;
    if (this.corked) this.uncork();
    // Keep reading (and dropping) so the client's FIN is seen and the socket can close.
    this.resume();
    // Our FIN follows the replies still queued: the client gets every one (the spec has all
    // outstanding requests handled before the close), however slowly it reads them.
    this.socket.end();
    // A client that takes none of them, or never closes its side, must not hold the session
    // (and a server's close) forever: the socket is destroyed once closeGraceMs pass with
    // nothing received and no reply byte taken (Node's idle timer counts a large write that
    // advances as activity).
    this.socket.setTimeout(this.closeGraceMs, () => this.socket.destroy());
  }

  private send(buf: Buffer, cb?: () => void): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(buf, cb);
  }

  private sendSimple(req: InflightRequest, errno: number): void {
    const h = Buffer.allocUnsafe(NBD_SIMPLE_REPLY_HEADER_BYTES);
    writeSimpleReply(h, 0, errno, req.handleHi, req.handleLo);
    this.send(h);
  }

  private sendSimpleRead(req: InflightRequest): void {
    this.sendSimple(req, 0);
    this.sendReadData(req, 0, req.length, true);
  }

  /**
   * Queues `readBuffer[from, to)`; with `last` the request (its buffer, its budget) is let go
   * once that is written.
   */
  private sendReadData(req: InflightRequest, from: number, to: number, last: boolean): void {
    const rb = req.readBuffer;
    if (rb === null) return; // zero-length read
    const data = from === 0 && to === rb.buf.length ? rb.buf : rb.buf.subarray(from, to);
    if (last) {
      req.replyQueued = true;
      this.send(data, req.onReplyWritten);
    } else {
      this.send(data);
    }
  }

  private sendStructuredRead(req: InflightRequest, extents: BlockExtent[] | undefined): void {
    const hi = req.handleHi;
    const lo = req.handleLo;
    if (req.length === 0) {
      const h = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_HEADER_BYTES);
      writeNoneChunk(h, 0, hi, lo);
      this.send(h);
      return;
    }
    const df = (req.flags & NBD_CMD_FLAG_DF) !== 0;
    if (extents === undefined || df || extents.length <= 1 && !(extents[0]?.zero)) {
      const h = Buffer.allocUnsafe(OFFSET_DATA_PREFIX_BYTES);
      writeOffsetDataPrefix(h, 0, true, hi, lo, req.offset, req.length);
      this.send(h);
      this.sendReadData(req, 0, req.length, true);
      return;
    }
    // Several runs: data runs as OFFSET_DATA, zero runs as OFFSET_HOLE; the last chunk is DONE.
    // Normalise first (clamp to the request, the rest is data) so the chunk that releases the
    // read buffer is known to be the last one referencing it.
    const runLengths: number[] = [];
    const runZero: boolean[] = [];
    let covered = 0;
    for (const e of extents) {
      const len = Math.min(e.length, req.length - covered);
      if (len <= 0) continue;
      runLengths.push(len);
      runZero.push(e.zero);
      covered += len;
    }
    if (covered < req.length) {
      runLengths.push(req.length - covered);
      runZero.push(false);
    }
    let lastData = -1;
    for (let i = 0; i < runZero.length; i++) if (!runZero[i]) lastData = i;
    let pos = 0;
    for (let i = 0; i < runLengths.length; i++) {
      const len = runLengths[i];
      const done = i === runLengths.length - 1;
      if (runZero[i]) {
        const h = Buffer.allocUnsafe(OFFSET_HOLE_CHUNK_BYTES);
        writeOffsetHole(h, 0, done, hi, lo, req.offset + pos, len);
        this.send(h);
      } else {
        const h = Buffer.allocUnsafe(OFFSET_DATA_PREFIX_BYTES);
        writeOffsetDataPrefix(h, 0, done, hi, lo, req.offset + pos, len);
        this.send(h);
        this.sendReadData(req, pos, pos + len, i === lastData);
      }
      pos += len;
    }
  }

  private descriptors(req: InflightRequest, extents: BlockExtent[] | undefined): StatusDescriptor[] {
    const out: StatusDescriptor[] = [];
    let total = 0;
    for (const e of extents ?? []) {
      const room = req.length - total;
      if (room <= 0) break;
      const len = Math.min(e.length, room);
      if (len <= 0) continue;
      const flags = (e.hole ? NBD_STATE_HOLE : 0) | (e.zero ? NBD_STATE_ZERO : 0);
      const prev = out[out.length - 1];
      if (prev && prev.flags === flags) prev.length += len;
      else out.push({ length: len, flags });
      total += len;
    }
    if (out.length === 0) out.push({ length: req.length, flags: 0 });
    if ((req.flags & NBD_CMD_FLAG_REQ_ONE) !== 0) out.length = 1;
    return out;
  }
}
