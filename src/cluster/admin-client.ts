/**
 * The admin HTTP API of a node, and its client (used by `raftblock volume ...`, `raftblock
 * status` and the cluster tests).
 *
 * Every node serves it on its `--http HOST:PORT` (beside /metrics and /healthz). JSON in and
 * out, `Content-Type: application/json`. The endpoints:
 *
 *   GET    /v1/status                    → NodeStatus      this node and every group it runs
 *   GET    /v1/map                       → ClusterMap      the map as applied on this node
 *   GET    /v1/volumes                   → VolumeList
 *   POST   /v1/volumes                   ← CreateVolumeRequest  → 201 VolumeResponse
 *   POST   /v1/volumes/{name}/resize     ← ResizeVolumeRequest  → 200 VolumeResponse
 *   DELETE /v1/volumes/{name}            → 200 VolumeResponse (the volume as it was)
 *   POST   /v1/pools                     ← CreatePoolRequest    → 201 PoolResponse
 *   POST   /v1/pools/{name}/pgs/{i}/reset ← { acceptDataLoss: true } → 200 PoolResponse  PG i
 *                                         starts over empty; refused 409 PG_NOT_LOST unless
 *                                         every replica's node was replaced (data dir lost)
 *                                         and no node of the map holds anything of the PG,
 *                                         409 PG_LOSS_UNCONFIRMED while a node of the map
 *                                         (not one being replaced) cannot be asked
 *   GET    /v1/groups/{groupId}/digest   → GroupDigest     checksum of this replica's data
 *                                         (verifyPgs asks every replica of every PG: pool verify),
 *                                         or { restoring: true } during a snapshot restore
 *   POST   /v1/groups/{groupId}/rebuild  → RebuildReplicaResponse  this node's replica is held
 *                                         and rebuilt from the PG's leader (pool repair);
 *                                         body { sources?: [ids] }: refused 409 REPAIR_REFUSED
 *                                         unless the PG's leader is one of them;
 *                                         refused 409 PG_QUORUM_AT_RISK (the other voters are
 *                                         no quorum without it), 503 UNAVAILABLE (a move is
 *                                         under way), 404 NOT_FOUND (no replica here), 400
 *                                         for group 0
 *   POST   /v1/nodes/{id}/state          ← { state: "in" | "out" }  → 200 { epoch }
 *                                         `out` drains the node: placement moves its PGs away
 *   DELETE /v1/nodes/{id}                → 200 RemoveNodeResponse  removes a drained node from
 *                                         the map (and from the metadata group first); refused
 *                                         409 NODE_STILL_IN (not out), NODE_HOLDS_REPLICAS (a PG
 *                                         lists it in the map or its Raft configuration; the
 *                                         body's `groups` names them), META_QUORUM_AT_RISK;
 *                                         404 NOT_FOUND once removed
 *   POST   /v1/nodes/{id}/replace        → 200 ReplaceNodeResponse  the node's data dir was
 *                                         lost: the next data dir to register under the id
 *                                         is taken and rebuilds its replicas from their
 *                                         leaders; refused 409 NODE_ALIVE (reachable),
 *                                         META_QUORUM_AT_RISK; 404 NOT_FOUND (not in the map)
 *
 * Changes to the map (volumes, pools) are group-0 commands (see map.ts): the node that
 * receives one proposes it to group 0 — forwarding it to the group-0 leader over the peer
 * transport when it is not the leader — and answers once it is committed and applied, with the
 * map epoch that includes it. A node that cannot forward answers 503 NOT_LEADER with `leader`
 * set to the group-0 leader's HTTP address when known; this client then retries there.
 *
 * Changes (POST, DELETE) may carry `Idempotency-Key: KEY` (1..128 printable ASCII characters):
 * the same key on the same method and path is one command, applied once, and a repeat is
 * answered as the first attempt was (idempotency-key.ts). This client sends a fresh key with
 * every change and repeats the change under it when the answer is lost.
 *
 * Errors: a non-2xx status with body `{ "error": { "code": CODE, "message": TEXT, "leader"?:
 * HOST:PORT } }`, CODE being the RaftblockError code; `httpStatusOf(code)` is the status table
 * both sides use. A request body over 64 KiB is refused 413 PAYLOAD_TOO_LARGE, unread, and the
 * connection closed after the answer.
 */
import {
  InvalidArgument,
  NotFound,
  AlreadyExists,
  ProtocolError,
  RaftblockError,
  TimedOut,
  Unavailable,
  NotLeader,
  NodeAlive,
  NodeStillIn,
  NodeHoldsReplicas,
  MetaQuorumAtRisk,
  NodeRemoved,
  PgLossUnconfirmed,
  PgNotLost,
  PgQuorumAtRisk,
  RepairRefused,
  IdempotencyKeyReused,
  PayloadTooLarge,
  UpgradeRequired,
} from '../common/errors.js';
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { idempotencyKeyHeader } from './idempotency-key.js';
import { isDialableAddress, parseHostPort } from '../common/address.js';
import type { ClusterMap, FailureDomain, NodeAddresses, NodeId, NodeState, Pool, Volume } from './map.js';
import { allGroups, pgGroupId } from './map.js';
import { judgeReplicas, repairSources, type PgVerdict, type ReplicaDigest } from './pg-verify.js';
import { printable } from './answer-fields.js';
import {
  checkGroupDigest,
  checkMapAnswer,
  checkNodeStatus,
  checkNodeChangeResponse,
  checkNodeStateResponse,
  checkPoolResponse,
  checkRebuildReplicaResponse,
  checkVolumeList,
  checkVolumeResponse,
  maxMoveHeldChars,
} from './admin-answers.js';

