/**
 * Checks a node's answer to GET /v1/status before `raftblock status` merges it.
 *
 * Why: the answer comes from a socket. A node of another build, a process squatting on a
 * reused port, or a broken proxy may answer with JSON of another shape; without a check the
 * merge would throw a TypeError from deep inside (`groups.map is not a function`) and the whole
 * status command would fail for one bad node. With it, that node is shown unreachable with the
 * reason, and every other node's answer is still shown. Strings a table prints are made
 * printable and bounded (printable), so an answer cannot drive the operator's terminal.
 */
import { ProtocolError } from '../common/errors.js';
import type { GroupRole, GroupStatus, NodeStatus } from './admin-client.js';
import { isClusterId, maxNodeId } from './map.js';
import { maxStoreOpsLevel } from '../store/ops.js';

/** Longest version string shown (a package version is a few characters). */
export const maxVersionChars = 64;
/** Longest reason a node's status may give for a held move (a peer's text, shown in a table). */
export const maxMoveHeldChars = 500;

const roles: ReadonlySet<string> = new Set<GroupRole>(['leader', 'follower', 'candidate', 'preCandidate', 'learner']);

/**
 * `text` without control characters (a terminal's escapes), line or paragraph separators and
 * bidirectional overrides (text that would display other than it reads), cut to `maxChars`
 * code points (never inside a surrogate pair).
 */
export function printable(text: string, maxChars: number): string {
  const clean = [...text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, ' ')];
  return clean.length > maxChars ? `${clean.slice(0, maxChars - 1).join('')}…` : clean.join('');
}

/** `x` as a node's status answer, or a ProtocolError naming the first field that is wrong. */
export function checkNodeStatus(x: unknown): NodeStatus {
  const s = object(x, 'the answer');
  const groups = s.groups;
  if (!Array.isArray(groups)) throw bad('groups', 'is not an array', groups);
  const version = optional(s.version, (v) => printable(string(v, 'version'), maxVersionChars));
  const storeOpsLevel = optional(s.storeOpsLevel, (v) => integer(v, 'storeOpsLevel', 1, maxStoreOpsLevel));
  const clusterId = optional(s.clusterId, (v) => {
    if (!isClusterId(v)) throw bad('clusterId', 'is no cluster id', v);
    return v;
  });
  return {
    nodeId: integer(s.nodeId, 'nodeId', 1, maxNodeId),
    ...(clusterId === undefined ? {} : { clusterId }),
    epoch: count(s.epoch, 'epoch'),
    uptimeMs: count(s.uptimeMs, 'uptimeMs'),
    ...(version === undefined ? {} : { version }),
    ...(storeOpsLevel === undefined ? {} : { storeOpsLevel }),
    groups: groups.map((g, i) => checkGroupStatus(g, `groups[${i}]`)),
  };
}

function checkGroupStatus(x: unknown, where: string): GroupStatus {
  const g = object(x, where);
  if (typeof g.role !== 'string' || !roles.has(g.role)) throw bad(`${where}.role`, 'is no Raft role', g.role);
  const learners = optional(g.learners, (v) => nodeIds(v, `${where}.learners`));
  const votersOutgoing = optional(g.votersOutgoing, (v) => nodeIds(v, `${where}.votersOutgoing`));
  const configurationPending = optional(g.configurationPending, (v) => boolean(v, `${where}.configurationPending`));
  const needsRepair = optional(g.needsRepair, (v) => boolean(v, `${where}.needsRepair`));
  const moveHeld = optional(g.moveHeld, (v) => printable(string(v, `${where}.moveHeld`), maxMoveHeldChars));
  return {
    groupId: count(g.groupId, `${where}.groupId`),
    role: g.role as GroupRole,
    term: count(g.term, `${where}.term`),
    // 0: no leader known.
    leader: integer(g.leader, `${where}.leader`, 0, maxNodeId),
    commitIndex: count(g.commitIndex, `${where}.commitIndex`),
    appliedIndex: count(g.appliedIndex, `${where}.appliedIndex`),
    lastIndex: count(g.lastIndex, `${where}.lastIndex`),
    voters: nodeIds(g.voters, `${where}.voters`),
    ...(learners === undefined ? {} : { learners }),
    ...(votersOutgoing === undefined ? {} : { votersOutgoing }),
    ...(configurationPending === undefined ? {} : { configurationPending }),
    ...(needsRepair === undefined ? {} : { needsRepair }),
    ...(moveHeld === undefined ? {} : { moveHeld }),
  };
}

function bad(field: string, problem: string, value: unknown): ProtocolError {
  const shown = value === undefined ? 'absent' : typeof value === 'string' ? JSON.stringify(printable(value, 40)) : Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value === 'object' ? 'an object' : String(value);
  return new ProtocolError(`malformed status answer: ${field} ${problem} (got ${shown})`);
}

function object(x: unknown, field: string): Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw bad(field, 'is not an object', x);
  return x as Record<string, unknown>;
}

/** JSON's null is taken as absent, as JSON.stringify writes no undefined. */
function optional<T>(x: unknown, check: (v: unknown) => T): T | undefined {
  return x === undefined || x === null ? undefined : check(x);
}

function integer(x: unknown, field: string, min: number, max: number): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min || x > max) throw bad(field, `is not an integer in ${min}..${max}`, x);
  return x;
}

function count(x: unknown, field: string): number {
  return integer(x, field, 0, Number.MAX_SAFE_INTEGER);
}

function string(x: unknown, field: string): string {
  if (typeof x !== 'string') throw bad(field, 'is not a string', x);
  return x;
}

function boolean(x: unknown, field: string): boolean {
  if (typeof x !== 'boolean') throw bad(field, 'is not true or false', x);
  return x;
}

function nodeIds(x: unknown, field: string): number[] {
  if (!Array.isArray(x)) throw bad(field, 'is not an array', x);
  return x.map((id, i) => integer(id, `${field}[${i}]`, 1, maxNodeId));
}
