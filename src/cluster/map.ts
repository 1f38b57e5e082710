/**
 * The cluster map and the command state machine that Raft group 0 applies.
 *
 * The map holds the nodes (addresses, labels, weight, state), the pools (replication factor,
 * PG count, failure-domain level) with every PG's replica set, and the volumes. `epoch` is
 * bumped by every command that changes anything; requests and Raft messages carry it so that
 * stale senders can be refused (fencing).
 *
 * `applyCommand(map, command)` is pure and deterministic: the same map and command give the same
 * result on every node (no clock, no randomness, no I/O; placement uses only integer hashing).
 * It never mutates its input; a rejected command returns a typed error and leaves the map (and
 * its epoch) as it was. The map is plain data (arrays and objects, no Map/Set/class), so it
 * round-trips through msgpackr (`encodeMap` / `decodeMap`, for group-0 snapshots) and JSON
 * (the admin HTTP API).
 *
 * The cluster id (`clusterId`) names the cluster: made up once by the node that founded it (or,
 * for a cluster from before ids, by group 0's leader on its first start; see node.ts) and set
 * by `setClusterId`, which no command changes afterwards. Peers of another cluster are refused.
 *
 * For the node process and the gateway:
 * - Raft group ids: group 0 is this map; PG `i` of pool `p` is group `pgGroupId(p, i)`
 *   (= p * maxPgsPerPool + i; pool ids start at 1, so no PG is group 0). `pgOfGroup` inverts it.
 * - Which extent lives where: extent `e` of volume `v` (bytes [e·extentBytes, (e+1)·extentBytes))
 *   belongs to PG `pgOfExtent(v.id, e, pool.pgCount)` of the volume's pool; `locateExtent` does
 *   the whole lookup. Volume ids are never reused, so a new volume never sees a deleted one's
 *   extents (their data may be collected lazily).
 * - Which groups a node hosts: `groupsOfNode(map, nodeId)`; the replicas of a PG are
 *   `pool.pgs[i].replicas`, strongest placement draw first (a good initial leader).
 * - When a node is added or removed, placement of every pool is recomputed; a PG whose replica
 *   set changed has `pgs[i].sinceEpoch` = the new epoch, and its Raft membership must move to the
 *   new replica set (add the new member as a learner, catch up, then swap).
 */
import { Packr } from 'msgpackr';
import { parseHostPort } from '../common/address.js';
import { assert } from '../common/assert.js';
import { maxRequestSession, requestKey, requestSeqLimit, type RequestId } from '../common/request-id.js';
import { AlreadyExists, InvalidArgument, NodeHoldsReplicas, NodeRemoved, NodeStillIn, NotFound, PgNotLost, RaftblockError } from '../common/errors.js';
import {
  PlacementImpossible,
  PlacementTree,
  failureDomainLevels,
  hash3,
  nodeDomains,
  pgKey,
  type FailureDomain,
  type NodeId,
  type PlacementNode,
} from './placement.js';

export type { FailureDomain, NodeId } from './placement.js';
export { PlacementImpossible } from './placement.js';

// ---------------------------------------------------------------------------------------------
// Limits

/** Group ids reserve this many PGs per pool: group id = poolId · maxPgsPerPool + pg index. */
export const maxPgsPerPool = 65536;
export const maxReplicas = 7;
/** Node ids are 1..maxNodeId: placement keeps them in an Int32Array (placement.ts). */
export const maxNodeId = 0x7fffffff;
export const metadataGroupId = 0;
/** Volumes are addressed in whole NBD blocks. */
export const volumeAlignmentBytes = 4096;
/** 2^50 bytes: keeps every byte offset an exact JavaScript number with room to spare. */
export const maxVolumeBytes = 2 ** 50;
export const minExtentBytes = 64 * 1024;
export const maxExtentBytes = 1024 * 1024 * 1024;
export const defaultExtentBytes = 4 * 1024 * 1024;
export const defaultPoolName = 'default';
export const defaultNodeWeight = 1;
const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const labelPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A cluster id: a UUID as made (crypto.randomUUID), any 1-64 letters, digits and '-' accepted. */
const clusterIdPattern = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
/** A node incarnation: hex digits made up when a data dir is first used (see NodeInfo). */
const incarnationPattern = /^[0-9a-f]{8,64}$/;
/** Labels that place a node in the fault-domain tree; others are kept but not used for placement. */
export const domainLabels = ['zone', 'rack', 'host'] as const;

// ---------------------------------------------------------------------------------------------
// The map

export interface NodeAddresses {
  /** HOST:PORT of the node-to-node transport (Raft messages, forwarded I/O). */
  peer: string;
  /** HOST:PORT of the NBD server (every node is a gateway). */
  nbd: string;
  /** HOST:PORT of the HTTP server (admin API, /metrics, /healthz). */
  http: string;
}

/** `in`: holds replicas as its weight says. `out`: holds none (draining before removal). */
export type NodeState = 'in' | 'out';

export interface NodeInfo {
  id: NodeId;
  addresses: NodeAddresses;
  labels: Record<string, string>;
  weight: number;
  state: NodeState;
  /**
   * The data dir behind this id, made up when that dir was first used (node.json). A node
   * whose incarnation differs is another data dir claiming the id (a wiped or replaced disk,
   * or a fresh node reusing a removed node's id while the old one still runs): group 0 does
   * not let it register, and peers refuse its frames, so an empty replica never votes or
   * acknowledges as the member that held the data. Not an authentication: the map is no
   * secret. Absent only in entries written before incarnations existed, and while the node
   * is being replaced.
   */
  incarnation?: string;
  /**
   * Set by `replaceNode` (the node's data dir was lost) until a data dir registers under the
   * id: that registration is taken whatever its incarnation and addresses.
   */
  replacing?: true;
  /**
   * The epoch of the node's last `replaceNode`: its replicas of PGs placed on it at or before
   * that epoch were lost with the old data dir, so the node that took the id starts them only
   * by rebuilding them from their leaders (pg-mover.ts), never empty as voters.
   */
  rebuiltAtEpoch?: number;
  /**
   * Marked out by group 0's leader because the node did not answer for the down-out interval
   * (down-out.ts), not by an operator: the leader marks it in again once it answers. An
   * operator's `in` or `out` clears it.
   */
  autoOut?: true;
}

export interface PgInfo {
  /** Node ids, strongest placement draw first; distinct domains of the pool's level. */
  replicas: NodeId[];
  /** The epoch at which this replica set was computed (it is unchanged since). */
  sinceEpoch: number;
  /**
   * Set by `resetPg` (every replica had lost its data): the replicas start the PG empty, as at
   * its creation, instead of waiting for a leader to rebuild them from. Equals sinceEpoch
   * until placement moves the PG again.
   */
  resetEpoch?: number;
}

