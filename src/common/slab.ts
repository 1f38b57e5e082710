/**
 * A bump allocator for many small, short-lived buffers of the same lifetime class (Raft entry
 * payloads): pieces are cut from shared chunks instead of each getting an ArrayBuffer of its
 * own. A 4 KiB write's entry is above Node's own pool threshold (half of 8 KiB), so without
 * this every write made one more external ArrayBuffer: allocated with its own malloc, tracked
 * by the garbage collector, visited by every marking (a few percent of a leader's CPU).
 *
 * A chunk lives as long as any piece cut from it: pieces that die roughly in the order they
 * were made (log entries: compacted oldest first) waste at most about one chunk. Pieces
 * larger than `maxPieceBytes` get their own buffer.
 */
import { assert } from './assert.js';

/** Pieces start at multiples of 8 bytes, so typed-array views of them stay aligned. */
const pieceAlignBytes = 8;

export class Slab {
  private chunk: Buffer;
  private usedBytes = 0;

  constructor(
    readonly chunkBytes = 256 * 1024,
    readonly maxPieceBytes = chunkBytes / 4,
  ) {
    assert(maxPieceBytes <= chunkBytes, 'slab pieces must fit in a chunk');
    this.chunk = Buffer.allocUnsafeSlow(chunkBytes);
  }

  /** `bytes` uninitialised bytes that no other piece shares. */
  alloc(bytes: number): Buffer {
    if (bytes > this.maxPieceBytes) return Buffer.allocUnsafeSlow(bytes);
    if (this.usedBytes + bytes > this.chunkBytes) {
      this.chunk = Buffer.allocUnsafeSlow(this.chunkBytes);
      this.usedBytes = 0;
    }
    const piece = this.chunk.subarray(this.usedBytes, this.usedBytes + bytes);
    this.usedBytes = Math.min(this.chunkBytes, this.usedBytes + Math.ceil(bytes / pieceAlignBytes) * pieceAlignBytes);
    return piece;
  }
}
