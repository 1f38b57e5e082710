/**
 * Codecs of the handshake phase: the server greeting, option headers, option payloads
 * (INFO/GO, LIST/SET_META_CONTEXT) and option replies. Pure functions over Buffers.
 * Parsers of client data never throw: they return a result or an error string, because
 * malformed client input is expected and answered with NBD_REP_ERR_INVALID.
 */
import {
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  NBDMAGIC_HI,
  NBDMAGIC_LO,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_REP_MAGIC_HI,
  NBD_REP_MAGIC_LO,
  maxStringBytes,
} from './protocol.js';

export const SERVER_GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
/** Size (8) + transmission flags (2) + 124 reserved zero bytes. */
export const EXPORT_NAME_REPLY_BYTES = 134;
export const EXPORT_NAME_REPLY_NO_ZEROES_BYTES = 10;

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(SERVER_GREETING_BYTES);
  b.writeUInt32BE(NBDMAGIC_HI, 0);
  b.writeUInt32BE(NBDMAGIC_LO, 4);
  b.writeUInt32BE(IHAVEOPT_HI, 8);
  b.writeUInt32BE(IHAVEOPT_LO, 12);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export interface OptionHeader {
  option: number;
  length: number;
}

/**
 * Parses the 16-byte option header at `off` (caller guarantees 16 bytes).
 * Returns null when the magic is not IHAVEOPT (a protocol violation: hard disconnect).
 */
export function parseOptionHeader(buf: Buffer, off = 0): OptionHeader | null {
  if (buf.readUInt32BE(off) !== IHAVEOPT_HI || buf.readUInt32BE(off + 4) !== IHAVEOPT_LO) return null;
  return { option: buf.readUInt32BE(off + 8), length: buf.readUInt32BE(off + 12) };
}

/** Builds a client option (used by tests and tools; the server only parses). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_BYTES + data.length);
  b.writeUInt32BE(IHAVEOPT_HI, 0);
  b.writeUInt32BE(IHAVEOPT_LO, 4);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_BYTES);
  return b;
}

/** S: reply magic, option, reply type, length, payload. */
export function encodeOptionReply(option: number, replyType: number, payload?: Buffer): Buffer {
  const len = payload ? payload.length : 0;
  const b = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + len);
  b.writeUInt32BE(NBD_REP_MAGIC_HI, 0);
  b.writeUInt32BE(NBD_REP_MAGIC_LO, 4);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (payload) payload.copy(b, OPTION_REPLY_HEADER_BYTES);
  return b;
}

export interface OptionReply {
  option: number;
  replyType: number;
  payload: Buffer;
}

/** Parses one option reply at `off`; returns null if fewer bytes than a whole reply (tests, tools). */
export function parseOptionReply(buf: Buffer, off = 0): { reply: OptionReply; bytes: number } | null {
  if (buf.length - off < OPTION_REPLY_HEADER_BYTES) return null;
  const len = buf.readUInt32BE(off + 16);
  if (buf.length - off < OPTION_REPLY_HEADER_BYTES + len) return null;
  if (buf.readUInt32BE(off) !== NBD_REP_MAGIC_HI || buf.readUInt32BE(off + 4) !== NBD_REP_MAGIC_LO) {
    throw new Error('bad option reply magic');
  }
  return {
    reply: {
      option: buf.readUInt32BE(off + 8),
      replyType: buf.readUInt32BE(off + 12),
      payload: buf.subarray(off + OPTION_REPLY_HEADER_BYTES, off + OPTION_REPLY_HEADER_BYTES + len),
    },
    bytes: OPTION_REPLY_HEADER_BYTES + len,
  };
}

/** S (after NBD_OPT_EXPORT_NAME): size, transmission flags, and 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? EXPORT_NAME_REPLY_NO_ZEROES_BYTES : EXPORT_NAME_REPLY_BYTES);
  writeUInt64BE(b, sizeBytes, 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** NBD_REP_SERVER payload: name length, name, then a human-readable description. */
