/**
 * The transmission-phase request decoder: consumes a byte stream (socket chunks in any split)
 * and yields requests into a caller-owned, reused `NbdRequest`, with WRITE payloads copied
 * into pooled buffers. `poll()` answers NEED_MORE, REQUEST, NEED_BUDGET (the owner's `admit`
 * refused the parsed header: nothing more is read until it agrees) or PROTOCOL_ERROR; it never throws
 * on client input and never allocates more than `maxPayloadBytes` for one payload: a WRITE
 * that announces more has its payload read off the stream and dropped, and is yielded with
 * `oversized` set only once the payload is consumed (a client such as libnbd does not accept a
 * reply to a request it has not finished sending).
 */
import type { BufferPool, PooledBuffer } from './buffer-pool.js';
import { NBD_CMD_WRITE, NBD_REQUEST_HEADER_BYTES, NBD_REQUEST_MAGIC } from './protocol.js';

export interface RequestHeader {
  flags: number;
  type: number;
  /** The 64-bit handle as two uint32 halves (echoed back verbatim). */
  handleHi: number;
  handleLo: number;
  /** Byte offset; values ≥ 2^53 are approximate but still beyond any device. */
  offset: number;
  length: number;
}

/** A request as the server works on it; objects are reused from a free list. */
export class NbdRequest implements RequestHeader {
  flags = 0;
  type = 0;
  handleHi = 0;
  handleLo = 0;
  offset = 0;
  length = 0;
  /** WRITE payload (first `length` bytes), owned by the request until released. */
  payload: PooledBuffer | null = null;
  /** A WRITE longer than the limit: its payload was discarded, the request must fail. */
  oversized = false;
  /** Bytes of the server's memory budget this request holds (set by the decoder's owner). */
  budgetBytes = 0;

  reset(): void {
    this.payload = null;
    this.oversized = false;
    this.budgetBytes = 0;
  }
}

/** Fills `out` from the 28 bytes at `off`. Returns false when the magic is wrong. */
export function parseRequestHeader(buf: Buffer, off: number, out: RequestHeader): boolean {
  if (buf.readUInt32BE(off) !== NBD_REQUEST_MAGIC) return false;
  out.flags = buf.readUInt16BE(off + 4);
  out.type = buf.readUInt16BE(off + 6);
  out.handleHi = buf.readUInt32BE(off + 8);
  out.handleLo = buf.readUInt32BE(off + 12);
  out.offset = buf.readUInt32BE(off + 16) * 0x100000000 + buf.readUInt32BE(off + 20);
  out.length = buf.readUInt32BE(off + 24);
  return true;
}

/** Builds a request header (+ payload) as a client would (tests and tools). */
export function encodeRequest(h: RequestHeader, payload?: Buffer): Buffer {
  const b = Buffer.alloc(NBD_REQUEST_HEADER_BYTES + (payload ? payload.length : 0));
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeUInt32BE(h.handleHi, 8);
  b.writeUInt32BE(h.handleLo, 12);
  b.writeUInt32BE(Math.floor(h.offset / 0x100000000), 16);
  b.writeUInt32BE(h.offset >>> 0, 20);
  b.writeUInt32BE(h.length, 24);
  if (payload) payload.copy(b, NBD_REQUEST_HEADER_BYTES);
  return b;
}

export const NEED_MORE = 0;
export const REQUEST = 1;
export const PROTOCOL_ERROR = 2;
export const NEED_BUDGET = 3;
export type PollResult = typeof NEED_MORE | typeof REQUEST | typeof PROTOCOL_ERROR | typeof NEED_BUDGET;

/**
 * Asked once a request's header is parsed, before its payload is read (and before the request
 * is yielded): false leaves the request with the decoder, and the next poll asks again.
 */
export type Admission<R extends NbdRequest> = (req: R) => boolean;
const admitAll = (): boolean => true;

export class RequestDecoder<R extends NbdRequest = NbdRequest> {
  /** Queue of unconsumed chunks; `headOffset` bytes of the first are already consumed. */
  private chunks: Buffer[] = [];
  private headOffset = 0;
  private buffered = 0;
  private readonly header = Buffer.alloc(NBD_REQUEST_HEADER_BYTES);
  /** A request whose header is parsed and that is waiting for admission or its payload. */
  private current: R | null = null;
  private admitted = false;
  private filled = 0;
  /** Bytes still to drop (payload of the oversized WRITE in `current`). */
  private skipBytes = 0;
  /** Set once a protocol error was returned; the stream is dead afterwards. */
  errorMessage: string | null = null;