/**
 * `raftblock start` gives its first node this HTTP port (node i gets defaultAdminHttpPort + i - 1),
 * so the admin commands find a local cluster without --server.
 */
export const defaultAdminHttpPort = 10900;
export const defaultAdminServer = `127.0.0.1:${defaultAdminHttpPort}`;
/**
 * Longer than a node's own retry of a map command (metaCommandDeadlineMs in node.ts, 10 s):
 * across a group-0 leader change the node's answer or its refusal arrives, not this timeout.
 */
export const defaultAdminTimeoutMs = 15_000;
/** A replica whose applied index trails the leader's commit index by more is "lagging". */
export const lagThresholdEntries = 64;
/** NOT_LEADER redirects followed before giving up. */
export const maxRedirects = 3;
/** Repeats of a change whose outcome is unknown (UNAVAILABLE, TIMED_OUT), under its Idempotency-Key. */
export const maxInDoubtRetries = 2;
/**
 * Longest answer read from a node (a map of thousands of nodes, or the status of a node running
 * thousands of groups, is a few MiB): a peer that sends more is cut off, not buffered until the
 * command runs out of memory.
 */
const maxAnswerBytes = 64 * 1024 * 1024;
/** Pause before the n-th repeat: n times this. */
const inDoubtRetryPauseMs = 500;

// ---------------------------------------------------------------------------------------------
// Request and response bodies

/** GET /v1/status */
export interface NodeStatus {
  nodeId: NodeId;
  /** The cluster this node belongs to (absent while it does not know it yet). */
  clusterId?: string;
  /** Epoch of the map applied on this node. */
  epoch: number;
  /** Milliseconds since the process started. */
  uptimeMs: number;
  /** The node's build (absent from a node of a build before it reported one). */
  version?: string;
  /** The store command level the node's build applies (ops.ts StoreOpsLevel; absent as version). */
  storeOpsLevel?: number;
  /** Every Raft group this node runs (group 0 if it is a metadata member), ascending by id. */
  groups: GroupStatus[];
}

export type GroupRole = 'leader' | 'follower' | 'candidate' | 'preCandidate' | 'learner';

export interface GroupStatus {
  groupId: number;
  role: GroupRole;
  term: number;
  /** The leader this node knows of; 0 when none. */
  leader: NodeId;
  commitIndex: number;
  appliedIndex: number;
  /** Last index in this node's log. */
  lastIndex: number;
  /** Current voters of the group's Raft configuration (the latest in this node's log). */
  voters: NodeId[];
  /** Learners (new replicas catching up while a PG moves), when there are some. */
  learners?: NodeId[];
  /** The outgoing voters while the configuration is joint (a move's swap). */
  votersOutgoing?: NodeId[];
  /**
   * The latest configuration in this node's log is joint or not yet committed: a membership
   * change is under way, and until it settles the group may need a member it is about to drop.
   */
  configurationPending?: boolean;
  /**
   * True while the replica is held until it is rebuilt from its leader: its WAL found corruption
   * in this group, a snapshot restore was cut short, or `pool repair` asked for it.
   */
  needsRepair?: boolean;
  /**
   * Set by the group's leader while the PG's move waits before adding a replica whose node
   * cannot yet apply what the PG holds (a rolling upgrade under way): why, naming the node.
   */
  moveHeld?: string;
}

/** GET /v1/volumes */
export interface VolumeList {
  epoch: number;
  volumes: Volume[];
}

/** POST /v1/volumes */
export interface CreateVolumeRequest {
  name: string;
  sizeBytes: number;
  /** Default `default`. */
  pool?: string;
  /** Default 4 MiB. */
  extentBytes?: number;
}

/** POST /v1/volumes/{name}/resize */
export interface ResizeVolumeRequest {
  sizeBytes: number;
  /** Required to shrink (data past the new end is discarded). */
  allowShrink?: boolean;
}

/** Answer to a volume change: the volume and the map epoch that includes the change. */
export interface VolumeResponse {
  epoch: number;
  volume: Volume;
  /** False when a create found the identical volume already there (nothing changed). */
  changed?: boolean;
}

/** POST /v1/pools */
export interface CreatePoolRequest {
  name: string;
  replicas: number;
  pgCount: number;
  failureDomain: FailureDomain;
}

export interface PoolResponse {
  epoch: number;
  pool: Pool;
  /** False when a create found the identical pool already there (nothing changed). */
  changed?: boolean;
}

/**
 * GET /v1/groups/{groupId}/digest: a checksum of this replica's data at `appliedIndex`, over
 * every extent of the group in a canonical order (extent key ascending, unallocated ranges
 * hashed as zeros, so two replicas with the same bytes agree however they were written,
 * trimmed or snapshotted). Replicas of a quiet group at the same applied index must agree.
 * A replica restoring a snapshot, or that began one while it was read, answers `restoring`
 * instead: no state of it was read (pg-digest.ts); ask again.
 */
export type GroupDigest =
  | {
      groupId: number;
      nodeId: NodeId;
      appliedIndex: number;
      /** The applied index once the read ended: another than `appliedIndex`, writes were applied meanwhile. */
      appliedIndexAfter?: number;
      /** Hex string. */
      digest: string;
    }
  | { groupId: number; nodeId: NodeId; restoring: true };