export interface Pool {
  id: number;
  name: string;
  replicas: number;
  pgCount: number;
  failureDomain: FailureDomain;
  /** pgs[i] is PG i (Raft group pgGroupId(id, i)). */
  pgs: PgInfo[];
  /**
   * The epoch that created the pool: a PG whose sinceEpoch is later was moved by placement,
   * so its new replicas join it rather than start it (absent in maps from before it existed).
   */
  createdEpoch?: number;
}

export interface Volume {
  id: number;
  name: string;
  /** Pool name. */
  pool: string;
  sizeBytes: number;
  extentBytes: number;
  /**
   * A shrink whose discard has not finished on every replica: data of the earlier, larger
   * size may remain in [sizeBytes, discardToBytes). The volume cannot grow until it is gone
   * (the admin API discards it through the PG logs, then sends `volumeDiscarded`).
   */
  discardToBytes?: number;
}

export interface ClusterMap {
  /** Format version of this structure. */
  format: 1;
  /** The cluster's id (absent in a new map, and in maps from before ids, until set). */
  clusterId?: string;
  epoch: number;
  /** Sorted by id. */
  nodes: NodeInfo[];
  /** Sorted by id. */
  pools: Pool[];
  /** Sorted by id. */
  volumes: Volume[];
  nextPoolId: number;
  nextVolumeId: number;
}

export function emptyMap(): ClusterMap {
  return { format: 1, epoch: 0, nodes: [], pools: [], volumes: [], nextPoolId: 1, nextVolumeId: 1 };
}

// ---------------------------------------------------------------------------------------------
// Commands

export interface AddNodeCommand {
  type: 'addNode';
  id: NodeId;
  addresses: NodeAddresses;
  labels?: Record<string, string>;
  /** Default 1. */
  weight?: number;
  /**
   * Set by the seed that forwards a join from a node without a cluster id (a new or wiped data
   * dir): such a node cannot take over the id of a member with other addresses. A member that
   * already has the cluster id re-registers without it, and may change its addresses.
   */
  newNode?: boolean;
  /**
   * Set by a node whose own stored map lists it (it was a member): if the id is no longer in
   * the map, the node was removed, and it is refused (NODE_REMOVED) rather than added again
   * with its old data dir.
   */
  member?: boolean;
  /** The registering data dir's incarnation (NodeInfo.incarnation). */
  incarnation?: string;
}
/**
 * Removes a drained node: refused unless it is `out` and no PG of the map lists it (see
 * `removeNodeRefusal`). The admin API also takes it out of group 0 and checks the PGs' Raft
 * configurations before it proposes this (node.ts removeNode).
 */
export interface RemoveNodeCommand {
  type: 'removeNode';
  id: NodeId;
}
/**
 * Marks a node whose data dir was lost as being replaced: its incarnation is forgotten, the
 * next data dir to register under its id is taken, and that node rebuilds its replicas from
 * their leaders (rebuiltAtEpoch). The admin API checks first that the node is not reachable
 * and takes it out of group 0 (node.ts replaceNode).
 */
export interface ReplaceNodeCommand {
  type: 'replaceNode';
  id: NodeId;
}
export interface SetNodeStateCommand {
  type: 'setNodeState';
  id: NodeId;
  state: NodeState;
  /**
   * From group 0's leader's down-out rule, not an operator: `out` applies only to a node that
   * is `in` (and marks it autoOut), `in` only to a node it marked out itself; an operator's
   * choice made meanwhile stands.
   */
  auto?: true;
}
export interface CreatePoolCommand {
  type: 'createPool';
  name: string;
  replicas: number;
  pgCount: number;
  failureDomain: FailureDomain;
}
export interface CreateVolumeCommand {
  type: 'createVolume';
  name: string;
  sizeBytes: number;
  /** Default `default`. */
  pool?: string;
  /** Default 4 MiB. */
  extentBytes?: number;
}
export interface ResizeVolumeCommand {
  type: 'resizeVolume';
  name: string;
  sizeBytes: number;
  /** Shrinking discards the data past the new end; refused unless set. */
  allowShrink?: boolean;
}
/** The data past a volume's end was discarded on every PG (clears `discardToBytes`). */
export interface VolumeDiscardedCommand {
  type: 'volumeDiscarded';
  name: string;
  /** The size and the discard bound the discard covered: a command for another state changes nothing. */
  sizeBytes: number;
  discardToBytes: number;
}
export interface DeleteVolumeCommand {
  type: 'deleteVolume';
  name: string;
}
/**
 * Starts PG `pg` of pool `pool` over, empty, on the replicas the map lists: for a PG whose
 * every replica lost its data dir (each node was replaced since the PG was placed on it), so
 * none can be rebuilt from a leader. What the PG held is gone: its blocks read as zeros.
 * Refused (PG_NOT_LOST) while any replica may still hold data.
 */
export interface ResetPgCommand {
  type: 'resetPg';
  pool: string;
  pg: number;
}
/** Names the cluster, once: the same id again changes nothing, another one is refused. */
export interface SetClusterIdCommand {
  type: 'setClusterId';
  id: string;
}

export type MapCommand =
  | AddNodeCommand
  | RemoveNodeCommand
  | ReplaceNodeCommand
  | SetNodeStateCommand
  | CreatePoolCommand
  | CreateVolumeCommand
  | ResizeVolumeCommand
  | VolumeDiscardedCommand
  | DeleteVolumeCommand
  | ResetPgCommand
  | SetClusterIdCommand;

// ---------------------------------------------------------------------------------------------
// Command ids

/**
 * Names one map command however many times nodes propose it. The node a command starts on
 * fixes it before the first attempt (its process's random session and the next sequence);
 * every retry, and every forward towards group 0's leader, carries the same id, and the log
 * entry carries it beside the command (`encodeCommand`). Group 0 applies an id once and answers
 * a repeat with the first apply's answer (MetaStore), so a retry whose first attempt committed
 * but whose answer was lost (a leader change, a timeout) is not applied a second time: a
 * retried delete does not answer NOT_FOUND, a retried create does not find a volume that was
 * changed meanwhile. An entry without an id (proposed by a node from before ids) is applied
 * each time it commits, as before.
 */
export type MetaCommandId = RequestId & {
  /**
   * What the request asked for, when the id came from a client's Idempotency-Key
   * (idempotency-key.ts): group 0 refuses the id's repeat with another fingerprint
   * (IDEMPOTENCY_KEY_REUSED) instead of answering it as the first request. A 48-bit integer.
   */
  fingerprint?: number;
};

/** Fingerprints are 48-bit integers: exact as numbers, and as msgpack integers. */
export const metaFingerprintLimit = 2 ** 48;

