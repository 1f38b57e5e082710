/**
 * Peer wire framing: a 4-byte big-endian length, then one msgpackr-encoded `Frame`.
 * A frame carries everything queued for one destination since the last flush: Raft messages
 * of every group, forwarded requests and their responses. Each frame names its sender and
 * the sender's map epoch (fencing), so a receiver can refuse or catch up.
 */
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import { ProtocolError } from '../common/errors.js';

/** Largest frame accepted or sent; bounds the memory one peer can make us hold. */
export const maxFrameBytes = 64 * 1024 * 1024;
const headerBytes = 4;

/** A Raft message for one group, opaque to the transport. */
export interface GroupMessage {
  /** Raft group id (0 = metadata, else PG id). */
  g: number;
  /** The Raft message itself. */
  m: unknown;
}

export interface RpcRequest {
  /** Request id, unique per connection direction. */
  id: number;
  /** Method name. */
  op: string;
  /** Arguments (msgpack-able; Buffers travel raw). */
  a: unknown;
}

export interface RpcResponse {
  id: number;
  /** Result on success. */
  r?: unknown;
  /** Error on failure: stable code and message (and leader hint for NOT_LEADER). */
  e?: { code: string; message: string; leader?: string };
}

/** Longest cluster id a frame may carry (ids are UUIDs: 36 characters). */
export const maxFrameClusterIdChars = 64;

export interface Frame {
  /** Sender node id. */
  from: string;
  /** Sender's listen address (HOST:PORT), so a receiver can dial back after a restart. */
  addr: string;
  /** Sender's cluster map epoch. */
  epoch: number;
  /**
   * Sender's cluster id, so that a receiver refuses a node of another cluster (transport.ts);
   * '' (or absent, from a node that predates cluster ids) while the sender does not know it.
   * A one-letter key: it is on every frame.
   */
  c?: string;
  msgs?: GroupMessage[];
  reqs?: RpcRequest[];
  resps?: RpcResponse[];
}

const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false });

/**
 * Encodes a frame with its length prefix. msgpackr packs into a shared buffer that it never
 * writes over (it starts a new one when full), so the returned bytes stay valid; reserving the
 * header's space in front of the body spares a copy and an allocation of every frame.
 */
export function encodeFrame(frame: Frame): Buffer {
  const out = packr.pack(frame, RESERVE_START_SPACE | headerBytes);
  const bodyBytes = out.length - headerBytes;
  if (bodyBytes > maxFrameBytes) throw new ProtocolError(`frame of ${bodyBytes} bytes exceeds ${maxFrameBytes}`);
  out.writeUInt32BE(bodyBytes, 0);
  return out;
}

function validate(value: unknown): Frame {
  if (typeof value !== 'object' || value === null) throw new ProtocolError('frame is not a map');
  const f = value as Record<string, unknown>;
  if (typeof f.from !== 'string' || f.from.length === 0 || f.from.length > 256) throw new ProtocolError('frame.from must be a node id');
  if (typeof f.addr !== 'string' || f.addr.length > 300) throw new ProtocolError('frame.addr must be a string');
  if (typeof f.epoch !== 'number' || !Number.isSafeInteger(f.epoch) || f.epoch < 0) throw new ProtocolError('frame.epoch must be a non-negative integer');
  if (f.c !== undefined && (typeof f.c !== 'string' || f.c.length > maxFrameClusterIdChars)) throw new ProtocolError('frame.c must be a cluster id');
  for (const key of ['msgs', 'reqs', 'resps'] as const) {
    if (f[key] !== undefined && !Array.isArray(f[key])) throw new ProtocolError(`frame.${key} must be an array`);
  }
  for (const m of (f.msgs as unknown[] | undefined) ?? []) {
    if (typeof m !== 'object' || m === null || typeof (m as GroupMessage).g !== 'number') throw new ProtocolError('bad group message');
  }
  for (const q of (f.reqs as unknown[] | undefined) ?? []) {
    const r = q as RpcRequest;
    if (typeof q !== 'object' || q === null || typeof r.id !== 'number' || typeof r.op !== 'string') throw new ProtocolError('bad request');
  }
  for (const s of (f.resps as unknown[] | undefined) ?? []) {
    if (typeof s !== 'object' || s === null || typeof (s as RpcResponse).id !== 'number') throw new ProtocolError('bad response');
  }
  return f as unknown as Frame;
}

/**
 * Incremental decoder for one connection's byte stream. `push` returns the complete frames;
 * a malformed or oversized frame throws ProtocolError (the caller closes that connection).
 */
export class FrameDecoder {
  /** Received bytes not yet decoded, oldest first; only the first may be partly consumed. */
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(data: Buffer): Frame[] {
    if (data.length > 0) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < headerBytes) break;
      const bodyBytes = this.readHeader();
      if (bodyBytes > maxFrameBytes) throw new ProtocolError(`frame of ${bodyBytes} bytes exceeds ${maxFrameBytes}`);
      if (bodyBytes === 0) throw new ProtocolError('empty frame');
      if (this.buffered < headerBytes + bodyBytes) break;
      this.skip(headerBytes);
      const body = this.take(bodyBytes);
      let value: unknown;
      try {
        value = packr.unpack(body);
      } catch (err) {
        throw new ProtocolError(`undecodable frame: ${(err as Error).message}`);
      }
      frames.push(validate(value));
    }
    return frames;
  }

  /** The length prefix at the front, which may straddle chunks (read without copying). */
  private readHeader(): number {
    const first = this.chunks[0];
    if (first.length >= headerBytes) return first.readUInt32BE(0);
    let value = 0;
    let got = 0;
    for (const c of this.chunks) {
      for (let i = 0; i < c.length && got < headerBytes; i++, got++) value = value * 256 + c[i];
      if (got === headerBytes) break;
    }
    return value;
  }

  private skip(n: number): void {
    while (n > 0) {
      const first = this.chunks[0];
      if (first.length <= n) {
        this.chunks.shift();
        n -= first.length;
        this.buffered -= first.length;
      } else {
        this.chunks[0] = first.subarray(n);
        this.buffered -= n;
        n = 0;
      }
    }
  }

  /**
   * The next n bytes. A frame inside one chunk is a view of it (payloads decode as views, no
   * copy); one that spans chunks is copied once, and only its own bytes: the tail of the last
   * chunk stays a view for the next frame instead of being copied again with every read.
   */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0];
      const use = Math.min(c.length, n - at);
      c.copy(out, at, 0, use);
      at += use;
      if (use === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    this.buffered -= n;
    return out;
  }
}
