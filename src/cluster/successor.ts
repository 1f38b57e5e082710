/**
 * Whom a PG's leader hands its leadership to when it must give it up: before its own replica is
 * rebuilt (node.ts), or when the map no longer wants it (pg-move-plan.ts). The most caught-up
 * voter that is replicating and was heard within the last election timeout, so the transfer
 * finishes soon and the new leader has the fewest entries to send on. Leader affinity's
 * hand-over (leader-affinity.ts mayHandOver) judges one named node instead, against a lag bound.
 */
import type { NodeId, ProgressStatus } from '../raft/index.js';

export interface SuccessorInput {
  self: NodeId;
  voters: readonly NodeId[];
  progress: ReadonlyMap<NodeId, Pick<ProgressStatus, 'match' | 'state' | 'recentActive'>>;
  /** The caller's own conditions on a voter (wanted by the map, connected, not being rebuilt). */
  eligible: (voter: NodeId) => boolean;
}

/**
 * The voter other than `self` with the highest match among those replicating, recently active
 * and eligible; the lowest id among equals. 0 when there is none.
 */
export function mostCaughtUpSuccessor(input: SuccessorInput): NodeId {
  let best = 0;
  let bestMatch = -1;
  for (const v of [...input.voters].sort((a, b) => a - b)) {
    if (v === input.self) continue;
    const pr = input.progress.get(v);
    if (pr === undefined || pr.state !== 'replicate' || !pr.recentActive || pr.match <= bestMatch || !input.eligible(v)) continue;
    best = v;
    bestMatch = pr.match;
  }
  return best;
}
