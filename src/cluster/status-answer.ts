/**
 * Checks a node's answer to GET /v1/status before `raftblock status` merges it.
 *
 * Why: the answer comes from a socket. A node of another build, a process squatting on a
 * reused port, or a broken proxy may answer with JSON of another shape; without a check the
 * merge would throw a TypeError from deep inside (`groups.map is not a function`) and the whole
 * status command would fail for one bad node. With it, that node is shown unreachable with the
 * reason, and every other node's answer is still shown. Strings a table prints are made
 * printable and bounded (answer-fields.ts printable), so an answer cannot drive the
 * operator's terminal.
 */
import type { GroupRole, GroupStatus, NodeStatus } from './admin-client.js';
import { isClusterId, maxNodeId } from './map.js';
import { AnswerFields, optional, printable } from './answer-fields.js';
import { maxStoreOpsLevel } from '../store/ops.js';

/** Longest version string shown (a package version is a few characters). */
export const maxVersionChars = 64;
/** Longest reason a node's status may give for a held move (a peer's text, shown in a table). */
export const maxMoveHeldChars = 500;

const f = new AnswerFields('status answer');

const roles: ReadonlySet<string> = new Set<GroupRole>(['leader', 'follower', 'candidate', 'preCandidate', 'learner']);

/** `x` as a node's status answer, or a ProtocolError naming the first field that is wrong. */
export function checkNodeStatus(x: unknown): NodeStatus {
  const s = f.object(x, 'the answer');
  const groups = f.array(s.groups, 'groups');
  const version = optional(s.version, (v) => printable(f.string(v, 'version'), maxVersionChars));
  const storeOpsLevel = optional(s.storeOpsLevel, (v) => f.integer(v, 'storeOpsLevel', 1, maxStoreOpsLevel));
  const clusterId = optional(s.clusterId, (v) => {
    if (!isClusterId(v)) throw f.bad('clusterId', 'is no cluster id', v);
    return v;
  });
  return {
    nodeId: f.nodeId(s.nodeId, 'nodeId'),
    ...(clusterId === undefined ? {} : { clusterId }),
    epoch: f.count(s.epoch, 'epoch'),
    uptimeMs: f.count(s.uptimeMs, 'uptimeMs'),
    ...(version === undefined ? {} : { version }),
    ...(storeOpsLevel === undefined ? {} : { storeOpsLevel }),
    groups: groups.map((g, i) => checkGroupStatus(g, `groups[${i}]`)),
  };
}

function checkGroupStatus(x: unknown, where: string): GroupStatus {
  const g = f.object(x, where);
  if (typeof g.role !== 'string' || !roles.has(g.role)) throw f.bad(`${where}.role`, 'is no Raft role', g.role);
  const learners = optional(g.learners, (v) => f.nodeIds(v, `${where}.learners`));
  const votersOutgoing = optional(g.votersOutgoing, (v) => f.nodeIds(v, `${where}.votersOutgoing`));
  const configurationPending = optional(g.configurationPending, (v) => f.boolean(v, `${where}.configurationPending`));
  const needsRepair = optional(g.needsRepair, (v) => f.boolean(v, `${where}.needsRepair`));
  const moveHeld = optional(g.moveHeld, (v) => printable(f.string(v, `${where}.moveHeld`), maxMoveHeldChars));
  return {
    groupId: f.count(g.groupId, `${where}.groupId`),
    role: g.role as GroupRole,
    term: f.count(g.term, `${where}.term`),
    // 0: no leader known.
    leader: f.integer(g.leader, `${where}.leader`, 0, maxNodeId),
    commitIndex: f.count(g.commitIndex, `${where}.commitIndex`),
    appliedIndex: f.count(g.appliedIndex, `${where}.appliedIndex`),
    lastIndex: f.count(g.lastIndex, `${where}.lastIndex`),
    voters: f.nodeIds(g.voters, `${where}.voters`),
    ...(learners === undefined ? {} : { learners }),
    ...(votersOutgoing === undefined ? {} : { votersOutgoing }),
    ...(configurationPending === undefined ? {} : { configurationPending }),
    ...(needsRepair === undefined ? {} : { needsRepair }),
    ...(moveHeld === undefined ? {} : { moveHeld }),
  };
}
