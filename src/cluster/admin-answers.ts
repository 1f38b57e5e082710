/**
 * Checks of the admin API's answers: one function per kind of answer, each giving the answer as
 * its type or throwing a ProtocolError that names the first wrong field (answer-fields.ts).
 * AdminClient runs the check of the endpoint it called on every successful answer, so a command
 * never prints, or indexes into, an answer of another shape.
 *
 * Only what a command reads is checked; fields a newer build adds are dropped, so a command
 * prints (in --json too) only fields it knows the shape of.
 */
import { failureDomainLevels } from './placement.js';
import { ProtocolError } from '../common/errors.js';
import { isClusterId, isName, mapFrom, maxExtentBytes, maxNodeId, maxPgsPerPool, maxReplicas, maxVolumeBytes, minExtentBytes, volumeAlignmentBytes, type ClusterMap, type PgInfo, type Pool, type Volume } from './map.js';
import { AnswerFields, optional, printable } from './answer-fields.js';
import { maxStoreOpsLevel } from '../store/ops.js';
import type { GroupDigest, GroupRole, GroupStatus, NodeStatus, PoolResponse, RebuildReplicaResponse, RemoveNodeResponse, ReplaceNodeResponse, VolumeList, VolumeResponse } from './admin-client.js';

/** A replica digest as pg-digest.ts makes it (`v2:` and hex), or an older build's: a short token. */
const digestPattern = /^[A-Za-z0-9:._-]{1,200}$/;

function checkVolume(f: AnswerFields, x: unknown, where: string): Volume {
  const v = f.object(x, where);
  const sizeBytes = f.integer(v.sizeBytes, `${where}.sizeBytes`, volumeAlignmentBytes, maxVolumeBytes);
  if (sizeBytes % volumeAlignmentBytes !== 0) throw f.bad(`${where}.sizeBytes`, `is not a multiple of ${volumeAlignmentBytes}`, sizeBytes);
  const extentBytes = f.integer(v.extentBytes, `${where}.extentBytes`, minExtentBytes, maxExtentBytes);
  if ((extentBytes & (extentBytes - 1)) !== 0) throw f.bad(`${where}.extentBytes`, 'is not a power of two', extentBytes);
  const discardToBytes = optional(v.discardToBytes, (d) => f.integer(d, `${where}.discardToBytes`, 0, maxVolumeBytes));
  return {
    id: f.integer(v.id, `${where}.id`, 1, Number.MAX_SAFE_INTEGER),
    name: checkName(f, v.name, `${where}.name`),
    pool: checkName(f, v.pool, `${where}.pool`),
    sizeBytes,
    extentBytes,
    ...(discardToBytes === undefined ? {} : { discardToBytes }),
  };
}

function checkName(f: AnswerFields, x: unknown, field: string): string {
  if (!isName(x)) throw f.bad(field, 'is no pool or volume name', x);
  return x;
}

function checkPool(f: AnswerFields, x: unknown, where: string): Pool {
  const p = f.object(x, where);
  const replicas = f.integer(p.replicas, `${where}.replicas`, 1, maxReplicas);
  const pgCount = f.integer(p.pgCount, `${where}.pgCount`, 1, maxPgsPerPool);
  if (typeof p.failureDomain !== 'string' || !(failureDomainLevels as readonly string[]).includes(p.failureDomain)) {
    throw f.bad(`${where}.failureDomain`, `is not one of ${failureDomainLevels.join(', ')}`, p.failureDomain);
  }
  const pgs = f.array(p.pgs, `${where}.pgs`);
  // A command indexes pgs by PG index (reset-pg prints the PG's replicas).
  if (pgs.length !== pgCount) throw f.bad(`${where}.pgs`, `does not list ${pgCount} PGs`, `${pgs.length} listed`);
  const createdEpoch = optional(p.createdEpoch, (e) => f.count(e, `${where}.createdEpoch`));
  return {
    id: f.integer(p.id, `${where}.id`, 1, Number.MAX_SAFE_INTEGER),
    name: checkName(f, p.name, `${where}.name`),
    replicas,
    pgCount,
    failureDomain: p.failureDomain as Pool['failureDomain'],
    pgs: pgs.map((pg, i) => checkPgInfo(f, pg, `${where}.pgs[${i}]`)),
    ...(createdEpoch === undefined ? {} : { createdEpoch }),
  };
}