/** The number group 0 remembers an id by (common/request-id.ts requestKey), never 0 (no id). */
export function metaCommandKey(id: MetaCommandId): number {
  return requestKey(id.session, id.seq);
}

/** An id's wire form, in a peer request and in a log entry: [session, seq]. */
export function metaCommandIdToWire(id: MetaCommandId): [number, number] {
  return [id.session, id.seq];
}

/**
 * An id as the fields of a peer request or a log entry: `cid` (its wire form) and, when it has
 * one, `cfp` (its fingerprint). Two fields rather than a longer `cid`, so a node from before
 * fingerprints reads the id it always did and ignores the rest.
 */
export function metaCommandIdFields(id: MetaCommandId): { cid: [number, number]; cfp?: number } {
  return { cid: metaCommandIdToWire(id), ...(id.fingerprint === undefined ? {} : { cfp: id.fingerprint }) };
}

/** An id from a peer request's or log entry's fields (metaCommandIdFields); undefined when it has none. */
export function metaCommandIdFromFields(fields: { cid?: unknown; cfp?: unknown }): MetaCommandId | undefined {
  const id = metaCommandIdFromWire(fields.cid);
  if (id === undefined || fields.cfp === undefined || fields.cfp === null) return id;
  const fp = fields.cfp;
  if (typeof fp !== 'number' || !Number.isSafeInteger(fp) || fp < 0 || fp >= metaFingerprintLimit) {
    throw new InvalidArgument(`map command fingerprint must be an integer in [0, 2^48), got ${String(fp)}`);
  }
  return { ...id, fingerprint: fp };
}

/** An id from its wire form; undefined when none was sent, InvalidArgument when malformed. */
export function metaCommandIdFromWire(x: unknown): MetaCommandId | undefined {
  if (x === undefined || x === null) return undefined;
  if (!Array.isArray(x) || x.length !== 2) throw new InvalidArgument('map command id must be [session, seq]');
  const [session, seq] = x as unknown[];
  if (typeof session !== 'number' || !Number.isSafeInteger(session) || session < 1 || session > maxRequestSession) {
    throw new InvalidArgument(`map command session must be an integer in [1, ${maxRequestSession}], got ${String(session)}`);
  }
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0 || seq >= requestSeqLimit) {
    throw new InvalidArgument(`map command sequence must be an integer in [0, 2^32), got ${String(seq)}`);
  }
  return { session, seq };
}

export type ApplyResult =
  | {
      ok: true;
      map: ClusterMap;
      /** False when the command asked for what already was (the epoch did not move). */
      changed: boolean;
      /** The volume created or resized, when the command was about one. */
      volume?: Volume;
      /** The pool created. */
      pool?: Pool;
      /** Groups whose replica set changed (placement moved them). */
      movedGroups: number[];
    }
  | { ok: false; error: RaftblockError };

/**
 * Applies one command. Pure: `map` is not modified. Errors are InvalidArgument, NotFound,
 * AlreadyExists, PlacementImpossible, NodeStillIn, NodeHoldsReplicas or NodeRemoved, and leave
 * the map unchanged.
 *
 * removeNode takes only a node marked `out` that no PG lists (removeNodeRefusal); removing it
 * again answers NOT_FOUND. addNode with `member` (a node whose stored map listed it) for an id
 * not in the map is refused with NODE_REMOVED: that node was removed.
 *
 * addNode for an id already present updates its addresses, labels and weight (a restarted node
 * re-registering is harmless); identical values change nothing and keep the epoch. With
 * `newNode` (a join from a node without a cluster id) other addresses are refused
 * (ALREADY_EXISTS): the id belongs to a member, and a node of that id that lost its data dir
 * must be removed first; the same addresses stay idempotent (a join whose answer was lost).
 * Whatever the addresses, a registration whose incarnation differs from the member's (another
 * data dir under its id) is refused (ALREADY_EXISTS); an entry without one takes the first.
 */
export function applyCommand(map: ClusterMap, command: MapCommand): ApplyResult {
  try {
    return applyOrThrow(map, command);
  } catch (err) {
    if (err instanceof RaftblockError && err.code !== 'ASSERTION_FAILED') return { ok: false, error: err };
    throw err;
  }
}

