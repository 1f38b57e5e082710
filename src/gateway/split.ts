/**
 * Splitting an NBD request into pieces that each live in one PG: at extent boundaries (an
 * extent belongs to exactly one PG) and at `maxPieceBytes` (one Raft entry per piece, small
 * enough for one WAL record and one MsgApp).
 */
import { assert } from '../common/assert.js';
import { locateExtent, type ClusterMap, type Volume } from '../cluster/map.js';

/** Largest byte range one piece (one Raft entry) carries. */
export const maxPieceBytes = 512 * 1024;

export interface Piece {
  /** Byte offset within the volume. */
  offset: number;
  length: number;
  /** Offset of this piece within the request's buffer. */
  bufferOffset: number;
  groupId: number;
  replicas: number[];
}

/** The pieces of [offset, offset + length) of `volume`, in order, covering it exactly. */
export function splitRange(map: ClusterMap, volume: Volume, offset: number, length: number, pieceBytes = maxPieceBytes): Piece[] {
  assert(offset >= 0 && length >= 0 && offset + length <= volume.sizeBytes, `range ${offset}+${length} outside volume ${volume.name}`);
  const out: Piece[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const loc = locateExtent(map, volume, pos);
    const extentEnd = (loc.extentIndex + 1) * volume.extentBytes;
    const stop = Math.min(end, extentEnd, pos + pieceBytes);
    out.push({ offset: pos, length: stop - pos, bufferOffset: pos - offset, groupId: loc.groupId, replicas: loc.replicas });
    pos = stop;
  }
  return out;
}
