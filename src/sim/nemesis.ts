/**
 * The fault schedule: at random intervals, one of partitions (minority, majority split,
 * bridge, ring, isolated leader, leader with one follower), crashes and restarts, network
 * degradation (drop, duplication, long delays = reordering), membership changes (learners,
 * promotion, removal including the leader) and leadership transfers.
 */
import type { SeededRng } from '../raft/rng.js';
import type { NodeId } from '../raft/types.js';
import type { SimCluster } from './cluster.js';

export class Nemesis {
  private nextAt: number;
  constructor(
    private readonly c: SimCluster,
    private readonly rng: SeededRng,
  ) {
    this.nextAt = this.gap();
  }

  private gap(): number {
    return (5 + this.rng.nextInt(40)) * this.c.opts.stepsPerTick;
  }

  private ids(): NodeId[] {
    return this.c.nodes.map((n) => n.id);
  }

  private shuffled(xs: NodeId[]): NodeId[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.rng.nextInt(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  maybeAct(): void {
    if (this.c.now < this.nextAt) return;
    this.nextAt = this.c.now + this.gap();
    const r = this.rng.nextInt(100);
    const c = this.c;
    const ids = this.ids();
    const leader = c.leader();
    if (r < 10) {
      // Isolate the leader: it may keep believing it leads.
      if (leader) {
        c.net.partition([[leader.id], ids.filter((i) => i !== leader.id)]);
        c.note(`partition: isolate leader ${leader.id}`);
      }
    } else if (r < 18) {
      // Leader plus one follower in a minority (Figure 8 material).
      if (leader) {
        const other = this.shuffled(ids.filter((i) => i !== leader.id))[0];
        c.net.partition([[leader.id, other], ids.filter((i) => i !== leader.id && i !== other)]);
        c.note(`partition: leader ${leader.id} with ${other}`);
      }
    } else if (r < 26) {
      const s = this.shuffled(ids);
      const k = 1 + this.rng.nextInt(Math.floor(ids.length / 2));
      c.net.partition([s.slice(0, k), s.slice(k)]);
      c.note(`partition: ${JSON.stringify([s.slice(0, k), s.slice(k)])}`);
    } else if (r < 30) {
      // Bridge: two halves that only one node connects.
      const s = this.shuffled(ids);
      const bridge = s[0];
      const half = Math.floor((s.length - 1) / 2);
      const a = s.slice(1, 1 + half);
      const b = s.slice(1 + half);
      c.net.heal();
      const pairs: [NodeId, NodeId][] = [];
      for (const x of a) for (const y of b) pairs.push([x, y]);
      c.net.cutLinks(pairs);
      c.note(`partition: bridge ${bridge} between ${JSON.stringify(a)} and ${JSON.stringify(b)}`);
    } else if (r < 33) {
      // Ring: each node hears only its two neighbours.
      const s = this.shuffled(ids);
      c.net.heal();
      const pairs: [NodeId, NodeId][] = [];
      for (let i = 0; i < s.length; i++) {
        for (let j = i + 1; j < s.length; j++) {
          const d = Math.min(j - i, s.length - (j - i));
          if (d > 1) pairs.push([s[i], s[j]]);
        }
      }
      c.net.cutLinks(pairs);
      c.note(`partition: ring ${JSON.stringify(s)}`);
    } else if (r < 45) {
      c.net.heal();
      c.note('heal partitions');
    } else if (r < 53) {
      const up = c.upNodes();
      if (up.length > 0) c.crash(up[this.rng.nextInt(up.length)].id);
    } else if (r < 58) {
      if (leader) c.crash(leader.id);
    } else if (r < 68) {
      for (const n of c.nodes) if (!n.up && this.rng.chance(0.7)) c.restart(n.id);
    } else if (r < 76) {
      c.net.faults = {
        dropRate: this.rng.pick([0, 0, 0.05, 0.2]),
        dupRate: this.rng.pick([0, 0.05, 0.2]),
        maxDelaySteps: this.rng.pick([2, 3, 8, 20]),
      };
      c.note(`network ${JSON.stringify(c.net.faults)}`);
    } else if (r < 88) {
      this.membership();
    } else {
      const l = c.leader();
      if (l) {
        const voters = l.raft.status().confState.voters.filter((v) => v !== l.id);
        if (voters.length > 0) c.transferLeader(voters[this.rng.nextInt(voters.length)]);
      }
    }
  }

  private membership(): void {
    const c = this.c;
    const l = c.leader();
    if (!l) return;
    const cs = l.raft.status().confState;
    if (cs.votersOutgoing.length > 0) return;
    const all = this.ids();
    const nonMembers = all.filter((i) => !cs.voters.includes(i) && !cs.learners.includes(i));
    const r = this.rng.nextInt(4);
    if (r === 0 && nonMembers.length > 0) {
      c.proposeConfChange({ changes: [{ type: 'addLearner', nodeId: this.rng.pick(nonMembers) }] });
    } else if (r === 1 && cs.learners.length > 0) {
      c.proposeConfChange({ changes: [{ type: 'addVoter', nodeId: this.rng.pick(cs.learners) }] });
    } else if (r === 2 && cs.voters.length > 3) {
      // Remove a voter, possibly the leader itself.
      c.proposeConfChange({ changes: [{ type: 'removeNode', nodeId: this.rng.pick(cs.voters) }] });
    } else if (r === 3 && cs.voters.length >= 3 && nonMembers.length > 0) {
      // Swap a voter for a non-member in one joint change.
      const out = this.rng.pick(cs.voters);
      c.proposeConfChange({ changes: [{ type: 'removeNode', nodeId: out }, { type: 'addVoter', nodeId: this.rng.pick(nonMembers) }] });
    }
  }

  /** Ends the fault period: every node up, every link healed, a calm network. */
  healAll(): void {
    const c = this.c;
    c.net.heal();
    c.net.faults = { dropRate: 0, dupRate: 0, maxDelaySteps: 3 };
    for (const n of c.nodes) if (!n.up) c.restart(n.id);
  }
}