function checkPgInfo(f: AnswerFields, x: unknown, where: string): PgInfo {
  const pg = f.object(x, where);
  const resetEpoch = optional(pg.resetEpoch, (e) => f.count(e, `${where}.resetEpoch`));
  return {
    replicas: f.nodeIds(pg.replicas, `${where}.replicas`),
    sinceEpoch: f.count(pg.sinceEpoch, `${where}.sinceEpoch`),
    ...(resetEpoch === undefined ? {} : { resetEpoch }),
  };
}

function changedField(f: AnswerFields, x: unknown): { changed?: boolean } {
  const changed = optional(x, (c) => f.boolean(c, 'changed'));
  return changed === undefined ? {} : { changed };
}

// GET /v1/status: `raftblock status` asks every node of the map and shows a node whose answer
// fails this check as unreachable with the reason, every other node as usual.

/** Longest version string shown (a package version is a few characters). */
export const maxVersionChars = 64;
/** Longest reason a node's status may give for a held move (a peer's text, shown in a table). */
export const maxMoveHeldChars = 500;

const statusAnswer = new AnswerFields('status answer');

const roles: ReadonlySet<string> = new Set<GroupRole>(['leader', 'follower', 'candidate', 'preCandidate', 'learner']);

/** `x` as a node's status answer, or a ProtocolError naming the first field that is wrong. */
export function checkNodeStatus(x: unknown): NodeStatus {
  const s = statusAnswer.object(x, 'the answer');
  const groups = statusAnswer.array(s.groups, 'groups');
  const version = optional(s.version, (v) => printable(statusAnswer.string(v, 'version'), maxVersionChars));
  const storeOpsLevel = optional(s.storeOpsLevel, (v) => statusAnswer.integer(v, 'storeOpsLevel', 1, maxStoreOpsLevel));
  const clusterId = optional(s.clusterId, (v) => {
    if (!isClusterId(v)) throw statusAnswer.bad('clusterId', 'is no cluster id', v);
    return v;
  });
  return {
    nodeId: statusAnswer.nodeId(s.nodeId, 'nodeId'),
    ...(clusterId === undefined ? {} : { clusterId }),
    epoch: statusAnswer.count(s.epoch, 'epoch'),
    uptimeMs: statusAnswer.count(s.uptimeMs, 'uptimeMs'),
    ...(version === undefined ? {} : { version }),
    ...(storeOpsLevel === undefined ? {} : { storeOpsLevel }),
    groups: groups.map((g, i) => checkGroupStatus(g, `groups[${i}]`)),
  };
}

function checkGroupStatus(x: unknown, where: string): GroupStatus {
  const g = statusAnswer.object(x, where);
  if (typeof g.role !== 'string' || !roles.has(g.role)) throw statusAnswer.bad(`${where}.role`, 'is no Raft role', g.role);
  const learners = optional(g.learners, (v) => statusAnswer.nodeIds(v, `${where}.learners`));
  const votersOutgoing = optional(g.votersOutgoing, (v) => statusAnswer.nodeIds(v, `${where}.votersOutgoing`));
  const configurationPending = optional(g.configurationPending, (v) => statusAnswer.boolean(v, `${where}.configurationPending`));
  const needsRepair = optional(g.needsRepair, (v) => statusAnswer.boolean(v, `${where}.needsRepair`));
  const moveHeld = optional(g.moveHeld, (v) => printable(statusAnswer.string(v, `${where}.moveHeld`), maxMoveHeldChars));
  return {
    groupId: statusAnswer.count(g.groupId, `${where}.groupId`),
    role: g.role as GroupRole,
    term: statusAnswer.count(g.term, `${where}.term`),
    // 0: no leader known.
    leader: statusAnswer.integer(g.leader, `${where}.leader`, 0, maxNodeId),
    commitIndex: statusAnswer.count(g.commitIndex, `${where}.commitIndex`),
    appliedIndex: statusAnswer.count(g.appliedIndex, `${where}.appliedIndex`),
    lastIndex: statusAnswer.count(g.lastIndex, `${where}.lastIndex`),
    voters: statusAnswer.nodeIds(g.voters, `${where}.voters`),
    ...(learners === undefined ? {} : { learners }),
    ...(votersOutgoing === undefined ? {} : { votersOutgoing }),
    ...(configurationPending === undefined ? {} : { configurationPending }),
    ...(needsRepair === undefined ? {} : { needsRepair }),
    ...(moveHeld === undefined ? {} : { moveHeld }),
  };
}

