/**
 * What group 0's leader does next to its own membership (pure: no I/O, no clock, so it is
 * unit-tested on its own, like pg-move-plan.ts for the PGs).
 *
 * Group 0 (the cluster map) wants `votersWanted` voters on nodes the map has `in`
 * (metaVotersWanted: five once five nodes are in, so that the map outlives two lost zones as a
 * five-replica pool does; else three), spread over as many fault domains as the nodes offer:
 * the most distinct zones, then racks, then hosts (`spreadOf`). Its leader takes one step at a
 * time, never while a change is in flight:
 *
 *  0. a learner whose node is no longer `in` (marked out, or gone from the map) leaves;
 *  1. fewer than `votersWanted` voters are `in`, and an `in` node that is not a voter is
 *     connected: bring it in, the one that widens the spread most (then the lowest id; a node
 *     already a learner first) — the group grows as nodes register, and a voter marked `out`
 *     or gone from the map gets its replacement first. From an odd count, the group grows by
 *     two at once (one joint change): one at a time would pass through an even count, which
 *     survives no more failures than the odd count below it and has one more node whose loss
 *     stops the map (two voters: either one). It waits for the second node;
 *  2. then a voter marked `out`, or no longer in the map, leaves once `votersWanted` voters
 *     are `in` without it: the unreachable ones first, then by id. A leader that would leave
 *     hands its leadership to a caught-up voter that stays instead (the next leader removes it).
 *     Two voters and no node to bring in as a third (a three-node cluster after `node remove`):
 *     the one that does not lead leaves, for the reason the group never grows through two;
 *  3. more `in` voters than wanted (a move under way, or fewer nodes in than before): one
 *     leaves, an unreachable one first, else the one whose departure keeps the widest spread,
 *     once every voter that stays is caught up;
 *  4. every voter healthy, as many as wanted, and a connected `in` node would widen the spread
 *     in place of a voter (three voters in one zone, a node in another zone): the node is
 *     brought in (step 3 then takes out the voter it replaces). Each such move widens the
 *     spread, so moves end;
 *  5. otherwise a learner no step wants leaves (one cut off, or stalled: see stalledLearners).
 *
 * Bringing a node in takes two changes, as for a PG (pg-move-plan.ts): it joins as a learner,
 * which counts for no quorum while it catches up, then becomes a voter once caught up. Added as
 * a voter at once, a newcomer would count for the quorum from the first entry while it still
 * fetched the whole map: with one voter already lost (the very case of a replacement), the
 * group could commit nothing until the newcomer caught up, and its leadership could move.
 *
 * No step may cost the group its quorum: an addition needs the healthy voters plus the new one
 * to make a quorum of the grown group; a removal needs the healthy voters left to make a quorum
 * of the smaller group, and never removes the last voter. Healthy: the leader itself, or a
 * voter connected to it, replicating and caught up.
 */
import type { ConfState, NodeId, ProgressStatus } from '../raft/index.js';
import type { NodeState } from './map.js';
import { caughtUpSlackEntries } from './pg-move-plan.js';
import { nodeDomains } from './placement.js';

/** Voters group 0 wants with `inNodes` nodes in: five from five nodes (two losses survived), else three. */
export function metaVotersWanted(inNodes: number): number {
  return inNodes >= 5 ? 5 : 3;
}

/** A map node as the plan sees it. */
export interface MetaNode {
  id: NodeId;
  state: NodeState;
  /** Its fault-domain labels (`zone`, `rack`, `host`); absent: one zone and rack, its own host. */
  labels?: Readonly<Record<string, string>>;
}

export interface MetaGroupInput {
  /** This node, group 0's leader. */
  self: NodeId;
  /** Group 0's latest configuration (the leader's log). */
  conf: ConfState;
  /** True while the latest configuration change is not committed yet. */
  changePending: boolean;
  /** The map's nodes, any order. */
  nodes: readonly MetaNode[];
  /** Nodes the leader's transport is connected to now. */
  connected: ReadonlySet<NodeId>;
  /** The leader's view of every member's replication. */
  progress: ReadonlyMap<NodeId, Pick<ProgressStatus, 'match' | 'state'>>;
  commitIndex: number;
  votersWanted: number;
  /**
   * Learners that have not caught up in the time the caller allows (their group-0 replica may
   * be held for repair, or their node too slow): passed over like unreachable ones, so that
   * another node is brought in instead (and the learner then removed as no longer wanted).
   */
  stalledLearners?: ReadonlySet<NodeId>;
}

