/**
 * Leadership that follows the I/O. A PG write or read reaches its leader either from this
 * node's own gateway or forwarded by another node's gateway, and a forwarded request pays two
 * more network hops (and a wake-up of another process each way) than a local one. When one
 * other node's gateway sends nearly all of a PG's requests for a while, the leader hands
 * leadership to that node (a Raft TimeoutNow transfer), as placement-aware systems move
 * leases toward the locality of their load.
 *
 * Pure bookkeeping: the caller notes each request's origin, ends a round once a second, and
 * performs the transfers the round returns. Hysteresis keeps leadership from bouncing: the
 * same node must dominate `confirmRounds` rounds in a row with at least `minRequestsPerRound`
 * requests, and a PG is handed over at most once per `cooldownMs`.
 */
import { assert } from '../common/assert.js';
import type { ConfState, NodeId, ProgressStatus } from '../raft/index.js';

/** A follower whose match trails the leader's last index by at most this many may take over. */
export const maxHandoverLagEntries = 64;

/** What the leader of a PG knows when a round names `to` (see mayHandOver). */
export interface HandoverInput {
  to: NodeId;
  /** The replicas the map wants for the PG. */
  wanted: readonly NodeId[];
  conf: ConfState;
  /** A transfer under way (the core's leadTransferee), 0 for none. */
  leadTransferee: NodeId;
  progress: ReadonlyMap<NodeId, Pick<ProgressStatus, 'match' | 'state'>>;
  lastIndex: number;
  /** `to` asked this leader lately to rebuild its replica (pool repair). */
  askedToRebuild: boolean;
  connected: boolean;
}

/**
 * Whether a PG's leader may hand leadership to `to`: a voter the map wants, in a settled
 * configuration, replicating and nearly caught up, connected, no transfer under way, and not
 * a replica that asked to be rebuilt (it handed the leadership over for that: never back).
 */
export function mayHandOver(input: HandoverInput): boolean {
  const { to, conf } = input;
  if (!input.wanted.includes(to)) return false;
  if (input.leadTransferee !== 0 || conf.learners.length > 0 || conf.votersOutgoing.length > 0 || !conf.voters.includes(to)) return false;
  // Nearly caught up is enough: the core's transfer finishes the catch-up before TimeoutNow,
  // and under steady load a follower's match trails the last index by the entries in flight.
  const pr = input.progress.get(to);
  if (!pr || pr.state !== 'replicate' || pr.match + maxHandoverLagEntries < input.lastIndex) return false;
  return !input.askedToRebuild && input.connected;
}

export interface LeaderAffinityConfig {
  /** Requests a PG must see in a round before its origins count. */
  minRequestsPerRound: number;
  /** Share of a round's requests the other node must have sent (0..1]. */
  share: number;
  /** Consecutive rounds the same node must dominate. */
  confirmRounds: number;
  /** Least time between two hand-overs of one PG. */
  cooldownMs: number;
}

export const defaultLeaderAffinity: LeaderAffinityConfig = { minRequestsPerRound: 20, share: 0.75, confirmRounds: 2, cooldownMs: 30_000 };

export interface Handover {
  group: number;
  to: number;
}

export class LeaderAffinity {
  private readonly cfg: LeaderAffinityConfig;
  /** group → origin node → requests this round. */
  private counts = new Map<number, Map<number, number>>();
  private readonly streaks = new Map<number, { to: number; rounds: number }>();
  private readonly lastHandoverMs = new Map<number, number>();

  constructor(cfg: LeaderAffinityConfig = defaultLeaderAffinity) {
    assert(cfg.share > 0.5 && cfg.share <= 1, 'affinity share must be a majority of the requests');
    assert(cfg.confirmRounds >= 1 && cfg.minRequestsPerRound >= 1, 'affinity needs at least one round and one request');
    this.cfg = cfg;
  }

  /** One request for `group` that came from the gateway of node `origin`. */
  note(group: number, origin: number): void {
    let byOrigin = this.counts.get(group);
    if (!byOrigin) this.counts.set(group, (byOrigin = new Map()));
    byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + 1);
  }

  /**
   * Ends a round on node `self`: the PGs to hand over, each to the node whose gateway sent
   * most of their requests, among those `eligible` accepts (this node leads the PG, the
   * target is a caught-up voter, no membership change is under way).
   */
  round(nowMs: number, self: number, eligible: (group: number, to: number) => boolean): Handover[] {
    const out: Handover[] = [];
    const counts = this.counts;
    this.counts = new Map();
    for (const group of [...this.streaks.keys()]) if (!counts.has(group)) this.streaks.delete(group);
    for (const [group, byOrigin] of counts) {
      let total = 0;
      let top = 0;
      let topCount = 0;
      for (const [origin, n] of byOrigin) {
        total += n;
        if (n > topCount) {
          top = origin;
          topCount = n;
        }
      }
      if (top === self || total < this.cfg.minRequestsPerRound || topCount < this.cfg.share * total) {
        this.streaks.delete(group);
        continue;
      }
      const streak = this.streaks.get(group);
      const rounds = streak && streak.to === top ? streak.rounds + 1 : 1;
      this.streaks.set(group, { to: top, rounds });
      if (rounds < this.cfg.confirmRounds) continue;
      const last = this.lastHandoverMs.get(group);
      if (last !== undefined && nowMs - last < this.cfg.cooldownMs) continue;
      if (!eligible(group, top)) continue;
      this.lastHandoverMs.set(group, nowMs);
      this.streaks.delete(group);
      out.push({ group, to: top });
    }
    return out;
  }
}