/** POST /v1/groups/{groupId}/rebuild: this node's replica of the group is held and being rebuilt. */
export interface RebuildReplicaResponse {
  groupId: number;
  nodeId: NodeId;
  /** The PG's leader, whose snapshot the replica is rebuilt from. */
  leader: NodeId;
  /** The leader's commit index when it agreed: the rebuilt replica reaches at least this. */
  commitIndex: number;
  /** A rebuild was already under way (this request started none). */
  underWay?: boolean;
}

/** What `raftblock pool repair` did: one PG replica rebuilt from its leader. */
export interface PgRepairResult {
  pool: string;
  pgIndex: number;
  groupId: number;
  nodeId: NodeId;
  leader: NodeId;
  /** What verifying the PG found before the repair (absent when forced). */
  verdictBefore?: PgVerdict['result'];
  /** The rebuilt replica's applied index when it was seen caught up. */
  appliedIndex: number;
  elapsedMs: number;
}

/** One PG's replicas compared (`raftblock pool verify`); see pg-verify.ts for the verdicts. */
export type PgVerifyResult = { pool: string; pgIndex: number; groupId: number; replicas: NodeId[] } & PgVerdict;

/** DELETE /v1/nodes/{id} */
export interface RemoveNodeResponse {
  /** The map epoch without the node. */
  epoch: number;
  nodeId: NodeId;
  /** The node was a member of the metadata group (group 0) and left it first. */
  metaVoterRemoved: boolean;
}

/** POST /v1/nodes/{id}/replace */
export interface ReplaceNodeResponse {
  /** The map epoch that forgot the lost data dir (the node's rebuiltAtEpoch). */
  epoch: number;
  nodeId: NodeId;
  /** The node was a member of the metadata group (group 0) and left it first. */
  metaVoterRemoved: boolean;
}

export interface ErrorBody {
  /** `groups`: the PG group ids a NODE_HOLDS_REPLICAS refusal names. */
  error: { code: string; message: string; leader?: string; groups?: number[] };
}

/** The HTTP status for a RaftblockError code; both the server and this client use it. */
export function httpStatusOf(code: string): number {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'OUT_OF_RANGE':
      return 400;
    case 'UNAUTHENTICATED':
      return 401;
    case 'NOT_FOUND':
      return 404;
    case 'PAYLOAD_TOO_LARGE':
      return 413;
    case 'ALREADY_EXISTS':
    case 'STALE_EPOCH':
    case 'NODE_STILL_IN':
    case 'NODE_HOLDS_REPLICAS':
    case 'META_QUORUM_AT_RISK':
    case 'NODE_REMOVED':
    case 'NODE_ALIVE':
    case 'PG_NOT_LOST':
    case 'PG_LOSS_UNCONFIRMED':
    case 'PG_QUORUM_AT_RISK':
    case 'REPAIR_REFUSED':
    case 'UPGRADE_REQUIRED':
      return 409;
    case 'PLACEMENT_IMPOSSIBLE':
    case 'IDEMPOTENCY_KEY_REUSED':
      return 422;
    case 'NOT_SUPPORTED':
      return 501;
    case 'NOT_LEADER':
    case 'UNAVAILABLE':
      return 503;
    case 'TIMED_OUT':
      return 504;
    default:
      return 500;
  }
}

