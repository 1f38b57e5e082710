/**
 * Whether one replica of a PG may be rebuilt in place now (`raftblock pool repair`), judged by
 * the PG's leader from its own view of replication (pure: no I/O, no clock).
 *
 * A replica being rebuilt is held: it acknowledges nothing and votes for no one until it has
 * the leader's snapshot, which takes as long as copying the PG. Meanwhile the PG needs a
 * quorum among its other voters, so the rebuild is refused unless the leader and enough
 * other voters that are connected, replicating and caught up make a quorum without it. It is
 * also refused during a move (learners or a joint configuration): the move's own changes
 * decide who holds the PG then.
 */
import { isJoint } from '../raft/confchange.js';
import type { ConfState, NodeId, ProgressStatus } from '../raft/index.js';
import { caughtUpSlackEntries } from './pg-move-plan.js';

export interface RebuildCheckInput {
  /** The PG's leader (the node judging). */
  leader: NodeId;
  /** The replica to rebuild. */
  node: NodeId;
  /** The leader's latest configuration. */
  conf: ConfState;
  /** True while the latest configuration change is not committed yet. */
  changePending: boolean;
  progress: ReadonlyMap<NodeId, Pick<ProgressStatus, 'match' | 'state' | 'recentActive'>>;
  /** Peers the leader's transport is connected to now (a killed node drops out at once). */
  connected: ReadonlySet<NodeId>;
  /**
   * Voters whose rebuild this leader agreed to and that have not asked for their repair point
   * yet: they may stop acknowledging any moment, so they count as down (two replicas of a PG
   * asked at once must not both be agreed to).
   */
  rebuilding: ReadonlySet<NodeId>;
  commitIndex: number;
}

export type RebuildVerdict =
  | { ok: true; healthyVoters: NodeId[] }
  /** `code`: MOVE_UNDER_WAY or NOT_A_VOTER (try again later, or never), PG_QUORUM_AT_RISK. */
  | { ok: false; code: 'MOVE_UNDER_WAY' | 'NOT_A_VOTER' | 'PG_QUORUM_AT_RISK'; reason: string };

export function judgeRebuild(input: RebuildCheckInput): RebuildVerdict {
  const { conf, node, leader } = input;
  if (isJoint(conf) || conf.learners.length > 0 || conf.learnersNext.length > 0 || input.changePending) {
    return { ok: false, code: 'MOVE_UNDER_WAY', reason: 'the PG is being moved (learners or a configuration change in flight); try again once the move is done' };
  }
  if (!conf.voters.includes(node)) return { ok: false, code: 'NOT_A_VOTER', reason: `node ${node} is not a voter of the PG (voters ${conf.voters.join(',')})` };
  // Why each other voter does not count, or undefined if it does.
  const unfit = (v: NodeId): string | undefined => {
    if (v === leader) return undefined;
    if (input.rebuilding.has(v)) return 'being rebuilt';
    if (!input.connected.has(v)) return 'not connected';
    const pr = input.progress.get(v);
    if (pr === undefined) return 'no progress';
    if (pr.state !== 'replicate') return `in ${pr.state}`;
    if (!pr.recentActive) return 'silent for an election timeout';
    if (pr.match + caughtUpSlackEntries < input.commitIndex) return `at ${pr.match} of ${input.commitIndex}`;
    return undefined;
  };
  const others = conf.voters.filter((v) => v !== node).map((v) => ({ v, why: unfit(v) }));
  const healthy = others.filter((o) => o.why === undefined).map((o) => o.v);
  const quorum = Math.floor(conf.voters.length / 2) + 1;
  if (healthy.length < quorum) {
    const unhealthy = others.filter((o) => o.why !== undefined);
    return {
      ok: false,
      code: 'PG_QUORUM_AT_RISK',
      reason:
        `while node ${node}'s replica is rebuilt the PG needs ${quorum} of its ${conf.voters.length} voters, and only ` +
        (healthy.length === 0 ? 'none of the others is' : `${healthy.length} of the others (node ${healthy.join(',')}) ${healthy.length === 1 ? 'is' : 'are'}`) +
        ' connected and caught up' +
        (unhealthy.length ? `; not: ${unhealthy.map((o) => `${o.v} (${o.why})`).join(', ')}` : '') +
        ': bring those back first',
    };
  }
  return { ok: true, healthyVoters: healthy };
}
