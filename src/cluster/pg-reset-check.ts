/**
 * Whether a PG may be started over empty (`raftblock pool reset-pg`), judged by group 0's
 * leader from the map and from what every node of the map said it holds of the PG (pure: no
 * I/O; node.ts resetPgAsLeader does the asking).
 *
 * The map's replicas are not enough to ask. A PG's Raft configuration is the truth and the map
 * only the goal (pg-mover.ts): while a move has not finished, members the map no longer names
 * (the replicas it moves away from) still run the PG, may hold every acknowledged write, and
 * may lead it. A reset then would start a second group under the same id beside the one still
 * running. So every node of the map is asked, and:
 *
 * - a node that holds state of the PG (a log, a membership, a running replica other than one
 *   held for a rebuild with an empty log: PgMover.replicaState) refuses the reset, PG_NOT_LOST;
 * - so does the map's own rule (every replica's node replaced since the PG was placed there);
 * - a node that could not be asked refuses it too, PG_LOSS_UNCONFIRMED, naming the node: its
 *   silence is no evidence that it holds nothing. Except a node being replaced (`replacing`:
 *   an operator's `node replace`, refused while the node is reachable, declared its data dir
 *   lost, and no data dir has registered under the id since): nothing under that id holds the
 *   PG, on the same word of the operator that the map's rule takes for the replicas, and a
 *   data dir that registers later finds the PG reset and starts it empty. Without that
 *   exception a reset would wait for every replaced node to come back.
 *
 * Nodes removed from the map are not asked: a removal is refused while a PG's configuration
 * names the node (as far as group 0's leader reached), and a removed node stops taking part
 * (its transport closes). A definite refusal (state held, the map's rule) is given before a
 * node that could not be asked: it says more, and asking again would not change it.
 */
import { PgLossUnconfirmed, PgNotLost } from '../common/errors.js';
import type { NodeId } from '../raft/index.js';
import { resetPgRefusal, type ClusterMap, type Pool } from './map.js';

/**
 * What a node holds of a PG group (PgMover.replicaState): 'held' (started, waiting for a
 * rebuild, nothing in its WAL), 'none', or 'state' (it may hold acknowledged data).
 */
export type ReplicaHolding = 'held' | 'none' | 'state';

/** A node's answer, or why there is none. */
export type HoldingAnswer = { holding: ReplicaHolding } | { unanswered: string };

export function isReplicaHolding(x: unknown): x is ReplicaHolding {
  return x === 'held' || x === 'none' || x === 'state';
}

/**
 * Why PG `pg` of `pool` cannot be reset now, or undefined when it can: PG_NOT_LOST (a node
 * holds state of it, or the map's rule: map.ts resetPgRefusal), PG_LOSS_UNCONFIRMED (a node
 * could not be asked). `answers` holds what each node of the map said; a node of the map
 * missing from it counts as not asked.
 */
export function pgResetRefusal(map: ClusterMap, pool: Pool, pg: number, answers: ReadonlyMap<NodeId, HoldingAnswer>): PgNotLost | PgLossUnconfirmed | undefined {
  const { replicas } = pool.pgs[pg];
  const answerOf = (id: NodeId): HoldingAnswer => answers.get(id) ?? { unanswered: 'not asked' };
  const holders = map.nodes.map((n) => n.id).filter((id) => {
    const a = answerOf(id);
    return 'holding' in a && a.holding === 'state';
  });
  if (holders.length > 0) {
    const describe = (id: NodeId): string =>
      replicas.includes(id)
        ? `node ${id} holds state of it (never lost, or rebuilt since)`
        : `node ${id} holds state of it though the map places the PG elsewhere (a move away from it has not finished: it may still lead the PG)`;
    return new PgNotLost(`PG ${pool.name}/${pg}: ${holders.map(describe).join('; ')}`);
  }
  const refusal = resetPgRefusal(map, pool, pg);
  if (refusal) return refusal;
  const silent = map.nodes.filter((n) => 'unanswered' in answerOf(n.id) && !n.replacing).map((n) => n.id);
  if (silent.length === 0) return undefined;
  const why = (id: NodeId): string => {
    const a = answerOf(id);
    return 'unanswered' in a ? a.unanswered : '';
  };
  return new PgLossUnconfirmed(
    `PG ${pool.name}/${pg}: ${silent.map((id) => `node ${id} could not be asked what it holds of it (${why(id)})`).join('; ')}: ` +
      `${silent.length === 1 ? 'it' : 'each'} may still run the PG; start it, or replace it (raftblock node replace) if its data dir is lost`,
  );
}