/** Rebuilds a typed error from an error body. */
export function errorFromBody(body: ErrorBody['error']): RaftblockError {
  switch (body.code) {
    case 'INVALID_ARGUMENT':
      return new InvalidArgument(body.message);
    case 'NOT_FOUND':
      return new NotFound(body.message);
    case 'ALREADY_EXISTS':
      return new AlreadyExists(body.message);
    case 'UNAVAILABLE':
      return new Unavailable(body.message);
    case 'TIMED_OUT':
      return new TimedOut(body.message);
    case 'NOT_LEADER':
      return new NotLeader(body.message, body.leader);
    case 'NODE_STILL_IN':
      return new NodeStillIn(body.message);
    case 'NODE_HOLDS_REPLICAS':
      return new NodeHoldsReplicas(body.message, Array.isArray(body.groups) ? body.groups : []);
    case 'META_QUORUM_AT_RISK':
      return new MetaQuorumAtRisk(body.message);
    case 'NODE_REMOVED':
      return new NodeRemoved(body.message);
    case 'NODE_ALIVE':
      return new NodeAlive(body.message);
    case 'PG_NOT_LOST':
      return new PgNotLost(body.message);
    case 'PG_LOSS_UNCONFIRMED':
      return new PgLossUnconfirmed(body.message);
    case 'PG_QUORUM_AT_RISK':
      return new PgQuorumAtRisk(body.message);
    case 'UPGRADE_REQUIRED':
      return new UpgradeRequired(body.message);
    case 'REPAIR_REFUSED':
      return new RepairRefused(body.message);
    case 'IDEMPOTENCY_KEY_REUSED':
      return new IdempotencyKeyReused(body.message);
    case 'PAYLOAD_TOO_LARGE':
      return new PayloadTooLarge(body.message);
    default:
      return new RaftblockError(body.code, body.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster-wide status, merged by the client from every node's /v1/status

export type GroupHealth = 'ok' | 'lagging' | 'unavailable';

export interface ReplicaView {
  nodeId: NodeId;
  /** False when the node did not answer /v1/status or does not run the group. */
  reachable: boolean;
  role?: GroupRole;
  term?: number;
  commitIndex?: number;
  appliedIndex?: number;
  needsRepair?: boolean;
}

export interface GroupView {
  groupId: number;
  /** Pool name; `metadata` for group 0. */
  pool: string;
  pgIndex: number;
  /** Replica set in the map (group 0: the nodes that report running it). */
  replicas: NodeId[];
  /**
   * The Raft configuration as the leader reports it, when it differs from `replicas` (the PG is
   * moving towards them; see pg-mover.ts).
   */
  configuration?: { voters: NodeId[]; learners?: NodeId[]; votersOutgoing?: NodeId[] };
  /** Why the move waits for an upgrade (GroupStatus.moveHeld, the leader's), while it does. */
  moveHeld?: string;
  /** Highest-term replica that calls itself leader; 0 when none. */
  leader: NodeId;
  term: number;
  /** The leader's, when there is one; else the highest seen. */
  commitIndex: number;
  appliedIndex: number;
  health: GroupHealth;
  /** Why the group is not ok. */
  reason?: string;
  members: ReplicaView[];
}

export interface NodeView {
  id: NodeId;
  addresses: NodeAddresses;
  labels: Record<string, string>;
  weight: number;
  state: NodeState;
  /** `raftblock node replace` ran and no data dir has registered under the id since. */
  replacing?: true;
  /** Marked out by group 0's leader for not answering; marked in again when it answers. */
  autoOut?: true;
  reachable: boolean;
  /** The cluster id the node reports (when reachable and it knows it). */
  clusterId?: string;
  /** The map epoch the node has applied (when reachable). */
  epoch?: number;
  uptimeMs?: number;
  /** The node's build and the store command level it applies (when reachable and it reports them). */
  version?: string;
  storeOpsLevel?: number;
  error?: string;
}

export interface ClusterStatus {
  /** The cluster's id, from the map served by the server asked (null in a map without one yet). */
  clusterId: string | null;
  /** Epoch of the map served by the server asked. */
  epoch: number;
  server: string;
  nodes: NodeView[];
  groups: GroupView[];
  /** `movesHeld`: PGs whose move waits for an upgrade (GroupView.moveHeld), whatever their health. */
  summary: { nodes: number; nodesReachable: number; groups: number; ok: number; lagging: number; unavailable: number; movesHeld: number };
}

/** Merges a map and the nodes' statuses into a cluster view. Pure, so it is unit-tested. */
export function mergeClusterStatus(
  server: string,
  map: ClusterMap,
  statuses: ReadonlyMap<NodeId, NodeStatus | Error>,
): ClusterStatus {
  const foreign = (s: NodeStatus): boolean => s.clusterId !== undefined && map.clusterId !== undefined && s.clusterId !== map.clusterId;
  const nodes: NodeView[] = map.nodes.map((n) => {
    const s = statuses.get(n.id);
    const base = { id: n.id, addresses: n.addresses, labels: n.labels, weight: n.weight, state: n.state, ...(n.replacing ? { replacing: true as const } : {}), ...(n.autoOut ? { autoOut: true as const } : {}) };
    if (s === undefined) return { ...base, reachable: false, error: 'not asked' };
    if (s instanceof Error) return { ...base, reachable: false, error: s.message };
    // Something else now answers at that address (a node of another cluster on a reused port).
    if (foreign(s)) return { ...base, reachable: false, clusterId: s.clusterId, error: `answers as a node of cluster ${s.clusterId}` };
    return { ...base, reachable: true, clusterId: s.clusterId, epoch: s.epoch, uptimeMs: s.uptimeMs, version: s.version, storeOpsLevel: s.storeOpsLevel };
  });
  const byNode = new Map<NodeId, Map<number, GroupStatus>>();
  for (const [id, s] of statuses) {
    if (s instanceof Error || foreign(s)) continue;
    byNode.set(id, new Map(s.groups.map((g) => [g.groupId, g])));
  }
  // Group 0 is not in the map: its members are the voters its replicas report, else the nodes
  // that report running it. The newest view wins: highest term, then its leader's, then the
  // longest log. A replica still catching up reports the same term with an older
  // configuration, and must not win by answering first (status once named a group of three
  // voters [1] so, from a voter that had not yet appended the entries adding the other two).
  let best: GroupStatus | undefined;
  const newer = (a: GroupStatus, b: GroupStatus): boolean =>
    a.term !== b.term ? a.term > b.term : (a.role === 'leader') !== (b.role === 'leader') ? a.role === 'leader' : a.lastIndex > b.lastIndex;
  const running: NodeId[] = [];
  for (const [id, gs] of byNode) {
    const g0 = gs.get(0);
    if (!g0) continue;
    running.push(id);
    if (g0.voters.length > 0 && (best === undefined || newer(g0, best))) best = g0;
  }
  const metadataMembers = best ? [...best.voters] : running;
  metadataMembers.sort((a, b) => a - b);
  const targets = [{ groupId: 0, pool: 'metadata', pgIndex: 0, replicas: metadataMembers }, ...allGroups(map)];
  const groups = targets.map((t) => viewGroup(t, byNode));
  const count = (h: GroupHealth): number => groups.filter((g) => g.health === h).length;
  return {
    clusterId: map.clusterId ?? null,
    epoch: map.epoch,
    server,
    nodes,
    groups,
    summary: {
      nodes: nodes.length,
      nodesReachable: nodes.filter((n) => n.reachable).length,
      groups: groups.length,
      ok: count('ok'),
      lagging: count('lagging'),
      unavailable: count('unavailable'),
      movesHeld: groups.filter((g) => g.moveHeld !== undefined).length,
    },
  };
}

function viewGroup(
  t: { groupId: number; pool: string; pgIndex: number; replicas: NodeId[] },
  byNode: ReadonlyMap<NodeId, ReadonlyMap<number, GroupStatus>>,
): GroupView {
  const members: ReplicaView[] = t.replicas.map((nodeId) => {
    const g = byNode.get(nodeId)?.get(t.groupId);
    if (!g) return { nodeId, reachable: false };
    return { nodeId, reachable: true, role: g.role, term: g.term, commitIndex: g.commitIndex, appliedIndex: g.appliedIndex, needsRepair: g.needsRepair };
  });
  let leader: ReplicaView | undefined;
  for (const m of members) if (m.role === 'leader' && (!leader || (m.term ?? 0) > (leader.term ?? 0))) leader = m;
  // A PG moving onto all new nodes is still led from the old ones, outside the map's replicas:
  // its configuration (and why its move may wait) comes from that leader.
  let outside: { nodeId: NodeId; g: GroupStatus } | undefined;
  if (!leader && t.groupId !== 0) {
    for (const [nodeId, statuses] of byNode) {
      const g = statuses.get(t.groupId);
      if (g?.role === 'leader' && (!outside || g.term > outside.g.term)) outside = { nodeId, g };
    }
  }
  const conf = leader ? byNode.get(leader.nodeId)?.get(t.groupId) : outside?.g;
  const same = (a: NodeId[], b: NodeId[]): boolean => a.length === b.length && [...a].sort((x, y) => x - y).every((x, i) => x === [...b].sort((p, q) => p - q)[i]);
  const moving = conf !== undefined && t.groupId !== 0 && (!same(conf.voters, t.replicas) || (conf.learners?.length ?? 0) > 0 || (conf.votersOutgoing?.length ?? 0) > 0);
  // Group 0 grows in one joint change; until it settles the map may still need the one old
  // voter (its loss would stop the map), so the group is not yet ok.
  const metaSettling = t.groupId === 0 && conf?.configurationPending === true;
  const reachable = members.filter((m) => m.reachable);
  const maxOf = (f: (m: ReplicaView) => number | undefined): number => reachable.reduce((a, m) => Math.max(a, f(m) ?? 0), 0);
  const view: GroupView = {
    groupId: t.groupId,
    pool: t.pool,
    pgIndex: t.pgIndex,
    replicas: t.replicas,
    ...(moving && conf ? { configuration: { voters: conf.voters, learners: conf.learners, votersOutgoing: conf.votersOutgoing } } : {}),
    ...(moving && typeof conf?.moveHeld === 'string' ? { moveHeld: printable(conf.moveHeld, maxMoveHeldChars) } : {}),
    leader: leader?.nodeId ?? outside?.nodeId ?? 0,
    term: leader?.term ?? outside?.g.term ?? maxOf((m) => m.term),
    commitIndex: leader?.commitIndex ?? outside?.g.commitIndex ?? maxOf((m) => m.commitIndex),
    appliedIndex: leader?.appliedIndex ?? outside?.g.appliedIndex ?? maxOf((m) => m.appliedIndex),
    health: 'ok',
    members,
  };
  const quorum = Math.floor(t.replicas.length / 2) + 1;
  if (t.replicas.length === 0) return { ...view, health: 'unavailable', reason: 'no replica reports the group' };
  if (!leader && outside) return { ...view, health: 'lagging', reason: `led by node ${outside.nodeId}, outside its map replicas, while it moves` };
  if (!leader) return { ...view, health: 'unavailable', reason: 'no leader' };
  if (reachable.length < quorum) return { ...view, health: 'unavailable', reason: `${reachable.length} of ${t.replicas.length} replicas reachable` };
  if (metaSettling) return { ...view, health: 'lagging', reason: 'a membership change is under way (joint or uncommitted configuration)' };
  const behind = members.filter((m) => !m.reachable || m.needsRepair || view.commitIndex - (m.appliedIndex ?? 0) > lagThresholdEntries);
  if (behind.length > 0) {
    const what = behind.map((m) => (!m.reachable ? `${m.nodeId} unreachable` : m.needsRepair ? `${m.nodeId} needs repair` : `${m.nodeId} applied ${m.appliedIndex}`));
    return { ...view, health: 'lagging', reason: what.join(', ') };
  }
  return view;
}

/** Longest error message shown from a node's error answer. */
const maxErrorMessageChars = 2000;
/** An error code as RaftblockError names them. */
const errorCodePattern = /^[A-Z][A-Z0-9_]{0,63}$/;

/**
 * An error answer's body, its strings made printable and bounded, a NOT_LEADER hint kept only
 * when it is a HOST:PORT (the client connects there next) and NODE_HOLDS_REPLICAS' group ids only
 * when they are ids; undefined when the body is not an error of this API (the caller reports the
 * status and the text instead).
 */
export function errorBodyFrom(parsed: unknown): ErrorBody['error'] | undefined {
  const e = (parsed as Partial<ErrorBody> | null | undefined)?.error;
  if (e === null || typeof e !== 'object' || typeof e.code !== 'string' || !errorCodePattern.test(e.code) || typeof e.message !== 'string') return undefined;
  const leader = typeof e.leader === 'string' && isDialableAddress(e.leader) ? e.leader : undefined;
  const groups = Array.isArray(e.groups) ? e.groups.filter((g): g is number => Number.isSafeInteger(g) && g >= 0) : undefined;
  return { code: e.code, message: printable(e.message, maxErrorMessageChars), ...(leader === undefined ? {} : { leader }), ...(groups === undefined ? {} : { groups }) };
}

// ---------------------------------------------------------------------------------------------
// The client

export interface AdminClientOptions {
  timeoutMs?: number;
  /** The admin token (admin-token.ts), sent as a bearer token on every request. */
  token?: string;
  /** Speak HTTPS to the nodes, trusting these PEM CA certificates (http-tls.ts); absent: HTTP. */
  ca?: Buffer;
}

/** Errors of a TLS connection that repeating it cannot mend (an untrusted or mismatched certificate). */
function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || code === 'EPROTO' || /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code));
}

