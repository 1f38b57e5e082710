/**
 * The PG state machine's commands, as they travel through the Raft log. A fixed 24-byte
 * header, then (for writes only) the payload. TRIM and WRITE_ZEROES are ranges: no zero-filled
 * payload ever enters the log.
 *
 *   0  u8   op (1 write, 2 trim, 3 zero, 4 zero keeping allocation, 5 discard from), + 0x80
 *           with an offset of 256 TiB or more
 *   1  u8   byte offset within the volume, bits 48-55 (0 below 256 TiB)
 *   2  u32  volume id
 *   6  u48  byte offset within the volume, bits 0-47
 *  12  u32  length in bytes
 *  16  u32  request session (0 = none): a gateway process's random id
 *  20  u32  request sequence within the session
 *  24  ...  data (write only; exactly `length` bytes)
 *
 * (session, sequence) names one client request however many times the gateway proposes it:
 * a retry after an unknown outcome (timeout, lost leader) may commit twice, and the state
 * machine applies only the first (see PgStore), so a write never takes effect twice.
 *
 * Discard from (5): every byte of the volume at or past the offset that the replica holds
 * becomes a hole, however far the volume reaches (a shrink's discard, one command per PG rather
 * than one per extent: see StorageNode.discardPastEnd). Its offset is 4 KiB-aligned (a volume's
 * size is) and its length 0. It carries a request id, as every client mutation does, and for
 * the same reason: a snapshot image is read after its index, so it may hold this command's
 * effect and the writes after it (the volume grown back and written), and the replay after an
 * install skips what the image's request keys name; a keyless discard would be applied again
 * there, over those writes. A node of an earlier version refuses op 5 as an unknown op and
 * stops, as for any command it does not know (see StoreOpsLevel).
 */
import { Corruption } from '../common/errors.js';
import { Slab } from '../common/slab.js';
import { maxRequestSession, requestKey, type RequestId } from '../common/request-id.js';

export const OpKind = { Write: 1, Trim: 2, Zero: 3, ZeroNoHole: 4, DiscardFrom: 5 } as const;
export type OpKind = (typeof OpKind)[keyof typeof OpKind];

export const opHeaderBytes = 24;
/**
 * The store commands a build applies, as a level each node tells its peers on every frame
 * (Frame.s): 1, ops 1-4 at offsets below 256 TiB; 2, also offsets at or past it (the far-offset
 * flag); 3, also discard-from (op 5). A node meeting a command it does not know stops (and
 * again at every restart that replays it), so a leader proposes a command of a level only once
 * every replica's node told at least that level (StoreOpsLevels.requireForRequest): during a rolling
 * upgrade such a command is refused, nothing stops. Adding a replica is gated too: a new one is
 * sent the leader's image and the log after it, so the leader adds it only once its node told
 * the level of every command in its log and of its data (PgMover storeOpsHold:
 * storeOpsLevelOfCommand, PgStore.filesMayReach); until then the move waits.
 */
export const StoreOpsLevel = { Base: 1, FarOffsets: 2, DiscardFrom: 3 } as const;
/** This build's level. */
export const storeOpsLevel = StoreOpsLevel.DiscardFrom;
/**
 * The largest level a node may tell (Frame.s), and so the largest one a node keeps of a peer
 * (peer-levels-file.ts) or shows (admin-answers.ts checkNodeStatus): one bound for all three, so a level a
 * frame may carry is never one a file or a status answer refuses.
 */
export const maxStoreOpsLevel = 0xffff;

/** The level a write, trim or zero of [offset, offset + length) needs. */
export function storeOpsLevelOfRange(offset: number, length: number): number {
  return offset + length > low48 ? StoreOpsLevel.FarOffsets : StoreOpsLevel.Base;
}

/**
 * The level a Raft log entry of a PG needs of a replica that replays it: its command's (read
 * from the header only, by decodeOp: the payload untouched), Base for an empty entry (a
 * leader's no-op). A membership change is not a store command: the caller passes only normal
 * entries. A header this build cannot read is Corruption (it came from our own log).
 */
export function storeOpsLevelOfCommand(entry: Uint8Array): number {
  if (entry.byteLength === 0) return StoreOpsLevel.Base;
  const op = decodeOp(entry, true);
  if (op.kind === OpKind.DiscardFrom) return StoreOpsLevel.DiscardFrom;
  // As the proposal's gate judges it: by the range's end, so a range that starts below
  // 256 TiB and ends past it counts too.
  return storeOpsLevelOfRange(op.offset, op.length);
}

/** A discard-from command's offset is a multiple of this (a volume's size is: map.ts). */
export const discardFromAlignmentBytes = 4096;
/**
 * Volume offsets a command can carry: up to 2^53 (exact numbers), in 56 bits. The byte above
 * the 48-bit field was reserved (always 0), so every command below 256 TiB is written as
 * before. One at or past it also sets farOffsetFlag in its op byte: a node of an earlier
 * version, which ignores the reserved byte, refuses the command as an unknown op (and stops)
 * instead of applying it 256 TiB lower, over another block. Volumes go to 1 PiB (2^50).
 */