function applyOrThrow(map: ClusterMap, command: MapCommand): ApplyResult {
  if (command === null || typeof command !== 'object') throw new InvalidArgument('command must be an object');
  switch (command.type) {
    case 'addNode':
      return addNode(map, command);
    case 'removeNode': {
      checkNodeId(command.id);
      const refusal = removeNodeRefusal(map, command.id);
      if (refusal) throw refusal;
      return withNodes(map, map.nodes.filter((n) => n.id !== command.id));
    }
    case 'replaceNode': {
      checkNodeId(command.id);
      const node = map.nodes.find((n) => n.id === command.id);
      if (!node) throw new NotFound(`node ${command.id} is not in the map`);
      const epoch = map.epoch + 1;
      const { incarnation: _lost, ...rest } = node;
      const replaced: NodeInfo = { ...rest, replacing: true, rebuiltAtEpoch: epoch };
      return { ok: true, map: bump(map, { nodes: map.nodes.map((n) => (n.id === command.id ? replaced : n)) }), changed: true, movedGroups: [] };
    }
    case 'resetPg':
      return resetPg(map, command);
    case 'setNodeState': {
      checkNodeId(command.id);
      if (command.state !== 'in' && command.state !== 'out') throw new InvalidArgument(`node state must be in or out`);
      if (command.auto !== undefined && command.auto !== true) throw new InvalidArgument('node state: auto must be true or absent');
      const node = map.nodes.find((n) => n.id === command.id);
      if (!node) throw new NotFound(`node ${command.id} is not in the map`);
      const { autoOut: _was, ...rest } = node;
      if (command.auto) {
        if (command.state === 'out' ? node.state !== 'in' : node.autoOut !== true) return unchanged(map);
        const changed: NodeInfo = command.state === 'out' ? { ...rest, state: 'out', autoOut: true } : { ...rest, state: 'in' };
        return withNodes(map, map.nodes.map((n) => (n.id === command.id ? changed : n)));
      }
      // An operator's choice: it also ends the leader's claim on the node's state.
      if (node.state === command.state && node.autoOut === undefined) return unchanged(map);
      if (node.state === command.state) return { ok: true, map: bump(map, { nodes: map.nodes.map((n) => (n.id === command.id ? rest : n)) }), changed: true, movedGroups: [] };
      return withNodes(map, map.nodes.map((n) => (n.id === command.id ? { ...rest, state: command.state } : n)));
    }
    case 'createPool':
      return createPool(map, command);
    case 'createVolume':
      return createVolume(map, command);
    case 'resizeVolume': {
      const volume = findVolume(map, command.name);
      checkVolumeSize(command.sizeBytes);
      if (command.sizeBytes < volume.sizeBytes && command.allowShrink !== true) {
        throw new InvalidArgument(
          `volume ${volume.name}: shrinking from ${volume.sizeBytes} to ${command.sizeBytes} bytes discards data; pass the shrink flag to allow it`,
        );
      }
      if (command.sizeBytes === volume.sizeBytes) return { ...unchanged(map), volume };
      // Growing over bytes a shrink left behind would show them again.
      if (command.sizeBytes > volume.sizeBytes && (volume.discardToBytes ?? 0) > volume.sizeBytes) {
        throw new InvalidArgument(`volume ${volume.name}: the data past its end (${volume.sizeBytes} to ${volume.discardToBytes} bytes) is still being discarded; run the shrink again to finish it, then grow`);
      }
      const discardToBytes = command.sizeBytes < volume.sizeBytes ? Math.max(volume.discardToBytes ?? 0, volume.sizeBytes) : volume.discardToBytes;
      const resized: Volume = { ...volume, sizeBytes: command.sizeBytes, ...(discardToBytes !== undefined ? { discardToBytes } : {}) };
      const next = bump(map, { volumes: map.volumes.map((v) => (v.id === volume.id ? resized : v)) });
      return { ok: true, map: next, changed: true, volume: resized, movedGroups: [] };
    }
    case 'volumeDiscarded': {
      const volume = findVolume(map, command.name);
      if (volume.discardToBytes === undefined || volume.sizeBytes !== command.sizeBytes || volume.discardToBytes !== command.discardToBytes) {
        return { ...unchanged(map), volume };
      }
      const { discardToBytes: _done, ...clean } = volume;
      const next = bump(map, { volumes: map.volumes.map((v) => (v.id === volume.id ? clean : v)) });
      return { ok: true, map: next, changed: true, volume: clean, movedGroups: [] };
    }
    case 'deleteVolume': {
      const volume = findVolume(map, command.name);
      const next = bump(map, { volumes: map.volumes.filter((v) => v.id !== volume.id) });
      return { ok: true, map: next, changed: true, volume, movedGroups: [] };
    }
    case 'setClusterId': {
      if (!isClusterId(command.id)) throw new InvalidArgument(`cluster id must be 1-64 letters, digits or '-', got ${JSON.stringify(command.id)}`);
      if (map.clusterId === command.id) return unchanged(map);
      if (map.clusterId !== undefined) throw new InvalidArgument(`the map belongs to cluster ${map.clusterId}; it cannot become ${command.id}`);
      return { ok: true, map: bump(map, { clusterId: command.id }), changed: true, movedGroups: [] };
    }
    default:
      throw new InvalidArgument(`unknown map command ${JSON.stringify((command as { type?: unknown }).type)}`);
  }
}

/**
 * Why node `id` cannot be removed from `map` now, or undefined when it can: NOT_FOUND (not in
 * the map: removed already), NODE_STILL_IN (mark it out first), NODE_HOLDS_REPLICAS (a PG of
 * the map still lists it: its move has not been decided yet).
 */
export function removeNodeRefusal(map: ClusterMap, id: NodeId): RaftblockError | undefined {
  const node = map.nodes.find((n) => n.id === id);
  if (!node) return new NotFound(`node ${id} is not in the map (removed already, or never joined)`);
  if (node.state !== 'out') return new NodeStillIn(`node ${id} is ${node.state}: mark it out first (\`raftblock node-state ${id} out\`), wait until \`raftblock status\` shows its PGs moved, then remove it`);
  const pgs: string[] = [];
  const groups: number[] = [];
  for (const pool of map.pools) {
    for (let i = 0; i < pool.pgCount; i++) {
      if (!pool.pgs[i].replicas.includes(id)) continue;
      pgs.push(`${pool.name}/${i}`);
      groups.push(pgGroupId(pool.id, i));
    }
  }
  if (groups.length > 0) return new NodeHoldsReplicas(describeHeldPgs(id, pgs, 'in the map'), groups);
  return undefined;
}

/** The refusal text of NODE_HOLDS_REPLICAS ("node 4 still holds replicas of PGs default/3, default/7 ..."). */
export function describeHeldPgs(id: NodeId, pgs: readonly string[], where: string): string {
  const shown = pgs.length > 12 ? [...pgs.slice(0, 12), `and ${pgs.length - 12} more`] : pgs;
  return `node ${id} still holds replicas of PGs ${shown.join(', ')} (${where}): wait until \`raftblock status\` shows them moved`;
}

function unchanged(map: ClusterMap): { ok: true; map: ClusterMap; changed: false; movedGroups: number[] } {
  return { ok: true, map, changed: false, movedGroups: [] };
}

function bump(map: ClusterMap, parts: Partial<ClusterMap>): ClusterMap {
  return { ...map, ...parts, epoch: map.epoch + 1 };
}

function addNode(map: ClusterMap, c: AddNodeCommand): ApplyResult {
  checkNodeId(c.id);
  const addresses = checkAddresses(c.addresses);
  const labels = checkLabels(c.labels ?? {});
  const weight = c.weight ?? defaultNodeWeight;
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0 || weight > 1e6) {
    throw new InvalidArgument(`node ${c.id}: weight must be a number in [0, 1e6], got ${String(weight)}`);
  }
  const incarnation = c.incarnation === undefined ? undefined : checkIncarnation(c.incarnation);
  const existing = map.nodes.find((n) => n.id === c.id);
  const node: NodeInfo = {
    id: c.id,
    addresses,
    labels,
    weight,
    state: existing?.state ?? 'in',
    ...(incarnation !== undefined ? { incarnation } : {}),
    ...(existing?.rebuiltAtEpoch !== undefined ? { rebuiltAtEpoch: existing.rebuiltAtEpoch } : {}),
    ...(existing?.autoOut ? { autoOut: true as const } : {}),
  };
  // Being replaced: the first data dir to register under the id takes it, from anywhere (it
  // rebuilds its replicas from their leaders; see rebuiltAtEpoch).
  if (existing?.replacing && incarnation !== undefined) {
    checkAddressesFree(map, c.id, addresses);
    return withNodes(map, map.nodes.map((n) => (n.id === c.id ? node : n)));
  }
  if (existing) {
    const placementSame = existing.weight === weight && sameLabels(existing.labels, labels);
    const addressesSame =
      existing.addresses.peer === addresses.peer && existing.addresses.nbd === addresses.nbd && existing.addresses.http === addresses.http;
    // An entry from before incarnations takes the first one its node registers with.
    const incarnationSame = existing.incarnation === node.incarnation;
    if (placementSame && addressesSame && incarnationSame) return unchanged(map);
    // Decided here, in the deterministic apply, not by the seed before it proposes: two joins
    // in flight for one id would both pass a check made on the seed's map.
    if (c.newNode === true && !addressesSame) {
      throw new AlreadyExists(
        `node ${c.id} is already a member at ${describeAddresses(existing.addresses)}; a node without the cluster id (a new or wiped data dir) ` +
          `cannot join as node ${c.id} from ${describeAddresses(addresses)}: ${lostDataDirAdvice(c.id)}`,
      );
    }
    // Another data dir under a member's id: with its empty logs it could vote for a candidate
    // that lacks acknowledged writes, or acknowledge entries it never stored.
    if (existing.incarnation !== undefined && incarnation !== existing.incarnation) {
      throw new AlreadyExists(
        `node ${c.id} is a member whose data dir is incarnation ${existing.incarnation}; this data dir is ${incarnation === undefined ? 'of no incarnation' : `incarnation ${incarnation}`}: ` +
          lostDataDirAdvice(c.id),
      );
    }
    const nodes = map.nodes.map((n) => (n.id === c.id ? node : n));
    if (placementSame) return { ok: true, map: bump(map, { nodes }), changed: true, movedGroups: [] };
    return withNodes(map, nodes);
  }
  checkAddressesFree(map, c.id, addresses);
  // A node that was a member and is no longer in the map was removed: its old data dir (its
  // WAL, its group-0 log, its tombstones) does not come back; a new data dir may take the id.
  if (c.member === true) {
    throw new NodeRemoved(`node ${c.id} was removed from the cluster map; its data dir cannot join again: start it with an empty data dir to rejoin as node ${c.id}`);
  }
  const nodes = [...map.nodes, node].sort((a, b) => a.id - b.id);
  return withNodes(map, nodes);
}