export class AdminClient {
  readonly server: string;
  private readonly timeoutMs: number;
  private readonly token: string | undefined;
  private readonly ca: Buffer | undefined;

  /** `server` is a node's HTTP HOST:PORT. */
  constructor(server: string, opts: AdminClientOptions = {}) {
    parseHostPort(server, 'server');
    this.server = server;
    this.timeoutMs = opts.timeoutMs ?? defaultAdminTimeoutMs;
    this.token = opts.token;
    this.ca = opts.ca;
  }

  /** This node's status, checked (admin-answers.ts): a malformed answer is a ProtocolError. */
  status(): Promise<NodeStatus> {
    return this.call('GET', '/v1/status', checkNodeStatus);
  }

  /** The cluster map this node serves, checked (map.ts mapFrom): a malformed one is a ProtocolError. */
  map(): Promise<ClusterMap> {
    return this.call('GET', '/v1/map', checkMapAnswer);
  }

  listVolumes(): Promise<VolumeList> {
    return this.call('GET', '/v1/volumes', checkVolumeList);
  }

  createVolume(req: CreateVolumeRequest): Promise<VolumeResponse> {
    return this.call('POST', '/v1/volumes', checkVolumeResponse, req);
  }

  resizeVolume(name: string, req: ResizeVolumeRequest): Promise<VolumeResponse> {
    return this.call('POST', `/v1/volumes/${encodeURIComponent(name)}/resize`, checkVolumeResponse, req);
  }

