/**
 * The fault schedule: at random intervals, one of partitions (minority, majority split,
 * bridge, ring, isolated leader, leader with one follower), crashes and restarts, network
 * degradation (drop, duplication, long delays = reordering), membership changes (learners,
 * promotion, removal including the leader) and leadership transfers.
 */
import type { SeededRng } from '../raft/rng.js';
import type { NodeId } from '../raft/types.js';
import type { SimCluster } from './cluster.js';

/**
 * `mixed`: every kind of fault at a relaxed pace. `churn`: fast leader-centred faults (leader
 * cut off with one follower, leader isolated or crashed, quick heals), the schedule that
 * produces the Raft paper's Figure 8 situations.
 */
export type NemesisProfile = 'mixed' | 'churn' | 'figure8' | 'lease' | 'membership' | 'rebuild';

/** Progress through one Figure 8 cycle (see `figure8`). */
interface Figure8State {
  phase: 'start' | 'minority' | 'isolated' | 'recovering' | 'cooldown';
  l1: NodeId;
  buddy: NodeId;
  l2: NodeId;
  l2Term: number;
  l3: NodeId;
  oldIndex: number;
  until: number;
}

export class Nemesis {
  private nextAt: number;
  constructor(
    private readonly c: SimCluster,
    private readonly rng: SeededRng,
    readonly profile: NemesisProfile = 'mixed',
  ) {
    this.nextAt = this.gap();
  }

  private gap(): number {
    if (this.profile === 'churn') return (2 + this.rng.nextInt(12)) * this.c.opts.stepsPerTick;
    if (this.profile === 'membership') return (3 + this.rng.nextInt(15)) * this.c.opts.stepsPerTick;
    return (5 + this.rng.nextInt(40)) * this.c.opts.stepsPerTick;
  }

  private f8: Figure8State = { phase: 'start', l1: 0, buddy: 0, l2: 0, l2Term: 0, l3: 0, oldIndex: 0, until: 0 };

  /**
   * Raft paper Figure 8, adaptively: (1) cut leader L1 off with one follower while it appends
   * entries; (2) when the majority elects L2, isolate L2 at once so its new-term entry stays
   * local; (3) the old side elects L3 holding L1's entries, which re-replicates them (one entry
   * per message in this profile); (4) the moment L3's commit covers an entry older than its
   * term, crash L3 and give L2 a majority of nodes that lack L3's term: if L3 committed by
   * counting an earlier-term entry, L2 now overwrites a committed entry.
   */
  private figure8(): void {
    const c = this.c;
    const f = this.f8;
    const ids = this.ids();
    const leader = c.leader();
    const ticks = c.opts.stepsPerTick;
    switch (f.phase) {
      case 'start':
        if (!leader || leader.raft.log.term(leader.raft.committed) !== leader.raft.currentTerm) return;
        f.l1 = leader.id;
        f.buddy = this.shuffled(ids.filter((i) => i !== leader.id))[0];
        c.net.partition([[f.l1, f.buddy], ids.filter((i) => i !== f.l1 && i !== f.buddy)]);
        for (let k = 0; k < 3; k++) c.request(f.l1, { kind: 'write', key: '_f8', value: k }, 0, 0, () => {});
        c.note(`figure8: leader ${f.l1} cut off with ${f.buddy}`);
        f.phase = 'minority';
        f.until = c.now + 80 * ticks;
        return;
      case 'minority': {
        const l2 = c.nodes.find((n) => n.up && n.raft.currentRole === 'leader' && n.id !== f.l1 && n.id !== f.buddy);
        if (l2) {
          f.l2 = l2.id;
          f.l2Term = l2.raft.currentTerm;
          c.net.partition([[f.l2], ids.filter((i) => i !== f.l2)]);
          c.note(`figure8: new leader ${f.l2} (term ${f.l2Term}) isolated`);
          f.phase = 'isolated';
          f.until = c.now + 80 * ticks;
        } else if (c.now > f.until) this.f8Reset();
        return;
      }
      case 'isolated': {
        const l3 = c.nodes.find((n) => n.up && n.raft.currentRole === 'leader' && n.raft.currentTerm > f.l2Term && n.id !== f.l2);
        if (l3 && f.l3 !== l3.id) {
          f.l3 = l3.id;
          // The last entry before L3's own term: what it must not commit by counting.
          let i = l3.raft.log.lastIndex();
          while (i > 0 && l3.raft.log.term(i) === l3.raft.currentTerm) i--;
          f.oldIndex = i;
          c.note(`figure8: leader ${f.l3} term ${l3.raft.currentTerm} carries old entries up to ${i}`);
        }
        if (l3 && f.l3 === l3.id && l3.raft.committed >= f.oldIndex && f.oldIndex > 0) {
          const term = l3.raft.currentTerm;
          c.crash(l3.id);
          const lacking = ids.filter((id) => {
            const n = c.node(id);
            return id === f.l2 || (n.up && n.raft.log.lastTerm() < term);
          });
          c.net.partition([lacking, ids.filter((id) => !lacking.includes(id))]);
          c.note(`figure8: crashed ${f.l3} at commit ${l3.raft.committed}; ${JSON.stringify(lacking)} together`);
          f.phase = 'recovering';
          f.until = c.now + 60 * ticks;
        } else if (c.now > f.until) this.f8Reset();
        return;
      }
      case 'recovering':
        if (c.now > f.until) this.f8Reset();
        return;
      case 'cooldown':
        if (c.now > f.until) f.phase = 'start';
        return;
    }
  }

