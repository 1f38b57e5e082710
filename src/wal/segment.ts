import { randomBytes } from 'node:crypto';
import type { BlockFile, BlockIo } from '../io/types.js';
import { encodeSegmentHeader, segmentHeaderBytes } from './format.js';

/** One segment file in use: its identity (seq, salt), limits from its header, where writes go. */
export interface Segment {
  seq: number;
  salt: number;
  path: string;
  file: BlockFile;
  segmentBytes: number;
  maxBatchBytes: number;
  maxBatchesInFlight: number;
  /** Where the next batch goes (header block excluded). */
  writeOffset: number;
  /** Sequence of the first batch written in it, or -1. */
  firstBatchSeq: number;
}

export function newSalt(): number {
  return randomBytes(4).readUInt32LE(0) || 1;
}

/** Writes (durably) a fresh header: a new salt makes everything already in the file stale. */
export async function writeSegmentHeader(io: BlockIo, seg: Segment, scratch: Buffer): Promise<void> {
  seg.salt = newSalt();
  const block = scratch.subarray(0, segmentHeaderBytes);
  encodeSegmentHeader(block, {
    seq: seg.seq,
    salt: seg.salt,
    segmentBytes: seg.segmentBytes,
    maxBatchBytes: seg.maxBatchBytes,
    maxBatchesInFlight: seg.maxBatchesInFlight,
  });
  await seg.file.pwrite(block, 0, true);
  seg.writeOffset = segmentHeaderBytes;
  seg.firstBatchSeq = -1;
}
