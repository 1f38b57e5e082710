/**
 * Transmission-phase reply codecs: simple replies, structured reply chunks (OFFSET_DATA,
 * OFFSET_HOLE, BLOCK_STATUS, ERROR, ERROR_OFFSET, NONE) and a reply parser for tests/tools.
 * Encoders write into a caller-provided buffer at an offset so the server can pack the headers
 * of one read reply into a single small allocation.
 */
import {
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_HEADER_BYTES,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_HEADER_BYTES,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './protocol.js';
import { readUInt64BE, writeUInt64BE } from './option-codec.js';

/** OFFSET_DATA chunk header plus its 8-byte offset field (the data follows). */
export const OFFSET_DATA_PREFIX_BYTES = NBD_STRUCTURED_REPLY_HEADER_BYTES + 8;
/** A whole OFFSET_HOLE chunk. */
export const OFFSET_HOLE_CHUNK_BYTES = NBD_STRUCTURED_REPLY_HEADER_BYTES + 12;

export function writeSimpleReply(b: Buffer, off: number, error: number, handleHi: number, handleLo: number): number {
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, off);
  b.writeUInt32BE(error, off + 4);
  b.writeUInt32BE(handleHi, off + 8);
  b.writeUInt32BE(handleLo, off + 12);
  return off + NBD_SIMPLE_REPLY_HEADER_BYTES;
}

export function writeChunkHeader(
  b: Buffer,
  off: number,
  flags: number,
  type: number,
  handleHi: number,
  handleLo: number,
  payloadBytes: number,
): number {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, off);
  b.writeUInt16BE(flags, off + 4);
  b.writeUInt16BE(type, off + 6);
  b.writeUInt32BE(handleHi, off + 8);
  b.writeUInt32BE(handleLo, off + 12);
  b.writeUInt32BE(payloadBytes, off + 16);
  return off + NBD_STRUCTURED_REPLY_HEADER_BYTES;
}

/** Header + offset of an OFFSET_DATA chunk carrying `dataBytes` bytes (which the caller sends next). */
export function writeOffsetDataPrefix(
  b: Buffer,
  off: number,
  done: boolean,
  handleHi: number,
  handleLo: number,
  dataOffset: number,
  dataBytes: number,
): number {
  off = writeChunkHeader(b, off, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA, handleHi, handleLo, 8 + dataBytes);
  writeUInt64BE(b, dataOffset, off);
  return off + 8;
}

export function writeOffsetHole(
  b: Buffer,
  off: number,
  done: boolean,
  handleHi: number,
  handleLo: number,
  holeOffset: number,
  holeBytes: number,
): number {
  off = writeChunkHeader(b, off, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_HOLE, handleHi, handleLo, 12);
  writeUInt64BE(b, holeOffset, off);
  b.writeUInt32BE(holeBytes, off + 8);
  return off + 12;
}

export function writeNoneChunk(b: Buffer, off: number, handleHi: number, handleLo: number): number {
  return writeChunkHeader(b, off, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handleHi, handleLo, 0);
}

/** A final ERROR chunk (or ERROR_OFFSET when `errorOffset` is given) with a message. */
export function encodeErrorChunk(handleHi: number, handleLo: number, error: number, message: string, errorOffset?: number): Buffer {
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > 4096) msg = msg.subarray(0, 4096);
  const withOffset = errorOffset !== undefined;
  const payloadBytes = 6 + msg.length + (withOffset ? 8 : 0);
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  let off = writeChunkHeader(
    b,
    0,
    NBD_REPLY_FLAG_DONE,
    withOffset ? NBD_REPLY_TYPE_ERROR_OFFSET : NBD_REPLY_TYPE_ERROR,
    handleHi,
    handleLo,
    payloadBytes,
  );
  b.writeUInt32BE(error, off);
  b.writeUInt16BE(msg.length, off + 4);
  msg.copy(b, off + 6);
  off += 6 + msg.length;
  if (withOffset) writeUInt64BE(b, errorOffset, off);
  return b;
}

export interface StatusDescriptor {
  length: number;
  flags: number;
}

