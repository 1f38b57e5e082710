/**
 * The arguments of the requests a node serves on its peer port (StorageNode.serve), checked as
 * they arrive: a peer's frame is input like any other, so every field an op reads is checked
 * here for type and range, and a bad one is refused with INVALID_ARGUMENT naming the op, never
 * passed on. The list of ops is here too, so what tests every op (the fuzz test) reads it.
 */
import { InvalidArgument } from '../common/errors.js';
import { maxImageIdChars, type ImageCursor } from '../store/pg-store.js';
import { maxNodeId, maxPgsPerPool, metadataGroupId, type MapCommand } from './map.js';

/**
 * The PG group id a peer request names, checked as every op that takes one does: a safe
 * integer at or above maxPgsPerPool (group 0 and the values below are no PG).
 */
export function pgGroupArg(g: unknown, op: string): number {
  if (typeof g !== 'number' || !Number.isSafeInteger(g) || g < maxPgsPerPool) throw new InvalidArgument(`${op}: bad group id`);
  return g;
}

/**
 * Every request a node serves on its peer port (StorageNode.serve, whose switch the compiler
 * holds to this list both ways: a case not listed, or a listed op without a case, fails to
 * build), so what tests every op (the fuzz test) reads it from here.
 */
export const peerRequestOps = [
  'io', 'lead', 'join', 'meta', 'removeNode', 'replaceNode', 'resetPg', 'pgReplicaState', 'groupsNaming', 'pgConf', 'pgCompact',
  'pgRebuildCheck', 'pgRepairPoint', 'ping', 'pingNode', 'getMap', 'mapAtLeast', 'snapshotChunk', 'snapshot',
] as const;
export type PeerRequestOp = (typeof peerRequestOps)[number];

/**
 * The node id a peer request, an admin command or a node's own options name: a safe integer in
 * 1..maxNodeId, else INVALID_ARGUMENT saying `what` named it. Only a number is echoed back (a
 * peer's junk is named by its type).
 */
export function nodeIdArg(id: unknown, what: string): number {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1 || id > maxNodeId) {
    throw new InvalidArgument(`${what}: node id must be an integer in 1..${maxNodeId}, got ${typeof id === 'number' ? String(id) : `a value of type ${id === null ? 'null' : typeof id}`}`);
  }
  return id;
}

/** A group id that names group 0 or a PG (pgGroupArg), as the image requests take. */
export function groupArg(g: unknown, op: string): number {
  return g === metadataGroupId ? g : pgGroupArg(g, op);
}

/** A map command a peer forwards: an object (applyCommand checks its fields on every replica alike). */
export function mapCommandArg(cmd: unknown, op: string): MapCommand {
  if (typeof cmd !== 'object' || cmd === null || Array.isArray(cmd)) throw new InvalidArgument(`${op}: the command must be an object`);
  return cmd as MapCommand;
}

/** True for what a peer may send as an index, an offset or a count: a non-negative safe integer. */
export function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** `v` if it is an index (isIndex), else INVALID_ARGUMENT with `refusal` as its message. */
export function indexArg(v: unknown, refusal: string): number {
  if (!isIndex(v)) throw new InvalidArgument(refusal);
  return v;
}

/** Where a later snapshot chunk begins: null for the first, else a volume id and an offset in it. */
export function imageCursorArg(c: unknown): ImageCursor | null {
  if (c === undefined || c === null) return null;
  const { volumeId, offset } = c as Partial<ImageCursor>;
  if (!isIndex(volumeId) || !isIndex(offset)) throw new InvalidArgument('snapshot chunk request: bad cursor');
  return { volumeId, offset };
}

/** The snapshot index a peer's image request must cover: absent (no check), or an index. */
export function snapshotIndexArg(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  return indexArg(v, 'snapshot image request: bad index');
}

/** The image a later snapshot chunk request names (absent from a puller of an earlier version). */
export function imageIdArg(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length > maxImageIdChars) throw new InvalidArgument('snapshot chunk request: bad image id');
  return v;
}