export type MetaGroupStep =
  /** Nothing to change. */
  | { kind: 'none' }
  /** A change would be wanted but cannot be taken now (in flight, or it would risk the quorum). */
  | { kind: 'wait'; reason: string }
  /** Nodes join as learners (they count for no quorum while they catch up). */
  | { kind: 'addLearners'; nodeIds: NodeId[] }
  /** Caught-up learners become voters: one change; two ids when the group grows from an odd count. */
  | { kind: 'addVoters'; nodeIds: NodeId[] }
  | { kind: 'removeVoter'; nodeId: NodeId }
  /** A learner no step wants any more (its node out or gone, or not needed). */
  | { kind: 'removeLearner'; nodeId: NodeId }
  | { kind: 'transferLeader'; to: NodeId };

/** Votes a group of `voters` voters needs to decide anything. */
export function quorumOf(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

function sorted(xs: Iterable<NodeId>): NodeId[] {
  return [...xs].sort((a, b) => a - b);
}

/** How widely a set of nodes spreads: [distinct zones, racks, hosts]; compare with `widerThan`. */
export type Spread = readonly [number, number, number];

/**
 * Each node's fault domains as paths (placement's naming: rack r1 of zone a is not rack r1 of
 * zone b), by id. Built once per decision: a spread is measured many times per plan.
 */
export class DomainIndex {
  private readonly paths = new Map<NodeId, readonly [string, string, string]>();

  constructor(nodes: readonly MetaNode[]) {
    for (const n of nodes) this.paths.set(n.id, DomainIndex.pathsOf(n.id, n.labels ?? {}));
  }

  /** A node no longer in the map counts as one zone and rack, its own host (as unlabelled). */
  of(id: NodeId): readonly [string, string, string] {
    return this.paths.get(id) ?? DomainIndex.pathsOf(id, {});
  }

  private static pathsOf(id: NodeId, labels: Readonly<Record<string, string>>): readonly [string, string, string] {
    const d = nodeDomains({ id, labels, weight: 0 });
    return [d.zone, `${d.zone}/${d.rack}`, `${d.zone}/${d.rack}/${d.host}`];
  }
}

export function spreadOf(domains: DomainIndex, ids: Iterable<NodeId>): Spread {
  const levels = [new Set<string>(), new Set<string>(), new Set<string>()];
  for (const id of ids) {
    const p = domains.of(id);
    for (let i = 0; i < 3; i++) levels[i].add(p[i]);
  }
  return [levels[0].size, levels[1].size, levels[2].size];
}

/** a spreads wider than b (zones first, then racks, then hosts). */
export function widerThan(a: Spread, b: Spread): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] > b[i];
  return false;
}

/** Node `c` in place of one of `voters` would spread them wider. */
export function widensInPlaceOfAVoter(domains: DomainIndex, voters: readonly NodeId[], c: NodeId): boolean {
  const now = spreadOf(domains, voters);
  return voters.some((v) => widerThan(spreadOf(domains, [...voters.filter((x) => x !== v), c]), now));
}

/** The candidate whose joining `members` spreads the group widest; ties to the lowest id. */
function widestAddition(domains: DomainIndex, members: readonly NodeId[], candidates: readonly NodeId[]): NodeId | undefined {
  let best: NodeId | undefined;
  let bestSpread: Spread = [-1, -1, -1];
  for (const c of sorted(candidates)) {
    const s = spreadOf(domains, [...members, c]);
    if (widerThan(s, bestSpread)) {
      best = c;
      bestSpread = s;
    }
  }
  return best;
}

/** The leader itself, or a member (voter or learner) connected to it, replicating and caught up. */
export function isHealthyMember(input: Pick<MetaGroupInput, 'self' | 'connected' | 'progress' | 'commitIndex'>, id: NodeId): boolean {
  if (id === input.self) return true;
  if (!input.connected.has(id)) return false;
  const pr = input.progress.get(id);
  return pr !== undefined && pr.state === 'replicate' && pr.match + caughtUpSlackEntries >= input.commitIndex;
}

export type MetaRemoval =
  | { ok: true }
  /** `id` leads group 0: it hands the leadership to `to` first. */
  | { ok: false; transferTo: NodeId; reason: string }
  /**
   * Removing `id` now would leave group 0 without a quorum (or without voters). Not `settled`
   * while the leader judging it was elected less than an election timeout ago: it may not have
   * heard every voter yet (their replication state still reads as a probe, a voter it had no
   * connection to is still being dialed), so the verdict is worth asking again.
   */
  | { ok: false; transferTo?: undefined; settled: boolean; reason: string };

/** What checkMetaRemoval judges by: group 0 as its leader sees it, and for how long it has led. */
export type MetaRemovalInput = Omit<MetaGroupInput, 'nodes' | 'votersWanted'> & {
  /** Ticks since the judging leader was elected, and the election timeout in ticks; absent: long enough. */
  leaderAge?: { ticksLed: number; electionTicks: number };
};