/** No node but `id` may use any of these addresses. */
function checkAddressesFree(map: ClusterMap, id: NodeId, addresses: NodeAddresses): void {
  for (const n of map.nodes) {
    if (n.id === id) continue;
    for (const key of ['peer', 'nbd', 'http'] as const) {
      if (n.addresses[key] === addresses[key] && !isWildcardPortZero(addresses[key])) {
        throw new AlreadyExists(`node ${n.id} already uses ${key} address ${addresses[key]}`);
      }
    }
  }
}

/** What to do when a data dir claims the id of a member (both refusals of addNode say it). */
function lostDataDirAdvice(id: NodeId): string {
  return (
    `if node ${id} lost its data dir, let the new one rebuild it in place (\`raftblock node replace ${id}\`, with node ${id} stopped) ` +
    `or remove it from the map first (\`raftblock node-state ${id} out\`, then \`raftblock node remove ${id}\`), else give the new node another id`
  );
}

function describeAddresses(a: NodeAddresses): string {
  return `peer ${a.peer}, nbd ${a.nbd}, http ${a.http}`;
}

function isWildcardPortZero(addr: string): boolean {
  return parseHostPort(addr).port === 0;
}

/** A new node list: recompute the placement of every pool; refuse if one cannot be placed. */
function withNodes(map: ClusterMap, nodes: NodeInfo[]): ApplyResult {
  const epoch = map.epoch + 1;
  const tree = PlacementTree.build(placementNodes(nodes));
  const movedGroups: number[] = [];
  const pools = map.pools.map((pool) => {
    const pgs = placeAll(tree, pool, epoch, movedGroups);
    return pgs === pool.pgs ? pool : { ...pool, pgs };
  });
  return { ok: true, map: { ...map, nodes, pools, epoch }, changed: true, movedGroups };
}

function placementNodes(nodes: readonly NodeInfo[]): PlacementNode[] {
  return nodes.map((n) => ({ id: n.id, labels: n.labels, weight: n.state === 'in' ? n.weight : 0 }));
}

/** Pool `poolName` and its PG `pg`; NotFound for either. */
export function findPg(map: ClusterMap, poolName: string, pg: number): { pool: Pool; info: PgInfo } {
  const pool = map.pools.find((p) => p.name === poolName);
  if (!pool) throw new NotFound(`pool ${String(poolName)} does not exist`);
  if (!Number.isSafeInteger(pg) || pg < 0 || pg >= pool.pgCount) throw new NotFound(`pool ${pool.name} has no PG ${String(pg)} (it has ${pool.pgCount})`);
  return { pool, info: pool.pgs[pg] };
}

/**
 * Why PG `pg` of `pool` cannot be reset in `map`, or undefined when the map allows it:
 * PG_NOT_LOST while a replica's node was not replaced since the PG was placed on it. Group 0's
 * leader also asks every node what it holds of the PG first (pg-reset-check.ts).
 */
export function resetPgRefusal(map: ClusterMap, pool: Pool, pg: number): PgNotLost | undefined {
  const info = pool.pgs[pg];
  // Each replica's node must have been replaced (its data dir lost) since the PG was placed on it.
  const holding = info.replicas.filter((id) => {
    const rebuiltAt = map.nodes.find((n) => n.id === id)?.rebuiltAtEpoch;
    return rebuiltAt === undefined || rebuiltAt < info.sinceEpoch;
  });
  if (holding.length === 0) return undefined;
  return new PgNotLost(
    `PG ${pool.name}/${pg}: node ${holding.join(', ')} may still hold its data (not replaced since the PG was placed there); ` +
      'only a PG whose every replica lost its data dir is reset (node replace each one first)',
  );
}

function resetPg(map: ClusterMap, c: ResetPgCommand): ApplyResult {
  const { pool } = findPg(map, c.pool, c.pg);
  const refusal = resetPgRefusal(map, pool, c.pg);
  if (refusal) throw refusal;
  const epoch = map.epoch + 1;
  const pgs = pool.pgs.map((p, i) => (i === c.pg ? { replicas: p.replicas, sinceEpoch: epoch, resetEpoch: epoch } : p));
  return { ok: true, map: bump(map, { pools: map.pools.map((p) => (p.id === pool.id ? { ...p, pgs } : p)) }), changed: true, pool: { ...pool, pgs }, movedGroups: [] };
}

/** New PgInfo list for `pool`, reusing unchanged entries (and the array when nothing moved). */
function placeAll(tree: PlacementTree, pool: Pool, epoch: number, movedGroups: number[]): PgInfo[] {
  if (tree.domainCount(pool.failureDomain) < pool.replicas) {
    throw new PlacementImpossible(
      `pool ${pool.name} needs ${pool.replicas} distinct ${pool.failureDomain}s, the change leaves ${tree.domainCount(pool.failureDomain)}`,
      tree.domainCount(pool.failureDomain),
      pool.replicas,
    );
  }
  let changed = false;
  const out: PgInfo[] = new Array(pool.pgCount);
  for (let i = 0; i < pool.pgCount; i++) {
    const replicas = tree.place(pgKey(pool.id, i), pool.replicas, pool.failureDomain);
    const old = pool.pgs[i];
    if (old && sameNodes(old.replicas, replicas)) {
      out[i] = old;
    } else {
      out[i] = { replicas, sinceEpoch: epoch };
      if (old) movedGroups.push(pgGroupId(pool.id, i));
      changed = true;
    }
  }
  return changed || pool.pgs.length !== pool.pgCount ? out : pool.pgs;
}