/** GET /v1/map: the map as a peer's is checked (map.ts mapFrom), its complaint made printable. */
export function checkMapAnswer(answer: unknown): ClusterMap {
  try {
    return mapFrom(answer);
  } catch (err) {
    throw new ProtocolError(`malformed map answer: ${printable(err instanceof Error ? err.message : String(err), 300)}`);
  }
}

const volumeList = new AnswerFields('volume list');
/** GET /v1/volumes */
export function checkVolumeList(x: unknown): VolumeList {
  const a = volumeList.object(x, 'the answer');
  return {
    epoch: volumeList.count(a.epoch, 'epoch'),
    volumes: volumeList.array(a.volumes, 'volumes').map((v, i) => checkVolume(volumeList, v, `volumes[${i}]`)),
  };
}

const volumeAnswer = new AnswerFields('volume answer');
/** POST /v1/volumes, POST /v1/volumes/{name}/resize, DELETE /v1/volumes/{name} */
export function checkVolumeResponse(x: unknown): VolumeResponse {
  const a = volumeAnswer.object(x, 'the answer');
  return { epoch: volumeAnswer.count(a.epoch, 'epoch'), volume: checkVolume(volumeAnswer, a.volume, 'volume'), ...changedField(volumeAnswer, a.changed) };
}

const poolAnswer = new AnswerFields('pool answer');
/** POST /v1/pools, POST /v1/pools/{name}/pgs/{i}/reset */
export function checkPoolResponse(x: unknown): PoolResponse {
  const a = poolAnswer.object(x, 'the answer');
  return { epoch: poolAnswer.count(a.epoch, 'epoch'), pool: checkPool(poolAnswer, a.pool, 'pool'), ...changedField(poolAnswer, a.changed) };
}

const nodeStateAnswer = new AnswerFields('node state answer');
/** POST /v1/nodes/{id}/state */
export function checkNodeStateResponse(x: unknown): { epoch: number } {
  const a = nodeStateAnswer.object(x, 'the answer');
  return { epoch: nodeStateAnswer.count(a.epoch, 'epoch') };
}

const nodeChangeAnswer = new AnswerFields('node change answer');
/** DELETE /v1/nodes/{id}, POST /v1/nodes/{id}/replace (the two answers have one shape). */
export function checkNodeChangeResponse(x: unknown): RemoveNodeResponse & ReplaceNodeResponse {
  const a = nodeChangeAnswer.object(x, 'the answer');
  return {
    epoch: nodeChangeAnswer.count(a.epoch, 'epoch'),
    nodeId: nodeChangeAnswer.nodeId(a.nodeId, 'nodeId'),
    metaVoterRemoved: nodeChangeAnswer.boolean(a.metaVoterRemoved, 'metaVoterRemoved'),
  };
}

const digestAnswer = new AnswerFields('digest answer');
/** GET /v1/groups/{groupId}/digest */
export function checkGroupDigest(x: unknown): GroupDigest {
  const f = digestAnswer;
  const a = f.object(x, 'the answer');
  const groupId = f.count(a.groupId, 'groupId');
  const nodeId = f.nodeId(a.nodeId, 'nodeId');
  if (a.restoring !== undefined && a.restoring !== null) {
    if (a.restoring !== true) throw f.bad('restoring', 'is not true', a.restoring);
    return { groupId, nodeId, restoring: true };
  }
  const appliedIndexAfter = optional(a.appliedIndexAfter, (i) => f.count(i, 'appliedIndexAfter'));
  return {
    groupId,
    nodeId,
    appliedIndex: f.count(a.appliedIndex, 'appliedIndex'),
    ...(appliedIndexAfter === undefined ? {} : { appliedIndexAfter }),
    digest: f.matching(a.digest, 'digest', digestPattern, 'digest'),
  };
}

const rebuildAnswer = new AnswerFields('rebuild answer');
/** POST /v1/groups/{groupId}/rebuild */
export function checkRebuildReplicaResponse(x: unknown): RebuildReplicaResponse {
  const f = rebuildAnswer;
  const a = f.object(x, 'the answer');
  const underWay = optional(a.underWay, (u) => f.boolean(u, 'underWay'));
  return {
    groupId: f.count(a.groupId, 'groupId'),
    nodeId: f.nodeId(a.nodeId, 'nodeId'),
    leader: f.nodeId(a.leader, 'leader'),
    commitIndex: f.count(a.commitIndex, 'commitIndex'),
    ...(underWay === undefined ? {} : { underWay }),
  };
}