/**
 * Whether voter `id` may leave group 0 now (one change, without costing the quorum). Used by
 * the plan below and by `raftblock node remove` (node.ts).
 */
export function checkMetaRemoval(input: MetaRemovalInput, id: NodeId): MetaRemoval {
  const voters = sorted(input.conf.voters);
  if (!voters.includes(id)) return { ok: true };
  const remaining = voters.filter((v) => v !== id);
  if (remaining.length === 0) return { ok: false, settled: true, reason: `node ${id} is the only voter of the metadata group: removing it would leave the cluster map without any voter` };
  const age = input.leaderAge;
  const settled = age === undefined || age.ticksLed < 0 || age.ticksLed >= age.electionTicks;
  const atRisk = (reason: string): MetaRemoval =>
    settled ? { ok: false, settled, reason } : { ok: false, settled, reason: `${reason} (as this node sees it ${age?.ticksLed} ticks after it was elected)` };
  const healthy = remaining.filter((v) => isHealthyMember(input, v));
  const need = quorumOf(remaining.length);
  if (id === input.self) {
    // The leader does not remove itself: it hands over to the most caught-up voter that stays.
    let best: NodeId | undefined;
    let bestMatch = -1;
    for (const v of healthy) {
      const m = input.progress.get(v)?.match ?? -1;
      if (m > bestMatch) {
        best = v;
        bestMatch = m;
      }
    }
    if (best === undefined) return atRisk(`node ${id} leads the metadata group and no other voter is reachable and caught up to take over`);
    if (healthy.length < need) return atRisk(metaQuorumText(id, remaining, healthy, need));
    return { ok: false, transferTo: best, reason: `node ${id} leads the metadata group: handing the leadership to node ${best} first` };
  }
  if (healthy.length < need) return atRisk(metaQuorumText(id, remaining, healthy, need));
  return { ok: true };
}

function metaQuorumText(id: NodeId, remaining: readonly NodeId[], healthy: readonly NodeId[], need: number): string {
  return (
    `removing node ${id} from the metadata group would leave voters ${remaining.join(', ')}, of which ${healthy.length} ` +
    `(${healthy.join(', ') || 'none'}) are reachable and caught up; a quorum needs ${need}`
  );
}

