/**
 * What a PG's leader does next to move the group's Raft configuration towards the replica set
 * the cluster map wants (pure: no I/O, no clock, so it is unit-tested on its own).
 *
 * The Raft configuration is the truth (it says who holds the data and who counts for a
 * quorum); the map is the goal. A move is, per PG, one change at a time:
 *
 *  1. the leader is not wanted but a wanted voter is replicating and heard from lately: hand it
 *     the leadership first (the gateway routes to the map's replicas, and peers fence messages
 *     from nodes outside them). A wanted voter that is down is not handed anything: a transfer
 *     refuses every proposal until it is abandoned (an election timeout), and one retried at
 *     every round would block the PG's writes and the move for as long as that voter is down;
 *     the move goes on without it (learners, then the swap);
 *  2. add every wanted node that is not a member as a learner (it receives a snapshot and the
 *     log, but counts for nothing);
 *  3. once every wanted learner has caught up (replicating, match within `caughtUpSlackEntries`
 *     of the commit index), ONE joint-consensus change promotes them and removes every member
 *     the map no longer wants. The core leaves the joint configuration by itself; a leader that
 *     removed itself steps down once that commits and hands over to a caught-up voter.
 *
 * Nothing is decided while a change is in flight (joint configuration, or the latest change
 * not yet committed): the next round sees its outcome.
 */
import type { ConfChangeSingle, ConfState, NodeId, ProgressStatus } from '../raft/index.js';
import { mostCaughtUpSuccessor } from './successor.js';

/** A learner whose match index trails the commit index by at most this many is caught up. */
export const caughtUpSlackEntries = 16;

export interface MoveInput {
  /** This node (the group's leader). */
  self: NodeId;
  /** The group's latest configuration (the leader's log). */
  conf: ConfState;
  /** True while the latest configuration change is not committed yet. */
  changePending: boolean;
  /** The replica set the map wants, strongest placement draw first. */
  target: readonly NodeId[];
  /** The leader's view of every member's replication. */
  progress: ReadonlyMap<NodeId, Pick<ProgressStatus, 'match' | 'state' | 'recentActive'>>;
  commitIndex: number;
  lastIndex: number;
  /**
   * Voters that asked this leader lately to rebuild their replica (pool repair): handed the
   * leadership, such a replica would hand it straight on, so it counts as not up for that.
   */
  askedToRebuild?: ReadonlySet<NodeId>;
}

export type MoveStep =
  /** The configuration is what the map wants. */
  | { kind: 'done' }
  /** Something is in flight or catching up; look again later. */
  | { kind: 'wait'; reason: string }
  | { kind: 'transferLeader'; to: NodeId }
  | { kind: 'addLearners'; nodes: NodeId[] }
  /** One joint-consensus change: promote learners, remove members not wanted. */
  | { kind: 'swap'; changes: ConfChangeSingle[] };

function sorted(xs: Iterable<NodeId>): NodeId[] {
  return [...xs].sort((a, b) => a - b);
}

/** True when the configuration's voters are exactly `target` and nobody else is a member. */
export function confMatchesTarget(conf: ConfState, target: readonly NodeId[]): boolean {
  if (conf.votersOutgoing.length > 0 || conf.learners.length > 0 || conf.learnersNext.length > 0) return false;
  const want = sorted(target);
  const have = sorted(conf.voters);
  return want.length === have.length && want.every((x, i) => x === have[i]);
}

export function planMove(input: MoveInput): MoveStep {
  const { conf, target, self } = input;
  if (target.length === 0) return { kind: 'wait', reason: 'the map wants no replica' };
  if (conf.votersOutgoing.length > 0) return { kind: 'wait', reason: 'joint configuration' };
  if (input.changePending) return { kind: 'wait', reason: 'a configuration change is not committed yet' };
  if (confMatchesTarget(conf, target)) return { kind: 'done' };
  const want = new Set(target);
  const voters = new Set(conf.voters);
  const learners = new Set([...conf.learners, ...conf.learnersNext]);

  // 1. A leader the map does not want hands over to a wanted voter that is up, the most caught up.
  if (!want.has(self)) {
    const best = mostCaughtUpSuccessor({ self, voters: conf.voters, progress: input.progress, eligible: (v) => want.has(v) && !input.askedToRebuild?.has(v) });
    if (best !== 0) return { kind: 'transferLeader', to: best };
    // No wanted voter (up) yet: this leader adds the learners and removes itself in the swap.
  }

  // 2. Wanted nodes that are not members join as learners.
  const missing = target.filter((n) => !voters.has(n) && !learners.has(n));
  if (missing.length > 0) return { kind: 'addLearners', nodes: sorted(missing) };

  // 3. Every wanted learner caught up: one joint change.
  const promote = sorted([...learners].filter((n) => want.has(n)));
  for (const n of promote) {
    const pr = input.progress.get(n);
    if (!pr) return { kind: 'wait', reason: `no progress for learner ${n}` };
    if (pr.state !== 'replicate' || pr.match + caughtUpSlackEntries < input.commitIndex) {
      return { kind: 'wait', reason: `learner ${n} catching up (match ${pr.match}, commit ${input.commitIndex}, ${pr.state})` };
    }
  }
  const changes: ConfChangeSingle[] = [];
  for (const n of promote) changes.push({ type: 'addVoter', nodeId: n });
  for (const n of sorted(voters)) if (!want.has(n)) changes.push({ type: 'removeNode', nodeId: n });
  for (const n of sorted(learners)) if (!want.has(n)) changes.push({ type: 'removeNode', nodeId: n });
  if (changes.length === 0) return { kind: 'done' };
  return { kind: 'swap', changes };
}
