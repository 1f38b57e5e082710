/**
 * The WAL's byte layout. All integers little-endian; u64 fields hold safe integers (< 2^53).
 *
 * Segment header (block 0 of a segment file, 4 KiB, written alone with RWF_DSYNC):
 *   0 magic u32 'RBWS' | 4 version u32 | 8 seq u64 | 16 salt u32 | 20 segmentBytes u32
 *   24 maxBatchBytes u32 | 28 maxBatchesInFlight u32 | 60 crc32c u32 of bytes [0, 60)
 *
 * Batch (4 KiB-aligned, one write):
 *   header 32 bytes: 0 magic u32 'RBWB' | 4 crc32c u32 of bytes [8, 32) | 8 salt u32
 *     12 batchBytes u32 (multiple of 4 KiB, header and padding included) | 16 batchSeq u64
 *     24 recordCount u32 | 28 usedBytes u32 (header + records, before the zero padding)
 *   then records, each 8-byte aligned.
 *
 * Record: header 40 bytes then payload:
 *   0 payloadBytes u32 | 4 crc32c u32 of bytes [8, 40 + payloadBytes), seeded with
 *     recordCrcSeed(salt, batchSeq) so a record left over from an earlier use of the same
 *     bytes never passes | 8 kind u8 | 9 entryType u8 | 10 reserved u16 | 12 groupId u32
 *   16 term u64 | 24 index u64 | 32 aux u64
 */
import { assert } from '../common/assert.js';
import { crc32c } from './crc32c.js';

export const blockBytes = 4096;
export const segmentHeaderBytes = blockBytes;
export const batchHeaderBytes = 32;
export const recordHeaderBytes = 40;
export const segmentMagic = 0x53574252; // 'RBWS'
export const batchMagic = 0x42574252; // 'RBWB'
export const formatVersion = 1;
/** Upper bound on maxBatchesInFlight (recovery's torn-tail window depends on it). */
export const maxBatchesInFlightLimit = 8;

export const enum RecordKind {
  /** A Raft entry: term, index, entryType, payload. */
  Entry = 1,
  /** Hard state: term, index = commit, aux = vote. */
  HardState = 2,
  /** Entries at index and above are gone. */
  Truncate = 3,
  /** Entries at or below index are no longer needed. */
  Checkpoint = 4,
  /** Snapshot at (term, index) installed; clears needs-repair. */
  Snapshot = 5,
  /** A group's whole state, repeated at the start of each segment; payload: metaPayloadBytes. */
  Meta = 6,
}

/** Meta payload: baseIndex u64 | baseTerm u64 | snapIndex u64 | snapTerm u64 | flags u32 | pad u32. */
export const metaPayloadBytes = 40;
export const metaFlagNeedsRepair = 1;

export function writeU64(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32LE(v % 0x100000000, off);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), off + 4);
}

export function readU64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 0x100000000;
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function recordCrcSeed(salt: number, batchSeq: number): number {
  return (salt ^ (batchSeq % 0x100000000)) >>> 0;
}

export interface SegmentHeader {
  seq: number;
  salt: number;
  segmentBytes: number;
  maxBatchBytes: number;
  maxBatchesInFlight: number;
}

export function encodeSegmentHeader(buf: Buffer, h: SegmentHeader): void {
  assert(buf.length >= segmentHeaderBytes, 'segment header buffer too small');
  buf.fill(0, 0, segmentHeaderBytes);
  buf.writeUInt32LE(segmentMagic, 0);
  buf.writeUInt32LE(formatVersion, 4);
  writeU64(buf, 8, h.seq);
  buf.writeUInt32LE(h.salt >>> 0, 16);
  buf.writeUInt32LE(h.segmentBytes, 20);
  buf.writeUInt32LE(h.maxBatchBytes, 24);
  buf.writeUInt32LE(h.maxBatchesInFlight, 28);
  buf.writeUInt32LE(crc32c(buf, 0, 60), 60);
}

/** The header, or a reason it is not one. */
export function decodeSegmentHeader(buf: Buffer): SegmentHeader | string {
  if (buf.length < segmentHeaderBytes) return 'short header';
  if (buf.readUInt32LE(0) !== segmentMagic) return 'bad magic';
  if (buf.readUInt32LE(60) !== crc32c(buf, 0, 60)) return 'header checksum mismatch';
  if (buf.readUInt32LE(4) !== formatVersion) return `unknown version ${buf.readUInt32LE(4)}`;
  const h = {
    seq: readU64(buf, 8),
    salt: buf.readUInt32LE(16),
    segmentBytes: buf.readUInt32LE(20),
    maxBatchBytes: buf.readUInt32LE(24),
    maxBatchesInFlight: buf.readUInt32LE(28),
  };
  if (h.segmentBytes % blockBytes || h.maxBatchBytes % blockBytes || h.maxBatchesInFlight < 1 || h.maxBatchesInFlight > maxBatchesInFlightLimit)
    return 'header fields out of range';
  return h;
}

export interface BatchHeader {
  salt: number;
  batchBytes: number;
  batchSeq: number;
  recordCount: number;
  usedBytes: number;
}