  private f8Reset(): void {
    const c = this.c;
    c.net.heal();
    for (const n of c.nodes) if (!n.up) c.restart(n.id);
    this.f8 = { phase: 'cooldown', l1: 0, buddy: 0, l2: 0, l2Term: 0, l3: 0, oldIndex: 0, until: c.now + 20 * c.opts.stepsPerTick };
    c.note('figure8: cycle over, healed');
  }

  private rb: { phase: 'wait' | 'cut' | 'recovering'; leader: NodeId; index: number; until: number } = { phase: 'wait', leader: 0, index: 0, until: 0 };

  /**
   * Replica rebuilds at the worst moment: a follower that acknowledged entries its leader has
   * not made durable yet is rebuilt from the leader's image (older than those entries); the
   * leader is cut off with it from the others, and crashed once its commit index covers those
   * entries (or after a while). A leader that counted the rebuilt replica's old acknowledgement
   * committed an entry it alone held, which the others, electing a leader without it, overwrite.
   * Between such moments, any follower is rebuilt now and then.
   */
  private rebuildCycle(): void {
    const c = this.c;
    const ids = this.ids();
    const ticks = c.opts.stepsPerTick;
    const f = this.rb;
    if (f.phase === 'wait') {
      const l = c.leader();
      if (!l) return;
      const progress = l.raft.status().progress ?? new Map();
      const durable = l.storage.lastIndex();
      for (const [id, pr] of progress) {
        if (id === l.id || pr.match <= durable || !c.rebuild(id)) continue;
        c.net.partition([[l.id, id], ids.filter((i) => i !== l.id && i !== id)]);
        c.note(`rebuild: ${id} had acknowledged up to ${pr.match}, leader ${l.id} holds ${durable} durably; cut off together`);
        this.rb = { phase: 'cut', leader: l.id, index: pr.match, until: c.now + 30 * ticks };
        return;
      }
      if (c.now >= this.nextAt) {
        this.nextAt = c.now + this.gap();
        const followers = [...progress.keys()].filter((id) => id !== l.id);
        if (followers.length > 0) c.rebuild(this.rng.pick(followers));
      }
    } else if (f.phase === 'cut') {
      const l = c.node(f.leader);
      if (!l.up || l.raft.committed >= f.index || c.now > f.until) {
        c.crash(f.leader);
        c.net.heal();
        c.note(`rebuild: leader ${f.leader} crashed at commit ${l.raft.committed}`);
        this.rb = { phase: 'recovering', leader: f.leader, index: f.index, until: c.now + 40 * ticks };
      }
    } else if (c.now > f.until) {
      c.restart(f.leader);
      this.rb = { phase: 'wait', leader: 0, index: 0, until: 0 };
    }
  }

  private leasePhase: 'wait' | 'cut' | 'cooldown' = 'wait';
  private leaseUntil = 0;

  /**
   * The lease's adversary: cut off a leader that holds a lease while a pinned client keeps
   * reading from it and the others write through the majority, which elects a new leader as
   * soon as the followers' election timers allow. A lease that outlives those timers serves a
   * stale read.
   */
  private leaseCycle(): void {
    const c = this.c;
    const ids = this.ids();
    const ticks = c.opts.stepsPerTick;
    if (this.leasePhase === 'wait') {
      const l = c.leader();
      if (!l || !l.raft.leaseValid()) return;
      if (this.rng.chance(0.3)) {
        // A stalled leaseholder: when it resumes, its clock must catch up before it reads.
        c.pause(l.id, (5 + this.rng.nextInt(40)) * ticks);
      } else {
        c.net.partition([[l.id], ids.filter((i) => i !== l.id)]);
        c.note(`lease: leader ${l.id} cut off while holding its lease`);
      }
      this.leasePhase = 'cut';
      this.leaseUntil = c.now + (30 + this.rng.nextInt(30)) * ticks;
    } else if (c.now >= this.leaseUntil) {
      if (this.leasePhase === 'cut') {
        c.net.heal();
        if (this.rng.chance(0.3)) {
          const up = c.upNodes();
          c.crash(up[this.rng.nextInt(up.length)].id);
        }
        for (const n of c.nodes) if (!n.up && this.rng.chance(0.5)) c.restart(n.id);
        this.leasePhase = 'cooldown';
        this.leaseUntil = c.now + (5 + this.rng.nextInt(20)) * ticks;
      } else {
        this.leasePhase = 'wait';
      }
    }
  }