export function planMetaGroup(input: MetaGroupInput): MetaGroupStep {
  const { conf } = input;
  if (conf.votersOutgoing.length > 0) return { kind: 'wait', reason: 'joint configuration' };
  if (input.changePending) return { kind: 'wait', reason: 'a configuration change is not committed yet' };
  const state = new Map(input.nodes.map((n) => [n.id, n.state]));
  const voters = sorted(conf.voters);
  const learners = sorted(conf.learners);
  const members = new Set([...voters, ...learners, ...conf.learnersNext]);
  const staying = voters.filter((v) => state.get(v) === 'in');
  const leaving = voters.filter((v) => state.get(v) !== 'in');

  // 0. A learner whose node is out or gone will never be wanted.
  const strayLearner = learners.find((l) => state.get(l) !== 'in');
  if (strayLearner !== undefined) return { kind: 'removeLearner', nodeId: strayLearner };

  const candidates = sorted(input.nodes.filter((n) => n.state === 'in' && !members.has(n.id) && input.connected.has(n.id)).map((n) => n.id));
  const reachableLearners = learners.filter((l) => input.connected.has(l) && !input.stalledLearners?.has(l));
  const domains = new DomainIndex(input.nodes);
  const healthy = voters.filter((v) => isHealthyMember(input, v)).length;
  /** Nodes become voters in two changes: learners first, then voters once caught up. */
  const bringIn = (nodeIds: NodeId[]): MetaGroupStep => {
    const fresh = nodeIds.filter((id) => !learners.includes(id));
    if (fresh.length > 0) return { kind: 'addLearners', nodeIds: fresh };
    const lagging = nodeIds.filter((id) => !isHealthyMember(input, id));
    if (lagging.length > 0) return { kind: 'wait', reason: `node ${lagging.join(' and ')} catches up as a learner before it becomes a voter of the metadata group` };
    const need = quorumOf(voters.length + nodeIds.length);
    if (healthy + nodeIds.length >= need) return { kind: 'addVoters', nodeIds };
    return { kind: 'wait', reason: `adding node ${nodeIds.join(' and ')} needs ${need} healthy voters with them, ${healthy} without` };
  };
  /**
   * The node to bring in next beside `beside`, the widest addition of those `among` allows: a
   * reachable learner if any (chosen before, and catching up already), else a candidate.
   */
  const nextIn = (beside: readonly NodeId[], taken: readonly NodeId[], among: (id: NodeId) => boolean = () => true): NodeId | undefined => {
    const fromLearners = reachableLearners.filter((l) => !taken.includes(l) && among(l));
    const pool = fromLearners.length > 0 ? fromLearners : candidates.filter((c) => !taken.includes(c) && among(c));
    return widestAddition(domains, beside, pool);
  };
  // Unreachable first (it costs the group most), the leader last (it hands over first).
  const rank = (v: NodeId): number => (v === input.self ? 2 : isHealthyMember(input, v) ? 1 : 0);

  // 1. Grow, or bring in the replacement of a voter that leaves.
  const joinable = reachableLearners.length + candidates.length;
  if (staying.length < input.votersWanted && joinable > 0) {
    // A replacement joins alone: the even count it makes lasts until the leaving voter goes.
    const joining = leaving.length === 0 && voters.length % 2 === 1 && voters.length + 2 <= input.votersWanted ? 2 : 1;
    if (joinable < joining) {
      return { kind: 'wait', reason: `node ${[...reachableLearners, ...candidates][0]} joins the metadata group with a second node, to keep an odd number of voters` };
    }
    const nodeIds: NodeId[] = [];
    while (nodeIds.length < joining) nodeIds.push(nextIn([...staying, ...nodeIds], nodeIds)!);
    return bringIn(nodeIds);
  }

  // 2. A voter that leaves goes once enough voters stay without it.
  if (leaving.length > 0) {
    if (staying.length < input.votersWanted) return { kind: 'none' };
    return removeStep(input, [...leaving].sort((a, b) => rank(a) - rank(b) || a - b)[0]);
  }

  // 2b. Two voters, no third in sight: one voter stops the map only when it stops itself.
  if (voters.length === 2 && leaving.length === 0 && joinable === 0) {
    return removeStep(input, voters.find((v) => v !== input.self) as NodeId);
  }

  // 3. More voters than wanted: one leaves, once every voter that stays is caught up (the one
  // that just joined to take its place, above all).
  if (staying.length > input.votersWanted) {
    // The leader is not kept for being the leader: if its leaving spreads the group widest, it
    // hands over first (removeStep), so that every move widens the spread and moves end.
    // Reachable, not healthy: a voter that just joined and still catches up is not the one to
    // drop (that would undo the move it is part of).
    const reachable = (v: NodeId): number => (v === input.self || input.connected.has(v) ? 1 : 0);
    const spreadWithout = (v: NodeId): Spread => spreadOf(domains, staying.filter((x) => x !== v));
    const wider = (a: NodeId, b: NodeId): number => (widerThan(spreadWithout(a), spreadWithout(b)) ? -1 : widerThan(spreadWithout(b), spreadWithout(a)) ? 1 : 0);
    const id = [...staying].sort((a, b) => reachable(a) - reachable(b) || wider(a, b) || b - a)[0];
    const lagging = staying.filter((v) => v !== id && !isHealthyMember(input, v));
    if (reachable(id) > 0 && lagging.length > 0) return { kind: 'wait', reason: `node ${lagging.join(', ')} catches up before node ${id} leaves the metadata group` };
    return removeStep(input, id);
  }

  // 4. A node that would spread the group wider in place of a voter joins (step 3 follows).
  if (staying.length === input.votersWanted && healthy === voters.length) {
    const wider = nextIn(staying, [], (id) => widensInPlaceOfAVoter(domains, staying, id));
    if (wider !== undefined) return bringIn([wider]);
  }

  // 5. A learner nothing above wants (its move was overtaken, or it was cut off) leaves.
  if (learners.length > 0) return { kind: 'removeLearner', nodeId: learners[0] };
  return { kind: 'none' };
}

/** Voter `id` leaves now, or its leadership goes first, or the quorum forbids it. */
function removeStep(input: MetaGroupInput, id: NodeId): MetaGroupStep {
  const removal = checkMetaRemoval(input, id);
  if (removal.ok) return { kind: 'removeVoter', nodeId: id };
  if (removal.transferTo !== undefined) return { kind: 'transferLeader', to: removal.transferTo };
  return { kind: 'wait', reason: removal.reason };
}

/** Whether two configurations have the same members in the same roles. */
export function sameConfState(a: ConfState, b: ConfState): boolean {
  const eq = (x: readonly number[], y: readonly number[]): boolean => {
    const p = sorted(x);
    const q = sorted(y);
    return p.length === q.length && p.every((v, i) => v === q[i]);
  };
  return eq(a.voters, b.voters) && eq(a.votersOutgoing, b.votersOutgoing) && eq(a.learners, b.learners) && eq(a.learnersNext, b.learnersNext);
}