/** A final BLOCK_STATUS chunk for one context. */
export function encodeBlockStatusChunk(handleHi: number, handleLo: number, contextId: number, descriptors: readonly StatusDescriptor[]): Buffer {
  const payloadBytes = 4 + 8 * descriptors.length;
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  let off = writeChunkHeader(b, 0, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, handleHi, handleLo, payloadBytes);
  b.writeUInt32BE(contextId, off);
  off += 4;
  for (const d of descriptors) {
    b.writeUInt32BE(d.length, off);
    b.writeUInt32BE(d.flags, off + 4);
    off += 8;
  }
  return b;
}

// ---- Parsing (clients: tests and tools) ------------------------------------------------------

export type ParsedReply =
  | { kind: 'simple'; error: number; handleHi: number; handleLo: number; bytes: number }
  | {
      kind: 'chunk';
      flags: number;
      type: number;
      handleHi: number;
      handleLo: number;
      payload: Buffer;
      bytes: number;
    };

/**
 * Parses one reply at `off`. A simple reply is only its 16-byte header (the caller knows
 * whether READ data follows). Returns null when more bytes are needed; throws on bad magic.
 */
export function parseReply(buf: Buffer, off = 0): ParsedReply | null {
  if (buf.length - off < 4) return null;
  const magic = buf.readUInt32BE(off);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) {
    if (buf.length - off < NBD_SIMPLE_REPLY_HEADER_BYTES) return null;
    return {
      kind: 'simple',
      error: buf.readUInt32BE(off + 4),
      handleHi: buf.readUInt32BE(off + 8),
      handleLo: buf.readUInt32BE(off + 12),
      bytes: NBD_SIMPLE_REPLY_HEADER_BYTES,
    };
  }
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
    if (buf.length - off < NBD_STRUCTURED_REPLY_HEADER_BYTES) return null;
    const len = buf.readUInt32BE(off + 16);
    if (buf.length - off < NBD_STRUCTURED_REPLY_HEADER_BYTES + len) return null;
    return {
      kind: 'chunk',
      flags: buf.readUInt16BE(off + 4),
      type: buf.readUInt16BE(off + 6),
      handleHi: buf.readUInt32BE(off + 8),
      handleLo: buf.readUInt32BE(off + 12),
      payload: buf.subarray(off + NBD_STRUCTURED_REPLY_HEADER_BYTES, off + NBD_STRUCTURED_REPLY_HEADER_BYTES + len),
      bytes: NBD_STRUCTURED_REPLY_HEADER_BYTES + len,
    };
  }
  throw new Error(`bad reply magic 0x${magic.toString(16)}`);
}

/** Decodes an OFFSET_DATA / OFFSET_HOLE / ERROR* / BLOCK_STATUS payload (tests and tools). */
export function decodeChunkPayload(type: number, p: Buffer):
  | { type: 'data'; offset: number; data: Buffer }
  | { type: 'hole'; offset: number; length: number }
  | { type: 'error'; error: number; message: string; offset?: number }
  | { type: 'block-status'; contextId: number; descriptors: StatusDescriptor[] }
  | { type: 'none' } {
  switch (type) {
    case NBD_REPLY_TYPE_OFFSET_DATA:
      return { type: 'data', offset: readUInt64BE(p, 0), data: p.subarray(8) };
    case NBD_REPLY_TYPE_OFFSET_HOLE:
      return { type: 'hole', offset: readUInt64BE(p, 0), length: p.readUInt32BE(8) };
    case NBD_REPLY_TYPE_ERROR:
    case NBD_REPLY_TYPE_ERROR_OFFSET: {
      const mlen = p.readUInt16BE(4);
      const message = p.subarray(6, 6 + mlen).toString('utf8');
      if (type === NBD_REPLY_TYPE_ERROR) return { type: 'error', error: p.readUInt32BE(0), message };
      return { type: 'error', error: p.readUInt32BE(0), message, offset: readUInt64BE(p, 6 + mlen) };
    }
    case NBD_REPLY_TYPE_BLOCK_STATUS: {
      const descriptors: StatusDescriptor[] = [];
      for (let o = 4; o + 8 <= p.length; o += 8) descriptors.push({ length: p.readUInt32BE(o), flags: p.readUInt32BE(o + 4) });
      return { type: 'block-status', contextId: p.readUInt32BE(0), descriptors };
    }
    default:
      return { type: 'none' };
  }
}