function sameNodes(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

function createPool(map: ClusterMap, c: CreatePoolCommand): ApplyResult {
  checkName(c.name, 'pool name');
  if (!Number.isSafeInteger(c.replicas) || c.replicas < 1 || c.replicas > maxReplicas) {
    throw new InvalidArgument(`pool ${c.name}: replicas must be an integer in [1, ${maxReplicas}], got ${String(c.replicas)}`);
  }
  if (!Number.isSafeInteger(c.pgCount) || c.pgCount < 1 || c.pgCount > maxPgsPerPool) {
    throw new InvalidArgument(`pool ${c.name}: pgCount must be an integer in [1, ${maxPgsPerPool}], got ${String(c.pgCount)}`);
  }
  if (!(failureDomainLevels as readonly string[]).includes(c.failureDomain)) {
    throw new InvalidArgument(`pool ${c.name}: failure domain must be one of ${failureDomainLevels.join(', ')}, got ${String(c.failureDomain)}`);
  }
  const existing = map.pools.find((p) => p.name === c.name);
  if (existing) {
    // The same pool asked for again (a client asking again after a lost answer): done.
    if (existing.replicas === c.replicas && existing.pgCount === c.pgCount && existing.failureDomain === c.failureDomain) return { ok: true, map, changed: false, pool: existing, movedGroups: [] };
    throw new AlreadyExists(`pool ${c.name} exists (${existing.replicas} replicas, ${existing.pgCount} PGs, failure domain ${existing.failureDomain})`);
  }
  const id = map.nextPoolId;
  assert(Number.isSafeInteger(id * maxPgsPerPool + maxPgsPerPool), 'pool id space exhausted');
  const epoch = map.epoch + 1;
  const draft: Pool = { id, name: c.name, replicas: c.replicas, pgCount: c.pgCount, failureDomain: c.failureDomain, pgs: [], createdEpoch: epoch };
  const pool: Pool = { ...draft, pgs: placeAll(PlacementTree.build(placementNodes(map.nodes)), draft, epoch, []) };
  const next: ClusterMap = { ...map, pools: [...map.pools, pool], nextPoolId: id + 1, epoch };
  return { ok: true, map: next, changed: true, pool, movedGroups: [] };
}

function createVolume(map: ClusterMap, c: CreateVolumeCommand): ApplyResult {
  checkName(c.name, 'volume name');
  checkVolumeSize(c.sizeBytes);
  const poolName = c.pool ?? defaultPoolName;
  const pool = map.pools.find((p) => p.name === poolName);
  if (!pool) throw new NotFound(`pool ${poolName} does not exist`);
  const extentBytes = c.extentBytes ?? defaultExtentBytes;
  if (
    !Number.isSafeInteger(extentBytes) ||
    extentBytes < minExtentBytes ||
    extentBytes > maxExtentBytes ||
    (extentBytes & (extentBytes - 1)) !== 0
  ) {
    throw new InvalidArgument(`extent size must be a power of two in [${minExtentBytes}, ${maxExtentBytes}] bytes, got ${String(extentBytes)}`);
  }
  const existing = map.volumes.find((v) => v.name === c.name);
  if (existing) {
    // The same volume asked for again (a client asking again after a lost answer: a new
    // command, whose id group 0 has not seen; see MetaCommandId): done, so a retried create
    // never fails on its own success. Any other volume of that name is a conflict.
    if (existing.pool === pool.name && existing.sizeBytes === c.sizeBytes && existing.extentBytes === extentBytes) return { ok: true, map, changed: false, volume: existing, movedGroups: [] };
    throw new AlreadyExists(`volume ${c.name} exists (${existing.sizeBytes} bytes in pool ${existing.pool}, extents of ${existing.extentBytes} bytes)`);
  }
  const volume: Volume = { id: map.nextVolumeId, name: c.name, pool: pool.name, sizeBytes: c.sizeBytes, extentBytes };
  const next = bump(map, { volumes: [...map.volumes, volume], nextVolumeId: volume.id + 1 });
  return { ok: true, map: next, changed: true, volume, movedGroups: [] };
}

// ---------------------------------------------------------------------------------------------
// Validation of command fields (input from the admin API: expected errors, never asserts)

/** Whether `x` is a well-formed pool or volume name. */
export function isName(x: unknown): x is string {
  return typeof x === 'string' && namePattern.test(x);
}

/** Whether `id` is a well-formed cluster id. */
export function isClusterId(id: unknown): id is string {
  return typeof id === 'string' && clusterIdPattern.test(id);
}

function checkNodeId(id: unknown): asserts id is NodeId {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1 || id > maxNodeId) {
    throw new InvalidArgument(`node id must be an integer in [1, 2^31-1], got ${String(id)}`);
  }
}

function checkName(name: unknown, what: string): asserts name is string {
  if (!isName(name)) {
    throw new InvalidArgument(`${what} must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit; got ${JSON.stringify(name)}`);
  }
}

function checkVolumeSize(size: unknown): asserts size is number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size > maxVolumeBytes || size % volumeAlignmentBytes !== 0) {
    throw new InvalidArgument(`volume size must be a positive multiple of ${volumeAlignmentBytes} bytes up to 1 PiB, got ${String(size)}`);
  }
}

function checkIncarnation(x: unknown): string {
  if (!isIncarnation(x)) throw new InvalidArgument(`node incarnation must be 8-64 lowercase hex digits, got ${JSON.stringify(x)}`);
  return x;
}

/** Whether `x` is a well-formed node incarnation. */
export function isIncarnation(x: unknown): x is string {
  return typeof x === 'string' && incarnationPattern.test(x);
}

function checkAddresses(a: unknown): NodeAddresses {
  if (a === null || typeof a !== 'object') throw new InvalidArgument('node addresses must be {peer, nbd, http}');
  const o = a as Record<string, unknown>;
  const out: NodeAddresses = { peer: '', nbd: '', http: '' };
  for (const key of ['peer', 'nbd', 'http'] as const) {
    const v = o[key];
    if (typeof v !== 'string') throw new InvalidArgument(`node ${key} address must be HOST:PORT`);
    parseHostPort(v, `${key} address`);
    out[key] = v;
  }
  return out;
}