  deleteVolume(name: string): Promise<VolumeResponse> {
    return this.call('DELETE', `/v1/volumes/${encodeURIComponent(name)}`, checkVolumeResponse);
  }

  createPool(req: CreatePoolRequest): Promise<PoolResponse> {
    return this.call('POST', '/v1/pools', checkPoolResponse, req);
  }

  /**
   * Starts PG `pg` of `pool` over, empty, once every replica of it lost its data dir (each
   * node replaced): what it held is gone. Refused PG_NOT_LOST while a replica may hold data
   * or any node of the map still runs the PG, PG_LOSS_UNCONFIRMED while a node of the map
   * cannot be asked.
   */
  resetPg(pool: string, pg: number): Promise<PoolResponse> {
    return this.call('POST', `/v1/pools/${encodeURIComponent(pool)}/pgs/${pg}/reset`, checkPoolResponse, { acceptDataLoss: true });
  }

  /** Marks a node `out` (its PGs move to other nodes) or back `in`. */
  setNodeState(nodeId: NodeId, state: NodeState): Promise<{ epoch: number }> {
    return this.call('POST', `/v1/nodes/${nodeId}/state`, checkNodeStateResponse, { state });
  }

  /**
   * Removes a drained node (`out`, every PG moved off it) from the map, taking it out of the
   * metadata group first when it is a member. Again after success: NOT_FOUND.
   */
  removeNode(nodeId: NodeId): Promise<RemoveNodeResponse> {
    return this.call('DELETE', `/v1/nodes/${nodeId}`, checkNodeChangeResponse);
  }

  /**
   * The node's data dir was lost (the node is down): the next data dir to register under its
   * id is taken, and rebuilds every replica the id held from its leader.
   */
  replaceNode(nodeId: NodeId): Promise<ReplaceNodeResponse> {
    return this.call('POST', `/v1/nodes/${nodeId}/replace`, checkNodeChangeResponse);
  }

  groupDigest(groupId: number): Promise<GroupDigest> {
    return this.call('GET', `/v1/groups/${groupId}/digest`, checkGroupDigest);
  }

  /**
   * POST /v1/groups/{groupId}/rebuild on the node holding the replica (see repairPg); with
   * `sources`, refused (REPAIR_REFUSED) unless the PG's leader is one of them.
   */
  rebuildReplica(groupId: number, sources?: readonly NodeId[]): Promise<RebuildReplicaResponse> {
    return this.call('POST', `/v1/groups/${groupId}/rebuild`, checkRebuildReplicaResponse, sources === undefined ? {} : { sources });
  }

