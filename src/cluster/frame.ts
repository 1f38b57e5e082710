/**
 * Peer wire framing: a 4-byte big-endian length, then one msgpackr-encoded `Frame`.
 * A frame carries everything queued for one destination since the last flush: Raft messages
 * of every group, forwarded requests and their responses. Each frame names its sender and
 * the sender's map epoch (fencing), so a receiver can refuse or catch up.
 */
import { Packr } from 'msgpackr';
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

export interface Frame {
  /** Sender node id. */
  from: string;
  /** Sender's listen address (HOST:PORT), so a receiver can dial back after a restart. */
  addr: string;
  /** Sender's cluster map epoch. */
  epoch: number;
  msgs?: GroupMessage[];
  reqs?: RpcRequest[];
  resps?: RpcResponse[];
}

const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false });

/** Encodes a frame with its length prefix. */
export function encodeFrame(frame: Frame): Buffer {
  const body = packr.pack(frame);
  if (body.length > maxFrameBytes) throw new ProtocolError(`frame of ${body.length} bytes exceeds ${maxFrameBytes}`);
  const out = Buffer.allocUnsafe(headerBytes + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, headerBytes);
  return out;
}

function validate(value: unknown): Frame {
  if (typeof value !== 'object' || value === null) throw new ProtocolError('frame is not a map');
  const f = value as Record<string, unknown>;
  if (typeof f.from !== 'string' || f.from.length === 0 || f.from.length > 256) throw new ProtocolError('frame.from must be a node id');
  if (typeof f.addr !== 'string' || f.addr.length > 300) throw new ProtocolError('frame.addr must be a string');
  if (typeof f.epoch !== 'number' || !Number.isSafeInteger(f.epoch) || f.epoch < 0) throw new ProtocolError('frame.epoch must be a non-negative integer');
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
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(data: Buffer): Frame[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < headerBytes) break;
      const head = this.peek(headerBytes);
      const bodyBytes = head.readUInt32BE(0);
      if (bodyBytes > maxFrameBytes) throw new ProtocolError(`frame of ${bodyBytes} bytes exceeds ${maxFrameBytes}`);
      if (bodyBytes === 0) throw new ProtocolError('empty frame');
      if (this.buffered < headerBytes + bodyBytes) break;
      const whole = this.take(headerBytes + bodyBytes);
      let value: unknown;
      try {
        value = packr.unpack(whole.subarray(headerBytes));
      } catch (err) {
        throw new ProtocolError(`undecodable frame: ${(err as Error).message}`);
      }
      frames.push(validate(value));
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}