function checkLabels(labels: unknown): Record<string, string> {
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) throw new InvalidArgument('labels must be an object of strings');
  const out: Record<string, string> = {};
  for (const key of Object.keys(labels).sort()) {
    const value = (labels as Record<string, unknown>)[key];
    if (!labelPattern.test(key) || typeof value !== 'string' || !labelPattern.test(value)) {
      throw new InvalidArgument(`label ${JSON.stringify(key)}=${JSON.stringify(value)}: keys and values are 1-64 of letters, digits, '.', '_', '-'`);
    }
    out[key] = value;
  }
  return out;
}

/** Parses `zone=a,rack=r1,host=h1` (the CLI's --labels). */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (text.trim() === '') return out;
  for (const part of text.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*([^=\s]+)\s*$/.exec(part);
    if (!m) throw new InvalidArgument(`labels must be KEY=VALUE[,KEY=VALUE...], got ${JSON.stringify(text)}`);
    if (m[1] in out) throw new InvalidArgument(`label ${m[1]} given twice`);
    out[m[1]] = m[2];
  }
  return checkLabels(out);
}

// ---------------------------------------------------------------------------------------------
// Lookups for the node process, the gateway and the admin API

/**
 * Volumes of a map by name and by id, built once per map (maps are immutable values: a change
 * makes a new one), so the I/O path looks a volume up without scanning the list per request.
 */
const volumeIndexes = new WeakMap<ClusterMap, { byName: Map<string, Volume>; byId: Map<number, Volume> }>();

function volumeIndex(map: ClusterMap): { byName: Map<string, Volume>; byId: Map<number, Volume> } {
  let ix = volumeIndexes.get(map);
  if (!ix) {
    ix = { byName: new Map(map.volumes.map((v) => [v.name, v])), byId: new Map(map.volumes.map((v) => [v.id, v])) };
    volumeIndexes.set(map, ix);
  }
  return ix;
}

/** The volume named `name`, or undefined. */
export function volumeNamed(map: ClusterMap, name: string): Volume | undefined {
  return volumeIndex(map).byName.get(name);
}

/** The volume with id `id`, or undefined. */
export function volumeWithId(map: ClusterMap, id: number): Volume | undefined {
  return volumeIndex(map).byId.get(id);
}

export function findVolume(map: ClusterMap, name: string): Volume {
  const v = volumeNamed(map, name);
  if (!v) throw new NotFound(`volume ${name} does not exist`);
  return v;
}

export function findPool(map: ClusterMap, name: string): Pool {
  const p = map.pools.find((x) => x.name === name);
  if (!p) throw new NotFound(`pool ${name} does not exist`);
  return p;
}

export function findNode(map: ClusterMap, id: NodeId): NodeInfo {
  const n = map.nodes.find((x) => x.id === id);
  if (!n) throw new NotFound(`node ${id} is not in the map`);
  return n;
}

/** The Raft group id of PG `pgIndex` of pool `poolId`. Group 0 is the metadata group. */
export function pgGroupId(poolId: number, pgIndex: number): number {
  assert(Number.isSafeInteger(poolId) && poolId >= 1, `bad pool id ${poolId}`);
  assert(Number.isSafeInteger(pgIndex) && pgIndex >= 0 && pgIndex < maxPgsPerPool, `bad pg index ${pgIndex}`);
  return poolId * maxPgsPerPool + pgIndex;
}

/** Inverse of pgGroupId. */
export function pgOfGroup(groupId: number): { poolId: number; pgIndex: number } {
  assert(Number.isSafeInteger(groupId) && groupId >= maxPgsPerPool, `group ${groupId} is not a PG`);
  return { poolId: Math.floor(groupId / maxPgsPerPool), pgIndex: groupId % maxPgsPerPool };
}

/**
 * The PG index (within the volume's pool) holding extent `extentIndex` of volume `volumeId`:
 * hash(volumeId, extentIndex) mod pgCount. Consecutive extents land on unrelated PGs, so a
 * sequential stream spreads over every PG. Stable forever: changing it relocates all data.
 */
export function pgOfExtent(volumeId: number, extentIndex: number, pgCount: number): number {
  assert(Number.isSafeInteger(extentIndex) && extentIndex >= 0, `bad extent index ${extentIndex}`);
  assert(pgCount >= 1, 'pgCount must be >= 1');
  const lo = extentIndex >>> 0;
  const hi = Math.floor(extentIndex / 4294967296) >>> 0;
  return hash3(volumeId, lo, hi) % pgCount;
}

export interface ExtentLocation {
  extentIndex: number;
  /** Offset of the byte within its extent. */
  offsetInExtent: number;
  pgIndex: number;
  groupId: number;
  replicas: NodeId[];
}

/** Where byte `offset` of `volume` lives. */
export function locateExtent(map: ClusterMap, volume: Volume, offset: number): ExtentLocation {
  assert(Number.isSafeInteger(offset) && offset >= 0 && offset < volume.sizeBytes, `offset ${offset} outside volume ${volume.name}`);
  const pool = findPool(map, volume.pool);
  const extentIndex = Math.floor(offset / volume.extentBytes);
  const pgIndex = pgOfExtent(volume.id, extentIndex, pool.pgCount);
  return {
    extentIndex,
    offsetInExtent: offset - extentIndex * volume.extentBytes,
    pgIndex,
    groupId: pgGroupId(pool.id, pgIndex),
    replicas: pool.pgs[pgIndex].replicas,
  };
}

/** Every PG group of every pool, with its replicas. */
export function allGroups(map: ClusterMap): { groupId: number; pool: string; pgIndex: number; replicas: NodeId[] }[] {
  const out: { groupId: number; pool: string; pgIndex: number; replicas: NodeId[] }[] = [];
  for (const pool of map.pools) {
    for (let i = 0; i < pool.pgCount; i++) out.push({ groupId: pgGroupId(pool.id, i), pool: pool.name, pgIndex: i, replicas: pool.pgs[i].replicas });
  }
  return out;
}

