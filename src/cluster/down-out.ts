/**
 * Down-out: a node that stays unreachable is marked out, so that its PGs are placed on the
 * nodes left and rebuilt there, and the cluster is back to full redundancy without an
 * operator (a dead disk at night would otherwise leave every PG it held one failure from
 * losing its quorum). Marked out by this rule, the node is marked in again once it answers.
 *
 * Pure bookkeeping on group 0's leader (the caller probes every node, feeds the answers in
 * with its clock, and proposes what `next` returns), so it is unit-tested on its own:
 *  - a node is down from the first failed probe after its last answer, as seen by this
 *    leader: a new leader starts every clock over (it cannot know how long a node was down
 *    before), so leadership changes only delay a decision;
 *  - one change per round: the node marked out by this rule that answers again goes back in
 *    first; else the node down the longest, past `intervalMs`, goes out;
 *  - never below `minInRatio` of the map's nodes `in`, as Ceph's mon_osd_min_in_ratio: a
 *    partition or a power loss that takes many nodes at once leaves them in (their PGs wait,
 *    degraded, instead of moving a large share of the data on a guess);
 *  - never when the placement could not do without the node (the caller's `canMarkOut`: too
 *    few fault domains left for a pool's replicas).
 */
import type { NodeId } from '../raft/index.js';
import type { NodeInfo } from './map.js';

export interface DownOutConfig {
  /** How long a node must stay unreachable before it is marked out; 0 disables the rule. */
  intervalMs: number;
  /** Least share of the map's nodes that must stay `in` (0..1). */
  minInRatio: number;
}

/** Ten minutes, as Ceph's mon_osd_down_out_interval: a restart or a reboot stays well within. */
export const defaultDownOutIntervalMs = 600_000;
export const defaultDownOut: DownOutConfig = { intervalMs: defaultDownOutIntervalMs, minInRatio: 0.75 };

export type DownOutStep =
  | { kind: 'none' }
  | { kind: 'out'; nodeId: NodeId; downForMs: number }
  | { kind: 'in'; nodeId: NodeId }
  /** A node is due out but stays in; `reason` says why (logged when it changes). */
  | { kind: 'hold'; nodeId: NodeId; reason: string };

export class DownOut {
  /** Node → when this leader first found it unreachable since it last answered. */
  private readonly downSinceMs = new Map<NodeId, number>();
  /** Nodes whose latest probe was answered. */
  private readonly up = new Set<NodeId>();

  constructor(private readonly cfg: DownOutConfig = defaultDownOut) {}

  /** Forgets every clock: on losing or gaining group 0's leadership. */
  reset(): void {
    this.downSinceMs.clear();
    this.up.clear();
  }

  /** A probe's outcome at `nowMs`. */
  observe(nodeId: NodeId, answered: boolean, nowMs: number): void {
    if (answered) {
      this.up.add(nodeId);
      this.downSinceMs.delete(nodeId);
    } else {
      this.up.delete(nodeId);
      if (!this.downSinceMs.has(nodeId)) this.downSinceMs.set(nodeId, nowMs);
    }
  }

  /** True if the node's latest probe went unanswered. */
  isDown(nodeId: NodeId): boolean {
    return this.downSinceMs.has(nodeId);
  }

  /** How long the node has been unreachable (0 if it answers). */
  downForMs(nodeId: NodeId, nowMs: number): number {
    const since = this.downSinceMs.get(nodeId);
    return since === undefined ? 0 : nowMs - since;
  }

  /** The change to propose now, if any. `self` (the leader) is never down. */
  next(nowMs: number, self: NodeId, nodes: readonly NodeInfo[], canMarkOut: (nodeId: NodeId) => boolean): DownOutStep {
    // Nodes gone from the map need no clock.
    for (const id of this.downSinceMs.keys()) if (!nodes.some((n) => n.id === id)) this.downSinceMs.delete(id);
    for (const id of this.up) if (!nodes.some((n) => n.id === id)) this.up.delete(id);
    // Also with the rule disabled: a node it marked out earlier comes back in.
    const back = nodes.find((n) => n.autoOut === true && (n.id === self || this.up.has(n.id)));
    if (back) return { kind: 'in', nodeId: back.id };
    if (this.cfg.intervalMs <= 0) return { kind: 'none' };
    let due: NodeInfo | undefined;
    for (const n of nodes) {
      if (n.id === self || n.state !== 'in' || this.downForMs(n.id, nowMs) < this.cfg.intervalMs) continue;
      if (!due || this.downForMs(n.id, nowMs) > this.downForMs(due.id, nowMs)) due = n;
    }
    if (!due) return { kind: 'none' };
    const inAfter = nodes.filter((n) => n.state === 'in').length - 1;
    const leastIn = Math.ceil(this.cfg.minInRatio * nodes.length);
    if (inAfter < leastIn) {
      return { kind: 'hold', nodeId: due.id, reason: `${inAfter} of ${nodes.length} nodes would stay in, fewer than ${leastIn} (min in ratio ${this.cfg.minInRatio})` };
    }
    if (!canMarkOut(due.id)) return { kind: 'hold', nodeId: due.id, reason: 'the pools could not be placed without it (too few fault domains left)' };
    return { kind: 'out', nodeId: due.id, downForMs: this.downForMs(due.id, nowMs) };
  }
}