  /** Membership changes back to back, under partitions and crashes. */
  private membershipChurn(): void {
    const c = this.c;
    const ids = this.ids();
    const r = this.rng.nextInt(100);
    if (r < 50) {
      this.membership();
    } else if (r < 62) {
      this.splitAtRandom(c, ids);
    } else if (r < 72) {
      const up = c.upNodes();
      if (up.length > 0) c.crash(up[this.rng.nextInt(up.length)].id);
    } else if (r < 82) {
      for (const n of c.nodes) if (!n.up) c.restart(n.id);
    } else if (r < 88) {
      // Retire a removed node (its log dropped), which the next addLearner may bring back.
      const out = this.shuffled(ids).find((id) => c.retire(id));
      if (out === undefined) c.note('retire: no removed node to retire');
    } else if (r < 93) {
      const l = c.leader();
      if (l) {
        const voters = l.raft.status().confState.voters.filter((v) => v !== l.id);
        if (voters.length > 0) c.transferLeader(voters[this.rng.nextInt(voters.length)]);
      }
    } else {
      c.net.heal();
      c.note('heal partitions');
    }
  }

  private churn(): void {
    const c = this.c;
    const ids = this.ids();
    const leader = c.leader();
    const r = this.rng.nextInt(100);
    if (r < 35) {
      if (leader) {
        const other = this.shuffled(ids.filter((i) => i !== leader.id))[0];
        c.net.partition([[leader.id, other], ids.filter((i) => i !== leader.id && i !== other)]);
        c.note(`partition: leader ${leader.id} with ${other}`);
      }
    } else if (r < 55) {
      if (leader) {
        c.net.partition([[leader.id], ids.filter((i) => i !== leader.id)]);
        c.note(`partition: isolate leader ${leader.id}`);
      }
    } else if (r < 70) {
      if (leader) c.crash(leader.id);
    } else if (r < 85) {
      for (const n of c.nodes) if (!n.up) c.restart(n.id);
    } else {
      c.net.heal();
      c.note('heal partitions');
    }
  }

  private ids(): NodeId[] {
    return this.c.nodes.map((n) => n.id);
  }

  /** Cuts the nodes into a random minority (at least one node) and the rest. */
  private splitAtRandom(c: SimCluster, ids: NodeId[]): void {
    const s = this.shuffled(ids);
    const k = 1 + this.rng.nextInt(Math.floor(ids.length / 2));
    c.net.partition([s.slice(0, k), s.slice(k)]);
    c.note(`partition: ${JSON.stringify([s.slice(0, k), s.slice(k)])}`);
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
    if (this.profile === 'figure8') {
      this.figure8();
      return;
    }
    if (this.profile === 'lease') {
      this.leaseCycle();
      return;
    }
    if (this.profile === 'rebuild') {
      this.rebuildCycle();
      return;
    }
    if (this.c.now < this.nextAt) return;
    this.nextAt = this.c.now + this.gap();
    if (this.profile === 'churn') {
      this.churn();
      return;
    }
    if (this.profile === 'membership') {
      this.membershipChurn();
      return;
    }
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
      this.splitAtRandom(c, ids);
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
    } else if (r < 84) {
      this.membership();
    } else if (r < 90) {
      // Stall a node (often the leader) for up to a few election timeouts.
      const target = leader && this.rng.chance(0.6) ? leader : c.upNodes()[this.rng.nextInt(Math.max(1, c.upNodes().length))];
      if (target) c.pause(target.id, (2 + this.rng.nextInt(40)) * c.opts.stepsPerTick);
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
    // Voters come from learners that know the membership (the leader's snapshot or log reached
    // them), as the PG mover and group 0 add them: a node that knows none grants no vote (it
    // may be a member retired and added back, its log dropped), so an empty voter could leave
    // a configuration without a quorum that can elect.
    const ready = cs.learners.filter((i) => (c.node(i).raft?.status().confState.voters.length ?? 0) > 0);
    const r = this.rng.nextInt(4);
    if (r === 0 && nonMembers.length > 0) {
      c.proposeConfChange({ changes: [{ type: 'addLearner', nodeId: this.rng.pick(nonMembers) }] });
    } else if (r === 1 && ready.length > 0) {
      c.proposeConfChange({ changes: [{ type: 'addVoter', nodeId: this.rng.pick(ready) }] });
    } else if (r === 2 && cs.voters.length > 3) {
      // Remove a voter, possibly the leader itself.
      c.proposeConfChange({ changes: [{ type: 'removeNode', nodeId: this.rng.pick(cs.voters) }] });
    } else if (r === 3 && cs.voters.length >= 3 && ready.length > 0) {
      // Swap a voter for a caught-up learner in one joint change.
      const out = this.rng.pick(cs.voters);
      c.proposeConfChange({ changes: [{ type: 'removeNode', nodeId: out }, { type: 'addVoter', nodeId: this.rng.pick(ready) }] });
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