export function encodeRepServer(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

/** NBD_REP_META_CONTEXT payload: context id, name. */
export function encodeRepMetaContext(contextId: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(contextId, 0);
  n.copy(b, 4);
  return b;
}

/** NBD_REP_INFO payload for NBD_INFO_EXPORT. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  writeUInt64BE(b, sizeBytes, 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

/** NBD_REP_INFO payload for NBD_INFO_NAME or NBD_INFO_DESCRIPTION. */
export function encodeInfoString(infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const t = Buffer.from(text, 'utf8');
  const b = Buffer.alloc(2 + t.length);
  b.writeUInt16BE(infoType, 0);
  t.copy(b, 2);
  return b;
}

/** NBD_REP_INFO payload for NBD_INFO_BLOCK_SIZE. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

export interface InfoRequest {
  exportName: string;
  infoTypes: number[];
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count, 16-bit info types. */
export function parseInfoRequest(data: Buffer): InfoRequest | string {
  if (data.length < 6) return 'option data too short';
  const nameLen = data.readUInt32BE(0);
  if (nameLen > maxStringBytes) return 'export name too long';
  if (data.length < 4 + nameLen + 2) return 'export name length exceeds option data';
  const exportName = decodeString(data, 4, 4 + nameLen);
  if (exportName === null) return 'export name is not valid UTF-8 without NUL';
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 4 + nameLen + 2 + 2 * count) return 'info request count does not match option length';
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(4 + nameLen + 2 + 2 * i));
  return { exportName, infoTypes };
}

export function encodeInfoRequest(exportName: string, infoTypes: number[]): Buffer {
  const n = Buffer.from(exportName, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infoTypes.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infoTypes.length, 4 + n.length);
  infoTypes.forEach((t, i) => b.writeUInt16BE(t, 4 + n.length + 2 + 2 * i));
  return b;
}

export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

/** Most queries accepted in one LIST/SET_META_CONTEXT (each is a string; this bounds work). */
export const maxMetaContextQueries = 128;

/** Parses LIST/SET_META_CONTEXT data: name length, name, query count, (length, query)*. */
export function parseMetaContextRequest(data: Buffer): MetaContextRequest | string {
  if (data.length < 8) return 'option data too short';
  const nameLen = data.readUInt32BE(0);
  if (nameLen > maxStringBytes) return 'export name too long';
  if (data.length < 4 + nameLen + 4) return 'export name length exceeds option data';
  const exportName = decodeString(data, 4, 4 + nameLen);
  if (exportName === null) return 'export name is not valid UTF-8 without NUL';
  let off = 4 + nameLen;
  const count = data.readUInt32BE(off);
  off += 4;
  if (count > maxMetaContextQueries) return 'too many queries';
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (data.length - off < 4) return 'query length exceeds option data';
    const qLen = data.readUInt32BE(off);
    off += 4;
    if (qLen > maxStringBytes || data.length - off < qLen) return 'query length exceeds option data';
    const q = decodeString(data, off, off + qLen);
    if (q === null) return 'query is not valid UTF-8 without NUL';
    queries.push(q);
    off += qLen;
  }
  if (off !== data.length) return 'trailing bytes after queries';
  return { exportName, queries };
}

export function encodeMetaContextRequest(exportName: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(exportName, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const cnt = Buffer.alloc(4);
  cnt.writeUInt32BE(queries.length, 0);
  parts.push(cnt);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}

/** Decodes a protocol string: valid UTF-8, no NUL. Returns null when it is not one. */
export function decodeString(buf: Buffer, start: number, end: number): string | null {
  const slice = buf.subarray(start, end);
  if (slice.includes(0)) return null;
  const s = slice.toString('utf8');
  // A lossy decode (U+FFFD inserted) means the bytes were not valid UTF-8.
  if (s.includes('\uFFFD') && !slice.includes(Buffer.from('\uFFFD', 'utf8'))) return null;
  return s;
}

/** Writes a non-negative safe integer as a big-endian uint64. */
export function writeUInt64BE(b: Buffer, value: number, off: number): void {
  b.writeUInt32BE(Math.floor(value / 0x100000000), off);
  b.writeUInt32BE(value >>> 0, off + 4);
}

/** Reads a big-endian uint64 as a number (exact up to 2^53; larger values stay larger). */
export function readUInt64BE(b: Buffer, off: number): number {
  return b.readUInt32BE(off) * 0x100000000 + b.readUInt32BE(off + 4);
}