  /**
   * Rebuilds node `nodeId`'s replica of PG `pgIndex` of `pool` from the PG's leader (`raftblock
   * pool repair`), and waits until the rebuilt replica runs again and has applied at least the
   * leader's commit index from when it agreed (or `timeoutMs` passes: TIMED_OUT). The PG is
   * verified first: after a mismatch only an odd replica is rebuilt, and only from a leader
   * holding the majority's copy (pg-verify.ts repairSources; REPAIR_REFUSED otherwise), unless
   * `force`. `verdict`: the PG's verdict from a verify just run (not verified again).
   */
  async repairPg(opts: { pool: string; pgIndex: number; nodeId: NodeId; force?: boolean; verdict?: PgVerdict; timeoutMs?: number; pollMs?: number }): Promise<PgRepairResult> {
    const started = performance.now();
    const map = await this.map();
    const pool = map.pools.find((p) => p.name === opts.pool);
    if (!pool) throw new NotFound(`pool ${opts.pool} is not in the map`);
    if (opts.pgIndex >= pool.pgCount) throw new NotFound(`pool ${pool.name} has ${pool.pgCount} PGs, no PG ${opts.pgIndex}`);
    const replicas = pool.pgs[opts.pgIndex].replicas;
    if (!replicas.includes(opts.nodeId)) throw new InvalidArgument(`PG ${pool.name}/${opts.pgIndex} has its replicas on node ${replicas.join(', ')}, not on node ${opts.nodeId}`);
    const node = map.nodes.find((n) => n.id === opts.nodeId);
    if (!node) throw new NotFound(`node ${opts.nodeId} is not in the map`);
    const groupId = pgGroupId(pool.id, opts.pgIndex);
    let sources: NodeId[] | undefined;
    let before: PgVerdict['result'] | undefined;
    if (!opts.force) {
      const verdict = opts.verdict ?? (await this.verifyPgs({ pool: pool.name, pgIndex: opts.pgIndex, attempts: 3 }))[0];
      before = verdict.result;
      const judged = repairSources(verdict, replicas, opts.nodeId);
      if (!judged.ok) throw new RepairRefused(`PG ${pool.name}/${opts.pgIndex}: ${judged.reason} (--force rebuilds node ${opts.nodeId}'s replica from the PG's leader regardless)`);
      sources = judged.sources;
    }
    const deadline = started + (opts.timeoutMs ?? 600_000);
    // The node asks the PG's leader again for as long as its own tick says a leader may take
    // to settle (RAFTBLOCK_TICK_MS), which the client cannot know: the call may take as long
    // as the repair may.
    const r = await this.clientOf(node.addresses.http, Math.max(this.timeoutMs, deadline - performance.now())).rebuildReplica(groupId, sources);
    const at = this.clientOf(node.addresses.http, this.timeoutMs);
    for (;;) {
      await new Promise((res) => setTimeout(res, opts.pollMs ?? 250));
      const g = (await at.status().catch(() => undefined))?.groups.find((x) => x.groupId === groupId);
      if (g && !g.needsRepair && g.appliedIndex >= r.commitIndex) {
        return { pool: pool.name, pgIndex: opts.pgIndex, groupId, nodeId: opts.nodeId, leader: r.leader, verdictBefore: before, appliedIndex: g.appliedIndex, elapsedMs: Math.round(performance.now() - started) };
      }
      if (performance.now() > deadline) {
        throw new TimedOut(`node ${opts.nodeId}'s replica of PG ${pool.name}/${opts.pgIndex} is still being rebuilt from node ${r.leader} (it carries on; see raftblock status)`);
      }
    }
  }

  /**
   * Compares the replicas of every PG (of `pool`, or of every pool; only PG `pgIndex` if
   * given): each replica's node is asked for its digest, and a PG being written, or with a
   * replica restoring a snapshot, is asked again, up to `attempts` times (see pg-verify.ts).
   * Reads every replica's data in full.
   */
  async verifyPgs(opts: { pool?: string; pgIndex?: number; attempts?: number; pauseMs?: number } = {}): Promise<PgVerifyResult[]> {
    const map = await this.map();
    const pools = opts.pool === undefined ? map.pools : map.pools.filter((p) => p.name === opts.pool);
    if (pools.length === 0) throw new NotFound(`pool ${opts.pool} is not in the map`);
    const attempts = opts.attempts ?? 5;
    const out: PgVerifyResult[] = [];
    for (const pool of pools) {
      if (opts.pgIndex !== undefined && opts.pgIndex >= pool.pgCount) throw new NotFound(`pool ${pool.name} has ${pool.pgCount} PGs, no PG ${opts.pgIndex}`);
      for (let pgIndex = 0; pgIndex < pool.pgCount; pgIndex++) {
        if (opts.pgIndex !== undefined && pgIndex !== opts.pgIndex) continue;
        const groupId = pgGroupId(pool.id, pgIndex);
        const replicas = pool.pgs[pgIndex].replicas;
        let verdict: PgVerdict = { result: 'busy', appliedIndexes: {} };
        for (let attempt = 1; attempt <= attempts; attempt++) {
          const answers = await Promise.all(replicas.map((id) => this.replicaDigest(map, id, groupId)));
          verdict = judgeReplicas(answers);
          if (verdict.result !== 'busy' && verdict.result !== 'restoring') break;
          if (attempt < attempts) await new Promise((r) => setTimeout(r, opts.pauseMs ?? 500));
        }
        out.push({ pool: pool.name, pgIndex, groupId, replicas: [...replicas], ...verdict });
      }
    }
    return out;
  }

  /**
   * Rebuilds the odd replicas out of every mismatched PG in `results` (a verify just run) from
   * their leaders, where a strict majority of replicas holds one copy (pg-verify.ts
   * repairSources): one replica at a time, each waited for. A PG without such a majority is
   * left alone, reported with why.
   */
  async repairMismatches(results: readonly PgVerifyResult[], opts: { timeoutMs?: number } = {}): Promise<{ repaired: PgRepairResult[]; left: { pool: string; pgIndex: number; reason: string }[] }> {
    const repaired: PgRepairResult[] = [];
    const left: { pool: string; pgIndex: number; reason: string }[] = [];
    for (const r of results) {
      if (r.result !== 'mismatch') continue;
      for (const nodeId of r.groups.slice(1).flatMap((g) => g.nodeIds)) {
        const judged = repairSources(r, r.replicas, nodeId);
        if (!judged.ok) {
          left.push({ pool: r.pool, pgIndex: r.pgIndex, reason: judged.reason });
          break;
        }
        repaired.push(await this.repairPg({ pool: r.pool, pgIndex: r.pgIndex, nodeId, verdict: r, timeoutMs: opts.timeoutMs }));
      }
    }
    return { repaired, left };
  }