export function encodeBatchHeader(buf: Buffer, off: number, h: BatchHeader): void {
  buf.writeUInt32LE(batchMagic, off);
  buf.writeUInt32LE(h.salt >>> 0, off + 8);
  buf.writeUInt32LE(h.batchBytes, off + 12);
  writeU64(buf, off + 16, h.batchSeq);
  buf.writeUInt32LE(h.recordCount, off + 24);
  buf.writeUInt32LE(h.usedBytes, off + 28);
  buf.writeUInt32LE(crc32c(buf, off + 8, off + batchHeaderBytes), off + 4);
}

/**
 * The batch header at `off` if it is one of this segment incarnation's (magic, checksum, salt,
 * sane sizes), else null. `limitBytes` is where the segment ends.
 */
export function decodeBatchHeader(buf: Buffer, off: number, salt: number, limitBytes: number, maxBatchBytes: number): BatchHeader | null {
  if (off + batchHeaderBytes > buf.length) return null;
  if (buf.readUInt32LE(off) !== batchMagic) return null;
  if (buf.readUInt32LE(off + 4) !== crc32c(buf, off + 8, off + batchHeaderBytes)) return null;
  if (buf.readUInt32LE(off + 8) !== salt >>> 0) return null;
  const h = {
    salt,
    batchBytes: buf.readUInt32LE(off + 12),
    batchSeq: readU64(buf, off + 16),
    recordCount: buf.readUInt32LE(off + 24),
    usedBytes: buf.readUInt32LE(off + 28),
  };
  if (h.batchBytes === 0 || h.batchBytes % blockBytes || h.batchBytes > maxBatchBytes || off + h.batchBytes > limitBytes) return null;
  if (h.usedBytes < batchHeaderBytes || h.usedBytes > h.batchBytes) return null;
  return h;
}

/** True when the 32 bytes at `off` are all zero (never-written space). */
export function isZeroHeader(buf: Buffer, off: number): boolean {
  for (let i = off; i < off + batchHeaderBytes && i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Bytes a record with this payload occupies in a batch (8-byte aligned). */
export function recordSpanBytes(payloadBytes: number): number {
  return alignUp(recordHeaderBytes + payloadBytes, 8);
}

/**
 * Writes one record at `off` (payload already copied to off + recordHeaderBytes, or copied
 * here from `payload`). Returns the offset after it.
 */
export function encodeRecord(
  buf: Buffer,
  off: number,
  seed: number,
  kind: RecordKind,
  entryType: number,
  groupId: number,
  term: number,
  index: number,
  aux: number,
  payload: Uint8Array | null,
  payloadBytes: number,
): number {
  buf.writeUInt32LE(payloadBytes, off);
  buf[off + 8] = kind;
  buf[off + 9] = entryType;
  buf.writeUInt16LE(0, off + 10);
  buf.writeUInt32LE(groupId, off + 12);
  writeU64(buf, off + 16, term);
  writeU64(buf, off + 24, index);
  writeU64(buf, off + 32, aux);
  if (payload) buf.set(payload, off + recordHeaderBytes);
  const end = off + recordHeaderBytes + payloadBytes;
  buf.writeUInt32LE(crc32c(buf, off + 8, end, seed), off + 4);
  const span = alignUp(end, 8);
  if (span > end) buf.fill(0, end, span);
  return span;
}

/** A decoded record; `payloadOffset` points into the buffer it was decoded from. */
export interface RecordView {
  kind: number;
  entryType: number;
  groupId: number;
  term: number;
  index: number;
  aux: number;
  payloadOffset: number;
  payloadBytes: number;
  /** Offset of the next record. */
  next: number;
}

/**
 * Decodes the record at `off` (which must end by `end`). Returns a reason string when the
 * record is malformed or fails its checksum; `out` is filled either way as far as known.
 */
export function decodeRecord(buf: Buffer, off: number, end: number, seed: number, out: RecordView): string | null {
  if (off + recordHeaderBytes > end) return 'record header past the batch end';
  const payloadBytes = buf.readUInt32LE(off);
  out.kind = buf[off + 8];
  out.entryType = buf[off + 9];
  out.groupId = buf.readUInt32LE(off + 12);
  out.term = readU64(buf, off + 16);
  out.index = readU64(buf, off + 24);
  out.aux = readU64(buf, off + 32);
  out.payloadOffset = off + recordHeaderBytes;
  out.payloadBytes = payloadBytes;
  out.next = alignUp(off + recordHeaderBytes + payloadBytes, 8);
  if (off + recordHeaderBytes + payloadBytes > end) return 'record length past the batch end';
  if (buf.readUInt32LE(off + 4) !== crc32c(buf, off + 8, off + recordHeaderBytes + payloadBytes, seed)) return 'record checksum mismatch';
  if (out.kind < RecordKind.Entry || out.kind > RecordKind.Meta) return `unknown record kind ${out.kind}`;
  return null;
}

export function newRecordView(): RecordView {
  return { kind: 0, entryType: 0, groupId: 0, term: 0, index: 0, aux: 0, payloadOffset: 0, payloadBytes: 0, next: 0 };
}

export function segmentFileName(seq: number): string {
  return seq.toString(16).padStart(16, '0') + '.wal';
}

export function parseSegmentFileName(name: string): number | undefined {
  const m = /^([0-9a-f]{16})\.wal$/.exec(name);
  return m ? parseInt(m[1], 16) : undefined;
}