/** The PG groups with a replica on `nodeId`, ascending. */
export function groupsOfNode(map: ClusterMap, nodeId: NodeId): number[] {
  const out: number[] = [];
  for (const pool of map.pools) {
    for (let i = 0; i < pool.pgCount; i++) if (pool.pgs[i].replicas.includes(nodeId)) out.push(pgGroupId(pool.id, i));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Invariants and serialisation

/** Checks every invariant of a map; throws AssertionFailed on the first broken one. */
export function checkMap(map: ClusterMap): void {
  assert(map.format === 1, `unknown map format ${String(map.format)}`);
  assert(Number.isSafeInteger(map.epoch) && map.epoch >= 0, 'epoch must be a non-negative integer');
  assert(map.clusterId === undefined || isClusterId(map.clusterId), `bad cluster id ${JSON.stringify(map.clusterId)}`);
  const byId = new Map<NodeId, NodeInfo>();
  for (let i = 0; i < map.nodes.length; i++) {
    const n = map.nodes[i];
    assert(i === 0 || map.nodes[i - 1].id < n.id, 'nodes must be sorted by id, without duplicates');
    assert(n.incarnation === undefined || isIncarnation(n.incarnation), `node ${n.id}: bad incarnation ${JSON.stringify(n.incarnation)}`);
    assert(n.replacing === undefined || (n.replacing === true && n.incarnation === undefined), `node ${n.id}: replacing with an incarnation`);
    assert(n.rebuiltAtEpoch === undefined || (Number.isSafeInteger(n.rebuiltAtEpoch) && n.rebuiltAtEpoch >= 1 && n.rebuiltAtEpoch <= map.epoch), `node ${n.id}: bad rebuiltAtEpoch`);
    assert(n.autoOut === undefined || (n.autoOut === true && n.state === 'out'), `node ${n.id}: autoOut on a node that is not out`);
    byId.set(n.id, n);
  }
  const poolNames = new Set<string>();
  for (let i = 0; i < map.pools.length; i++) {
    const p = map.pools[i];
    assert(i === 0 || map.pools[i - 1].id < p.id, 'pools must be sorted by id, without duplicates');
    assert(p.id >= 1 && p.id < map.nextPoolId, `pool ${p.name}: id ${p.id} not below nextPoolId`);
    assert(!poolNames.has(p.name), `pool name ${p.name} used twice`);
    poolNames.add(p.name);
    assert(p.pgs.length === p.pgCount, `pool ${p.name}: ${p.pgs.length} PGs listed, pgCount ${p.pgCount}`);
    for (let pg = 0; pg < p.pgCount; pg++) {
      const { replicas, sinceEpoch } = p.pgs[pg];
      assert(sinceEpoch <= map.epoch, `pool ${p.name} pg ${pg}: sinceEpoch after the map's epoch`);
      const { resetEpoch } = p.pgs[pg];
      assert(resetEpoch === undefined || resetEpoch === sinceEpoch, `pool ${p.name} pg ${pg}: resetEpoch other than sinceEpoch`);
      assert(replicas.length === p.replicas, `pool ${p.name} pg ${pg}: ${replicas.length} replicas, want ${p.replicas}`);
      const domains = new Set<string>();
      for (const id of replicas) {
        const node = byId.get(id);
        assert(node !== undefined, `pool ${p.name} pg ${pg}: replica on unknown node ${id}`);
        assert(node.state === 'in' && node.weight > 0, `pool ${p.name} pg ${pg}: replica on node ${id}, which holds nothing`);
        const d = nodeDomains(node);
        const level = p.failureDomain;
        domains.add(level === 'zone' ? d.zone : level === 'rack' ? `${d.zone}/${d.rack}` : `${d.zone}/${d.rack}/${d.host}`);
      }
      assert(domains.size === p.replicas, `pool ${p.name} pg ${pg}: replicas share a ${p.failureDomain}`);
    }
  }
  const volumeNames = new Set<string>();
  for (let i = 0; i < map.volumes.length; i++) {
    const v = map.volumes[i];
    assert(i === 0 || map.volumes[i - 1].id < v.id, 'volumes must be sorted by id, without duplicates');
    assert(v.id >= 1 && v.id < map.nextVolumeId, `volume ${v.name}: id ${v.id} not below nextVolumeId`);
    assert(!volumeNames.has(v.name), `volume name ${v.name} used twice`);
    volumeNames.add(v.name);
    assert(poolNames.has(v.pool), `volume ${v.name}: pool ${v.pool} does not exist`);
  }
}

// Plain MessagePack maps (no record extension), so any MessagePack reader can inspect a snapshot.
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export function encodeMap(map: ClusterMap): Buffer {
  return packr.pack(map);
}

/** Decodes and checks a map (from a snapshot or a peer). A broken one throws. */
export function decodeMap(bytes: Uint8Array): ClusterMap {
  return mapFrom(packr.unpack(bytes));
}

/**
 * `doc` (a decoded msgpack or JSON map, as a peer or an admin server sent it) as a map whose
 * invariants hold; throws InvalidArgument or AssertionFailed otherwise.
 */
export function mapFrom(doc: unknown): ClusterMap {
  const map = doc as ClusterMap;
  if (map === null || typeof map !== 'object' || !Array.isArray(map.nodes) || !Array.isArray(map.pools) || !Array.isArray(map.volumes)) {
    throw new InvalidArgument('not a cluster map');
  }
  // A node of a version from before autoOut copies a node's fields when an operator marks it
  // in, flag included: on a node that is in the flag means nothing, so it is dropped here
  // rather than the whole map refused.
  for (const n of map.nodes as (NodeInfo & { autoOut?: unknown })[]) if (n !== null && typeof n === 'object' && n.autoOut !== undefined && n.state === 'in') delete n.autoOut;
  checkMap(map);
  return map;
}

/**
 * A log entry of group 0: the command's own fields, plus `cid` (MetaCommandId's wire form) and
 * `cfp` (its fingerprint, if any) when it has an id. Beside the command rather than around it:
 * a replica from before ids reads the entry as the command it always was.
 */
export function encodeCommand(command: MapCommand, id?: MetaCommandId): Buffer {
  const { cid: _cid, cfp: _cfp, ...plain } = command as MapCommand & { cid?: unknown; cfp?: unknown };
  return packr.pack(id === undefined ? plain : { ...plain, ...metaCommandIdFields(id) });
}

/** Decodes a command from a log entry (its id, if any, left out). Its fields are validated by applyCommand. */
export function decodeCommand(bytes: Uint8Array): MapCommand {
  return decodeMetaEntry(bytes).command;
}

/**
 * Decodes a log entry of group 0: the command and its id's key (metaCommandKey; 0 when it has
 * none). A malformed entry or id is InvalidArgument (the command is refused, on every replica alike).
 */
export function decodeMetaEntry(bytes: Uint8Array): { command: MapCommand; key: number; fingerprint?: number } {
  const c = packr.unpack(bytes) as (MapCommand & { cid?: unknown; cfp?: unknown }) | null;
  if (c === null || typeof c !== 'object' || typeof c.type !== 'string') throw new InvalidArgument('not a map command');
  if (!('cid' in c)) return { command: c, key: 0 };
  const { cid, cfp, ...command } = c;
  const id = metaCommandIdFromFields({ cid, cfp });
  if (id === undefined) return { command: command as MapCommand, key: 0 };
  return { command: command as MapCommand, key: metaCommandKey(id), ...(id.fingerprint === undefined ? {} : { fingerprint: id.fingerprint }) };
}