  private async replicaDigest(map: ClusterMap, nodeId: NodeId, groupId: number): Promise<ReplicaDigest> {
    const node = map.nodes.find((n) => n.id === nodeId);
    if (!node) return { nodeId, error: 'not in the map' };
    try {
      // A digest reads the whole replica: far longer than a status call.
      const d = await this.clientOf(node.addresses.http, Math.max(this.timeoutMs, 600_000)).groupDigest(groupId);
      if ('restoring' in d) return { nodeId, restoring: true };
      return { nodeId, appliedIndex: d.appliedIndex, appliedIndexAfter: d.appliedIndexAfter, digest: d.digest };
    } catch (err) {
      return { nodeId, error: err instanceof Error ? err.message : String(err) };
    }
  }

  /** A client of another node's admin API, with this one's token and CA. */
  private clientOf(server: string, timeoutMs: number): AdminClient {
    return new AdminClient(server, { timeoutMs, token: this.token, ca: this.ca });
  }

  /** The map from this server, merged with /v1/status from every node in it (in parallel). */
  async clusterStatus(): Promise<ClusterStatus> {
    const map = await this.map();
    const statuses = new Map<NodeId, NodeStatus | Error>();
    await Promise.all(
      map.nodes.map(async (n) => {
        try {
          statuses.set(n.id, await this.clientOf(n.addresses.http, Math.min(this.timeoutMs, 3000)).status());
        } catch (err) {
          statuses.set(n.id, err instanceof Error ? err : new Error(String(err)));
        }
      }),
    );
    return mergeClusterStatus(this.server, map, statuses);
  }

  /**
   * One API call, following NOT_LEADER redirects. A change (POST, DELETE) carries one fresh
   * Idempotency-Key on every attempt, so when its answer is lost (a dropped connection, a
   * timeout, a node that could not finish in time) it is sent again, up to
   * `maxInDoubtRetries` times: group 0 applies it once and answers a repeat as it answered
   * the first attempt (idempotency-key.ts). `check` gives a successful answer as its type or
   * throws a ProtocolError (admin-answers.ts): no answer reaches a command unchecked.
   */
  private async call<T>(method: string, path: string, check: (answer: unknown) => T, body?: unknown): Promise<T> {
    let server = this.server;
    const key = method === 'GET' ? undefined : randomUUID();
    let redirects = 0;
    for (let retries = 0; ; ) {
      try {
        return await this.once(server, method, path, check, body, key);
      } catch (err) {
        if (err instanceof NotLeader && err.leaderHint && err.leaderHint !== server && redirects < maxRedirects) {
          server = err.leaderHint;
          redirects++;
          continue;
        }
        if (key !== undefined && (err instanceof Unavailable || err instanceof TimedOut) && retries < maxInDoubtRetries) {
          retries++;
          await new Promise((r) => setTimeout(r, inDoubtRetryPauseMs * retries));
          continue;
        }
        throw err;
      }
    }
  }

  private async once<T>(server: string, method: string, path: string, check: (answer: unknown) => T, body: unknown, idempotencyKey: string | undefined): Promise<T> {
    const { host, port } = parseHostPort(server, 'server');
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    // node:http rather than fetch: fetch refuses the "bad ports" of browsers (e.g. 6000).
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const request = this.ca === undefined ? httpRequest : httpsRequest;
      const req = request(
        {
          host,
          port,
          path,
          method,
          ...(this.ca === undefined ? {} : { ca: this.ca }),
          headers: {
            ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': payload.length }),
            ...(this.token === undefined ? {} : { authorization: `Bearer ${this.token}` }),
            ...(idempotencyKey === undefined ? {} : { [idempotencyKeyHeader]: idempotencyKey }),
          },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let bytes = 0;
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            if (bytes > maxAnswerBytes) {
              req.destroy(new ProtocolError(`${method} ${path} on ${server}: the answer is over the limit of ${maxAnswerBytes} bytes`));
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new TimedOut(`no answer from raftblock node ${server} within ${this.timeoutMs} ms (${method} ${path})`)));
      req.on('error', (err: Error & { code?: string }) => {
        if (err instanceof RaftblockError) reject(err);
        else if (this.ca !== undefined && isTlsFailure(err.code)) {
          reject(new ProtocolError(`TLS with raftblock node ${server} failed: ${err.message} (does the node serve HTTPS with a certificate of the CA in --ca-file, for this address?)`));
        } else reject(new Unavailable(`cannot reach raftblock node at ${server}: ${err.code ?? err.message}`));
      });
      req.end(payload);
    });
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new ProtocolError(`${method} ${path} on ${server}: HTTP ${status}, body is not JSON: ${printable(text, 120)}`);
    }
    if (status < 200 || status > 299) {
      const e = errorBodyFrom(parsed);
      if (e !== undefined) throw errorFromBody(e);
      throw new ProtocolError(`${method} ${path} on ${server}: HTTP ${status} ${printable(text, 120)}`);
    }
    try {
      return check(parsed);
    } catch (err) {
      if (err instanceof ProtocolError) throw new ProtocolError(`${method} ${path} on ${server}: ${err.message}`);
      throw err;
    }
  }
}