const maxOpEnd = Number.MAX_SAFE_INTEGER;
const low48 = 2 ** 48;
/** The first byte offset only StoreOpsLevel.FarOffsets reaches (256 TiB): data there needs it. */
export const farOffsetsFromBytes = low48;
const farOffsetFlag = 0x80;
/** Largest range one command may cover (a piece never spans an extent). */
export const maxOpLengthBytes = 64 * 1024 * 1024;

export interface StoreOp {
  kind: OpKind;
  volumeId: number;
  offset: number;
  length: number;
  /** Write payload (a view into the entry; not copied). */
  data: Uint8Array | undefined;
  /** session·2^32 + sequence, or 0 when the command carries no request id. */
  requestKey: number;
}

/** Write commands live in the Raft log until it is compacted: cut from shared chunks. */
const writeCommandSlab = new Slab();

export function encodeWrite(volumeId: number, offset: number, data: Uint8Array, id?: RequestId): Buffer {
  const out = writeCommandSlab.alloc(opHeaderBytes + data.length);
  writeHeader(out, OpKind.Write, volumeId, offset, data.length, id);
  out.set(data, opHeaderBytes);
  return out;
}

export function encodeRange(kind: OpKind, volumeId: number, offset: number, length: number, id?: RequestId): Buffer {
  const out = Buffer.allocUnsafe(opHeaderBytes);
  writeHeader(out, kind, volumeId, offset, length, id);
  return out;
}

/** Discard every byte of `volumeId` at or past `offset` (aligned), on the replica applying it. */
export function encodeDiscardFrom(volumeId: number, offset: number, id: RequestId): Buffer {
  if (offset % discardFromAlignmentBytes !== 0) throw new RangeError(`discard-from offset ${offset} is not a multiple of ${discardFromAlignmentBytes}`);
  const out = Buffer.allocUnsafe(opHeaderBytes);
  writeHeader(out, OpKind.DiscardFrom, volumeId, offset, 0, id);
  return out;
}

function writeHeader(out: Buffer, kind: OpKind, volumeId: number, offset: number, length: number, id: RequestId | undefined): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > maxOpEnd) throw new RangeError(`store op offset ${offset} out of range`);
  out.writeUInt8(offset >= low48 ? kind | farOffsetFlag : kind, 0);
  out.writeUInt8(Math.floor(offset / low48), 1);
  out.writeUInt32BE(volumeId, 2);
  out.writeUIntBE(offset % low48, 6, 6);
  out.writeUInt32BE(length, 12);
  const session = id?.session ?? 0;
  if (session < 0 || session > maxRequestSession) throw new RangeError(`request session ${session} out of range`);
  out.writeUInt32BE(session, 16);
  out.writeUInt32BE(id?.seq ?? 0, 20);
}

/**
 * Decodes a command; a malformed one is Corruption (it came from our own log). `headerOnly`:
 * the header alone is read and checked (the payload, if any, neither checked nor returned).
 */
export function decodeOp(entry: Uint8Array, headerOnly = false): StoreOp {
  if (entry.byteLength < opHeaderBytes) throw new Corruption(`store op of ${entry.byteLength} bytes is shorter than its header`);
  const b = Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength);
  const opByte = b.readUInt8(0);
  const far = (opByte & farOffsetFlag) !== 0;
  const kind = (opByte & ~farOffsetFlag) as OpKind;
  if (kind < OpKind.Write || kind > OpKind.DiscardFrom) throw new Corruption(`unknown store op ${opByte}`);
  const volumeId = b.readUInt32BE(2);
  const high = b.readUInt8(1);
  if (far !== high > 0) throw new Corruption(`store op's far-offset flag ${far} disagrees with its offset's high byte ${high}`);
  const offset = high * low48 + b.readUIntBE(6, 6);
  const length = b.readUInt32BE(12);
  const session = b.readUInt32BE(16);
  if (session > maxRequestSession) throw new Corruption(`request session ${session} out of range`);
  const key = session === 0 ? 0 : requestKey(session, b.readUInt32BE(20));
  if (length > maxOpLengthBytes) throw new Corruption(`store op length ${length} too large`);
  if (offset + length > maxOpEnd) throw new Corruption(`store op range ${offset}+${length} past ${maxOpEnd}`);
  let data: Uint8Array | undefined;
  if (!headerOnly) {
    if (kind === OpKind.Write) {
      if (b.length !== opHeaderBytes + length) throw new Corruption(`write op carries ${b.length - opHeaderBytes} bytes, header says ${length}`);
      data = b.subarray(opHeaderBytes);
    } else if (b.length !== opHeaderBytes) {
      throw new Corruption('range op carries a payload');
    }
  }
  if (kind === OpKind.DiscardFrom) {
    if (length !== 0) throw new Corruption(`discard-from op has length ${length}, not 0`);
    if (offset % discardFromAlignmentBytes !== 0) throw new Corruption(`discard-from op offset ${offset} is not a multiple of ${discardFromAlignmentBytes}`);
  }
  return { kind, volumeId, offset, length, data, requestKey: key };
}
