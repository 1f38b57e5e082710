/**
 * Runs the down-out rule (down-out.ts) on group 0's leader: once a round, probes every other
 * node of the map, feeds the answers to the rule, and proposes the one change it returns. A
 * round is skipped while the previous one is still probing (a probe waits up to
 * `downOutProbeTimeoutMs`), and every clock starts over when this node gains or loses the
 * leadership.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../common/log.js';
import type { NodeId } from '../raft/index.js';
import { DownOut, type DownOutConfig } from './down-out.js';
import { applyCommand, type ClusterMap, type MapCommand } from './map.js';
import { PlacementImpossible } from './placement.js';

/** How long a probe waits for its answer; a second round never starts before it ends. */
export const downOutProbeTimeoutMs = 2_000;

export interface DownOutRunnerDeps {
  self: NodeId;
  /** True while this node leads group 0 and its map has every committed entry applied. */
  leading: () => boolean;
  map: () => ClusterMap;
  /** True if the node answers within the timeout (any answer: an error too proves it runs). */
  probe: (nodeId: NodeId, timeoutMs: number) => Promise<boolean>;
  /**
   * The other nodes that reach `nodeId` (each asked to probe it): asked before marking it out,
   * so that a link cut between this leader and a node that serves everyone else does not take
   * the node out.
   */
  reachedBy: (nodeId: NodeId) => Promise<NodeId[]>;
  propose: (cmd: MapCommand) => Promise<unknown>;
  log: Logger;
  registry: Registry;
  /** Milliseconds of a monotonic clock. */
  nowMs: () => number;
}

export class DownOutRunner {
  private readonly rule: DownOut;
  private leadingBefore = false;
  private busy = false;
  /** The hold last logged per node, so that a standing hold is logged once. */
  private readonly heldFor = new Map<NodeId, string>();
  private readonly changes: Counter<'state'>;

  constructor(
    cfg: DownOutConfig,
    private readonly deps: DownOutRunnerDeps,
  ) {
    this.rule = new DownOut(cfg);
    this.changes = new Counter({
      name: 'raftblock_node_down_out_changes_total',
      help: 'Nodes marked out by group 0 leader for staying unreachable (state="out"), and marked in again when they answered (state="in")',
      labelNames: ['state'],
      registers: [deps.registry],
    });
    const rule = this.rule;
    const runner = this;
    new Gauge({
      name: 'raftblock_nodes_unreachable',
      help: "On group 0's leader: map nodes whose latest probe went unanswered (0 elsewhere)",
      registers: [deps.registry],
      collect(this: Gauge) {
        this.set(runner.leadingBefore ? deps.map().nodes.filter((n) => rule.isDown(n.id)).length : 0);
      },
    });
  }

  /** One round (called once a second). */
  async round(): Promise<void> {
    const leading = this.deps.leading();
    if (leading !== this.leadingBefore) {
      this.rule.reset();
      this.heldFor.clear();
      this.leadingBefore = leading;
    }
    if (!leading || this.busy) return;
    this.busy = true;
    try {
      const others = this.deps.map().nodes.filter((n) => n.id !== this.deps.self);
      // A probe unanswered after its timeout says the node was down when the probe left.
      const sentMs = this.deps.nowMs();
      const answers = await Promise.all(others.map((n) => this.deps.probe(n.id, downOutProbeTimeoutMs).catch(() => false)));
      const now = this.deps.nowMs();
      others.forEach((n, i) => this.rule.observe(n.id, answers[i], answers[i] ? now : sentMs));
      if (!this.deps.leading()) return;
      const map = this.deps.map();
      const step = this.rule.next(now, this.deps.self, map.nodes, (id) => placementAllows(map, id));
      if (step.kind === 'hold') {
        this.hold(step.nodeId, step.reason);
        return;
      }
      if (step.kind === 'none') return;
      if (step.kind === 'out') {
        const reachers = await this.deps.reachedBy(step.nodeId);
        if (reachers.length > 0) {
          this.hold(step.nodeId, `it does not answer this leader, but nodes ${reachers.join(', ')} reach it (a cut between them?)`);
          return;
        }
        if (!this.deps.leading()) return;
      }
      this.heldFor.delete(step.nodeId);
      if (step.kind === 'out') this.deps.log.warn('marking out a node unreachable past the down-out interval: its PGs move to the nodes left', { nodeId: step.nodeId, downForMs: Math.round(step.downForMs) });
      else this.deps.log.info('marking in a node marked out for being unreachable: it answers again', { nodeId: step.nodeId });
      await this.deps.propose({ type: 'setNodeState', id: step.nodeId, state: step.kind, auto: true });
      this.changes.inc({ state: step.kind });
    } catch (err) {
      this.deps.log.warn('down-out round failed; the next round tries again', { err });
    } finally {
      this.busy = false;
    }
  }

  /** Logs a node left in, once per reason. */
  private hold(nodeId: NodeId, reason: string): void {
    if (this.heldFor.get(nodeId) === reason) return;
    this.heldFor.set(nodeId, reason);
    this.deps.log.warn('node unreachable past the down-out interval, left in', { nodeId, reason });
  }
}

/** Whether the map's pools can still be placed with `nodeId` out (enough fault domains left). */
function placementAllows(map: ClusterMap, nodeId: NodeId): boolean {
  const r = applyCommand(map, { type: 'setNodeState', id: nodeId, state: 'out', auto: true });
  if (r.ok) return true;
  if (r.error instanceof PlacementImpossible) return false;
  throw r.error;
}
