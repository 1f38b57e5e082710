/**
 * Splitting an NBD request into pieces that each live in one PG: at extent boundaries (an
 * extent belongs to exactly one PG) and at `maxPieceBytes` (one Raft entry per piece, small
 * enough for one WAL record and one MsgApp).
 */
import { assert } from '../common/assert.js';
import { findPool, locateExtent, pgGroupId, pgOfExtent, type ClusterMap, type Volume } from '../cluster/map.js';

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

/**
 * The PGs of `volume`'s pool that may hold bytes of [from, to): those of its extents when they
 * are fewer than the pool's PGs, else every PG. Its cost is bounded by the PG count, whatever
 * the range (volumes go to 1 PiB): for a shrink's discard, one command per PG.
 */
export function pgsOfRange(map: ClusterMap, volume: Volume, from: number, to: number): { groupId: number; replicas: number[] }[] {
  assert(Number.isSafeInteger(from) && Number.isSafeInteger(to) && from >= 0, `range [${from}, ${to}) of volume ${volume.name}`);
  const pool = findPool(map, volume.pool);
  if (to <= from) return [];
  const firstExtent = Math.floor(from / volume.extentBytes);
  const lastExtent = Math.floor((to - 1) / volume.extentBytes);
  let indexes: number[];
  if (lastExtent - firstExtent + 1 < pool.pgCount) {
    const seen = new Set<number>();
    for (let e = firstExtent; e <= lastExtent; e++) seen.add(pgOfExtent(volume.id, e, pool.pgCount));
    indexes = [...seen].sort((a, b) => a - b);
  } else {
    indexes = Array.from({ length: pool.pgCount }, (_, i) => i);
  }
  return indexes.map((i) => ({ groupId: pgGroupId(pool.id, i), replicas: pool.pgs[i].replicas }));
}