  constructor(
    private readonly pool: BufferPool,
    private readonly maxPayloadBytes: number,
    private readonly admit: Admission<R> = admitAll,
  ) {}

  /** Bytes received but not yet consumed (the owner pauses the socket when this grows). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.errorMessage !== null) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * Tries to complete one request into `out`. On REQUEST, `out` holds the header and, for a
   * WRITE, its payload; the decoder forgets it. On NEED_MORE or NEED_BUDGET a partly decoded
   * request stays with the decoder (pass the same `out` again). On PROTOCOL_ERROR see
   * `errorMessage`.
   */
  poll(out: R): PollResult {
    if (this.errorMessage !== null) return PROTOCOL_ERROR;
    if (this.current === null) {
      if (this.buffered < NBD_REQUEST_HEADER_BYTES) return NEED_MORE;
      let ok: boolean;
      const first = this.chunks[0];
      if (first.length - this.headOffset >= NBD_REQUEST_HEADER_BYTES) {
        ok = parseRequestHeader(first, this.headOffset, out);
        this.advance(NBD_REQUEST_HEADER_BYTES);
      } else {
        this.copyOut(this.header, 0, NBD_REQUEST_HEADER_BYTES);
        ok = parseRequestHeader(this.header, 0, out);
      }
      if (!ok) {
        this.errorMessage = 'bad request magic';
        this.chunks = [];
        this.buffered = 0;
        return PROTOCOL_ERROR;
      }
      out.reset();
      this.current = out;
      this.admitted = false;
      if (out.type === NBD_CMD_WRITE && out.length > this.maxPayloadBytes) {
        out.oversized = true;
        this.skipBytes = out.length;
      }
    } else if (this.current !== out) {
      // The owner must hand back the same object until the payload is complete.
      this.errorMessage = 'decoder misuse: a different request object while a payload is pending';
      return PROTOCOL_ERROR;
    }
    const req = this.current;
    if (!this.admitted) {
      if (!this.admit(req)) return NEED_BUDGET;
      this.admitted = true;
      if (req.type !== NBD_CMD_WRITE || req.length === 0) {
        this.current = null;
        return REQUEST;
      }
      if (!req.oversized) {
        req.payload = this.pool.acquire(req.length);
        this.filled = 0;
      }
    }
    if (req.oversized) {
      this.skipBytes -= this.drop(this.skipBytes);
      if (this.skipBytes > 0) return NEED_MORE;
      this.current = null;
      return REQUEST;
    }
    const want = req.length - this.filled;
    const n = this.copyOut(req.payload!.buf, this.filled, Math.min(want, this.buffered));
    this.filled += n;
    if (this.filled < req.length) return NEED_MORE;
    this.current = null;
    return REQUEST;
  }

  /**
   * Copies unconsumed input into memory the decoder owns, so the caller may reuse the buffers it
   * pushed. Usually nothing is left (payloads are copied out as they arrive); at most a header
   * fragment, or a backlog while the connection is paused at its in-flight bound.
   */
  detach(): void {
    if (this.buffered === 0) {
      this.chunks.length = 0;
      this.headOffset = 0;
      return;
    }
    const owned = Buffer.allocUnsafe(this.buffered);
    const n = this.copyOut(owned, 0, this.buffered);
    this.chunks = [owned];
    this.headOffset = 0;
    this.buffered = n;
  }

  /** Releases a pending payload (connection closing mid-request). */
  dispose(): void {
    if (this.current?.payload) {
      this.current.payload.release();
      this.current.payload = null;
    }
    this.current = null;
    this.chunks = [];
    this.buffered = 0;
  }

  /** Copies `n` buffered bytes into `dst` at `dstOff`, consuming them; returns n. */
  private copyOut(dst: Buffer, dstOff: number, n: number): number {
    let copied = 0;
    while (copied < n) {
      const c = this.chunks[0];
      const take = Math.min(n - copied, c.length - this.headOffset);
      c.copy(dst, dstOff + copied, this.headOffset, this.headOffset + take);
      copied += take;
      this.advance(take);
    }
    return copied;
  }

  /** Drops up to `n` buffered bytes; returns how many were dropped. */
  private drop(n: number): number {
    let dropped = 0;
    while (dropped < n && this.buffered > 0) {
      const c = this.chunks[0];
      const take = Math.min(n - dropped, c.length - this.headOffset);
      dropped += take;
      this.advance(take);
    }
    return dropped;
  }

  private advance(n: number): void {
    this.headOffset += n;
    this.buffered -= n;
    if (this.headOffset === this.chunks[0].length) {
      this.chunks.shift();
      this.headOffset = 0;
    }
  }
}
