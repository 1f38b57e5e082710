/**
 * A cluster of Raft nodes in one process, driven one step at a time from a seed. Each node is
 * hosted the way a real host would do it: it persists a Ready into its MemoryStorage (the
 * "disk", possibly some steps later: asynchronous persistence), then sends the messages,
 * applies committed entries to its KV state machine and answers clients. A crash throws away
 * everything not yet persisted; a restart rebuilds the node from its storage alone.
 */
import { assert } from '../common/assert.js';
import { RaftblockError } from '../common/errors.js';
import { RaftNode } from '../raft/node.js';
import { SeededRng } from '../raft/rng.js';
import { MemoryStorage } from '../raft/storage.js';
import { type Config, type ConfChange, type ConfState, EntryType, type Message, type NodeId, type Ready, type UnsafeFlags, defaultConfig } from '../raft/types.js';
import { leavesBeforePersist } from '../raft/early-send.js';
import { Invariants } from './invariants.js';
import { type KvCommand, KvStateMachine, decodeCommand, encodeCommand } from './kv.js';
import { Network } from './network.js';

export interface SimOptions {
  /** Initial voters are 1..nodes; spares (nodes+1..nodes+spares) start outside the configuration. */
  nodes: number;
  spares: number;
  /** Steps per tick on average (a tick is a coarser unit than a message delay). */
  stepsPerTick: number;
  /** Per-node tick rate drift, e.g. 0.1 = rates in [0.9, 1.1]. */
  tickSkew: number;
  /** Ready persistence completes 0..maxPersistDelaySteps steps later. */
  maxPersistDelaySteps: number;
  snapshotEveryEntries: number;
  snapshotKeepEntries: number;
  /**
   * A broken host for comparison: a stalled node loses the ticks it missed (a coalescing
   * interval timer) instead of catching up. Leases then outlive their real duration.
   */
  coalesceTicksOnStall?: boolean;
  /**
   * A broken host for comparison: a leader that rebuilds a replica from its snapshot (`rebuild`)
   * does not forget what that replica acknowledged before (RaftNode.forgetMatch).
   */
  rebuildKeepsMatch?: boolean;
  raft: Partial<Config>;
  unsafe?: UnsafeFlags;
}

export interface ClientReply {
  ok: boolean;
  /** Read value, or whether a CAS applied. */
  value?: number | null;
  /** The request was redirected (not leader); `leader` is the hint, definite non-effect. */
  redirect?: boolean;
  leader?: NodeId;
}

export type ClientRequest =
  | { kind: 'write'; key: string; value: number }
  | { kind: 'cas'; key: string; from: number | null; to: number }
  | { kind: 'read'; key: string };

interface PendingProposal {
  index: number;
  term: number;
  onReply: (r: ClientReply) => void;
}

interface PendingRead {
  key: string;
  index: number;
  onReply: (r: ClientReply) => void;
}

export class SimNode {
  raft!: RaftNode;
  sm!: KvStateMachine;
  up = true;
  incarnation = 0;
  tickPhase = 0;
  tickRate = 1;
  /** Readies taken and not yet persisted, oldest first; they complete in this order. */
  outstanding: { rd: Ready; persistAt: number }[] = [];
  proposals = new Map<number, PendingProposal>();
  readCtx = new Map<string, { key: string; onReply: (r: ClientReply) => void }>();
  reads: PendingRead[] = [];
  lastRole = 'follower';
  lastTerm = 0;
  lastCommit = 0;
  /** A stalled process (GC pause, overloaded host): it neither ticks nor handles anything. */
  pausedUntil = 0;
  backlog: Message[] = [];
  pendingRequests: (() => void)[] = [];
  constructor(
    readonly id: NodeId,
    /** Its disk; replaced whole when the replica is rebuilt from its leader. */
    public storage: MemoryStorage,
  ) {}
}

export class SimCluster {
  readonly rng: SeededRng;
  readonly net: Network;
  readonly nodes: SimNode[] = [];
  readonly inv = new Invariants();
  now = 0;
  private readonly raftRng: SeededRng;
  private readonly persistRng: SeededRng;
  private readSeq = 0;
  /** Events for a failure report (bounded). */
  readonly trace: string[] = [];
  private readonly maxTrace = 400;

  constructor(
    readonly seed: number,
    readonly opts: SimOptions,
  ) {
    this.rng = new SeededRng(seed);
    this.raftRng = this.rng.fork();
    this.persistRng = this.rng.fork();
    const total = opts.nodes + opts.spares;
    this.net = new Network(this.rng.fork(), total);
    const voters = Array.from({ length: opts.nodes }, (_, i) => i + 1);
    for (let id = 1; id <= total; id++) {
      const storage = new MemoryStorage(id <= opts.nodes ? voters : []);
      const n = new SimNode(id, storage);
      n.tickRate = 1 + (this.rng.nextFloat() * 2 - 1) * opts.tickSkew;
      n.tickPhase = this.rng.nextFloat();
      this.nodes.push(n);
      this.boot(n);
    }
  }

  note(s: string): void {
    if (this.trace.length >= this.maxTrace) this.trace.shift();
    this.trace.push(`[${this.now}] ${s}`);
  }

  node(id: NodeId): SimNode {
    const n = this.nodes[id - 1];
    assert(n && n.id === id, `no node ${id}`);
    return n;
  }

  private config(id: NodeId): Config {
    const c = { ...defaultConfig(id, this.raftRng.fork()), ...this.opts.raft, id, rng: this.raftRng.fork() };
    if (this.opts.unsafe) c.unsafe = this.opts.unsafe;
    return c;
  }

  /** What happened, for coverage reports. */
  readonly counts = { crashes: 0, tornWrites: 0, pauses: 0, snapshotsInstalled: 0, confChanges: 0, transfers: 0, elections: 0, rebuilds: 0, retirements: 0 };

  /** Reads answered by lease and by ReadIndex, over every incarnation of every node. */
  readonly reads = { lease: 0, readIndex: 0 };

  private countReads(n: SimNode): void {
    if (!n.raft) return;
    this.reads.lease += n.raft.readCounters.lease;
    this.reads.readIndex += n.raft.readCounters.readIndex;
    n.raft.readCounters.lease = 0;
    n.raft.readCounters.readIndex = 0;
  }

  /** Folds every live node's counters into `reads`. */
  collectReadCounters(): void {
    for (const n of this.nodes) this.countReads(n);
  }

  private boot(n: SimNode): void {
    this.countReads(n);
    const snap = n.storage.snapshot();
    n.sm = KvStateMachine.restore(snap.data, snap.metadata.index);
    const cfg = this.config(n.id);
    cfg.applied = snap.metadata.index;
    // Each boot is a new instance of the node's log to its leader, as the host's are.
    cfg.logInstance = n.incarnation + 1;
    n.raft = new RaftNode(cfg, n.storage);
    n.outstanding = [];
    n.proposals.clear();
    n.readCtx.clear();
    n.reads = [];
    n.lastRole = 'follower';
    n.lastTerm = n.raft.currentTerm;
    n.lastCommit = n.raft.committed;
    n.incarnation++;
    this.inv.restarted(n.id, n.storage.hardState.commit);
  }

  crash(id: NodeId): void {
    const n = this.node(id);
    if (!n.up) return;
    n.up = false;
    const rd = n.outstanding[0]?.rd;
    if (rd && rd.entries.length > 0 && !rd.snapshot && this.persistRng.chance(0.5)) {
      // Torn write: a prefix of the batch's entries reached the disk, its hard state did not.
      const k = 1 + this.persistRng.nextInt(rd.entries.length);
      const st = n.storage;
      st.append(rd.entries.slice(0, k));
      for (const e of rd.entries.slice(0, k)) {
        if (e.index >= st.firstIndex()) this.inv.persisted(n.id, e, e.index - 1 >= st.firstIndex() - 1 ? st.term(e.index - 1) : undefined);
      }
      this.note(`crash ${id} mid-write: ${k} of ${rd.entries.length} entries persisted`);
      this.counts.tornWrites++;
    }
    this.counts.crashes++;
    this.note(`crash ${id} (durable commit ${n.storage.hardState.commit}, last ${n.storage.lastIndex()})`);
    n.outstanding = []; // clients of this node time out on their own
    n.pausedUntil = 0;
    n.backlog = [];
    n.pendingRequests = [];
  }

  restart(id: NodeId): void {
    const n = this.node(id);
    if (n.up) return;
    n.up = true;
    this.boot(n);
    this.note(`restart ${id} term ${n.raft.currentTerm} commit ${n.raft.committed}`);
  }

  /**
   * Rebuilds node `id`'s replica in place from the current leader, as a host does for a replica
   * it cannot trust (`pool repair`, a damaged WAL): the node stops (what it had in flight is
   * lost), the leader forgets what it acknowledged, and the node starts again from the leader's
   * state machine image at an index at or past the leader's commit and its own durable commit,
   * with no log of its own. False (nothing done) when the leader's state machine has not
   * applied that far yet.
   */
  rebuild(id: NodeId): boolean {
    const l = this.leader();
    const n = this.node(id);
    if (!l || l.id === id || !n.up) return false;
    const index = l.sm.applied;
    if (index < l.raft.committed || index !== l.raft.log.applied || index < n.storage.hardState.commit) return false;
    const term = l.raft.log.term(index);
    if (term === undefined) return false;
    this.crash(id);
    this.net.dropFrom(id);
    if (!this.opts.rebuildKeepsMatch) l.raft.forgetMatch(id);
    const storage = new MemoryStorage([]);
    storage.applySnapshot({ metadata: { index, term, confState: l.raft.confStateAt(index) }, data: l.sm.snapshot() });
    // The leader's term with a vote for it (elected in it already): no second vote in that term.
    const hs = n.storage.hardState;
    storage.setHardState(hs.term > l.raft.currentTerm ? { term: hs.term, vote: hs.vote, commit: index } : { term: l.raft.currentTerm, vote: l.id, commit: index });
    n.storage = storage;
    n.up = true;
    this.boot(n);
    this.counts.rebuilds++;
    this.note(`rebuilt ${id} from leader ${l.id} at ${index}`);
    return true;
  }

  /**
   * Retires a node the group removed, as the PG mover retires a replica: the leader's committed
   * and latest configurations leave it out, and its own log does not have it added back since
   * its removal (one cut off before the removal reached it goes). Its log is dropped (its term
   * and vote kept, as the WAL keeps a retired group's hard state) and it starts again empty, a
   * joiner and a new instance of its log, filled by the leader's snapshot once it is added
   * back. Its messages already in flight are still delivered: acknowledgements of the old
   * instance may reach a leader that has added the node back since.
   */
  retire(id: NodeId): boolean {
    const l = this.leader();
    const n = this.node(id);
    if (!l || !n.up || !n.raft || l.id === id) return false;
    const names = (cs: ConfState): boolean => cs.voters.includes(id) || cs.votersOutgoing.includes(id) || cs.learners.includes(id) || cs.learnersNext.includes(id);
    const latest = Number.MAX_SAFE_INTEGER;
    if (names(l.raft.confStateAt(l.raft.committed)) || names(l.raft.confStateAt(latest)) || n.raft.memberAgainAfterRemoval(id)) return false;
    const hs = n.storage.hardState;
    this.crash(id);
    const storage = new MemoryStorage([]);
    storage.setHardState({ term: hs.term, vote: hs.vote, commit: 0 });
    n.storage = storage;
    n.up = true;
    this.inv.logDropped(id);
    this.boot(n);
    this.counts.retirements++;
    this.note(`retired ${id} (removed as of leader ${l.id}'s commit ${l.raft.committed}): empty, a new instance of its log`);
    return true;
  }

  upNodes(): SimNode[] {
    return this.nodes.filter((n) => n.up);
  }

  /** The highest-term node that believes it leads. */
  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes) {
      if (!n.up || n.raft.currentRole !== 'leader') continue;
      if (!best || n.raft.currentTerm > best.raft.currentTerm) best = n;
    }
    return best;
  }

  // ---------------------------------------------------------------- client entry points

  /** A client request arriving at node `id`. The reply comes through onReply (maybe never). */
  request(id: NodeId, req: ClientRequest, client: number, reqNo: number, onReply: (r: ClientReply) => void): void {
    const n = this.node(id);
    if (!n.up) return;
    if (this.now < n.pausedUntil) {
      n.pendingRequests.push(() => this.request(id, req, client, reqNo, onReply));
      return;
    }
    const raft = n.raft;
    if (raft.currentRole !== 'leader') {
      onReply({ ok: false, redirect: true, leader: raft.leader });
      return;
    }
    try {
      if (req.kind === 'read') {
        const ctx = `${n.incarnation}:${++this.readSeq}`;
        raft.readIndex(ctx);
        n.readCtx.set(ctx, { key: req.key, onReply });
        return;
      }
      const cmd: KvCommand =
        req.kind === 'write'
          ? { f: 'write', key: req.key, value: req.value, client, req: reqNo }
          : { f: 'cas', key: req.key, from: req.from, to: req.to, client, req: reqNo };
      const ref = raft.propose(encodeCommand(cmd));
      n.proposals.set(ref.index, { index: ref.index, term: ref.term, onReply });
    } catch (e) {
      if (e instanceof RaftblockError && (e.code === 'NOT_LEADER' || e.code === 'UNAVAILABLE')) {
        onReply({ ok: false, redirect: true, leader: raft.leader });
        return;
      }
      throw e;
    }
  }

  proposeConfChange(cc: ConfChange): boolean {
    const l = this.leader();
    if (!l) return false;
    try {
      l.raft.proposeConfChange(cc);
      this.note(`conf change via ${l.id}: ${JSON.stringify(cc.changes)}`);
      this.counts.confChanges++;
      return true;
    } catch (e) {
      if (e instanceof RaftblockError) return false;
      throw e;
    }
  }

  transferLeader(to: NodeId): boolean {
    const l = this.leader();
    if (!l) return false;
    try {
      l.raft.transferLeader(to);
      this.note(`transfer ${l.id} -> ${to}`);
      this.counts.transfers++;
      return true;
    } catch (e) {
      if (e instanceof RaftblockError) return false;
      throw e;
    }
  }

  // ---------------------------------------------------------------- the step

  /** One step: ticks, deliveries, Ready handling, invariant checks. */
  step(): void {
    this.now++;
    const perStep = 1 / this.opts.stepsPerTick;
    for (const n of this.nodes) {
      if (!n.up) continue;
      n.tickPhase += perStep * n.tickRate;
      if (this.now < n.pausedUntil) {
        if (this.opts.coalesceTicksOnStall) n.tickPhase = Math.min(n.tickPhase, 0.99);
        continue;
      }
      // A host ticks from a monotonic clock: after a stall it catches up on every missed tick
      // before it handles anything else.
      while (n.tickPhase >= 1) {
        n.tickPhase -= 1;
        n.raft.tick();
      }
      // Clients first, then the peers' messages: the worst order for a stale leaseholder.
      if (n.pendingRequests.length > 0) {
        const reqs = n.pendingRequests;
        n.pendingRequests = [];
        for (const r of reqs) r();
      }
      if (n.backlog.length > 0) {
        const backlog = n.backlog;
        n.backlog = [];
        for (const m of backlog) n.raft.step(m);
      }
    }
    for (const m of this.net.take(this.now)) {
      const n = this.node(m.to);
      if (!n.up) continue;
      if (this.now < n.pausedUntil) n.backlog.push(m);
      else n.raft.step(m);
    }
    for (const n of this.nodes) {
      if (!n.up || this.now < n.pausedUntil) continue;
      this.pumpReady(n);
      this.observe(n);
    }
  }

  /** Stalls node `id` for `steps` steps (it keeps its state; messages and requests queue). */
  pause(id: NodeId, steps: number): void {
    const n = this.node(id);
    if (!n.up) return;
    n.pausedUntil = Math.max(n.pausedUntil, this.now + steps);
    this.counts.pauses++;
    this.note(`pause ${id} for ${steps} steps`);
  }

  private pumpReady(n: SimNode): void {
    for (let rounds = 0; rounds < 4; rounds++) {
      const head = n.outstanding[0];
      if (head && head.persistAt <= this.now) {
        n.outstanding.shift();
        this.completeReady(n, head.rd);
        continue;
      }
      if (!n.raft.hasReady()) return;
      const rd = n.raft.ready();
      // As the host does (host.ts handleReady): a leader's appends and heartbeats leave before
      // its own append is durable once its term is (raft/early-send.ts); everything else
      // (votes, acknowledgements) promises what the Ready persists, so it waits.
      const termDurable = n.storage.hardState.term >= n.raft.currentTerm;
      const later: Message[] = [];
      for (const m of rd.messages) {
        if (leavesBeforePersist(m, n.raft.currentRole, termDurable)) this.net.send(this.now, m);
        else later.push(m);
      }
      rd.messages = later;
      const delay = this.opts.maxPersistDelaySteps > 0 && rd.mustSync ? this.persistRng.nextInt(this.opts.maxPersistDelaySteps + 1) : 0;
      // Writes complete in the order they were issued (the WAL's batches become durable in order).
      const prevAt = n.outstanding.length > 0 ? n.outstanding[n.outstanding.length - 1].persistAt : 0;
      n.outstanding.push({ rd, persistAt: Math.max(prevAt, this.now + delay) });
    }
  }

  private completeReady(n: SimNode, rd: Ready): void {
    const st = n.storage;
    // 1. persist
    if (rd.snapshot) {
      st.applySnapshot(rd.snapshot);
      n.sm = KvStateMachine.restore(rd.snapshot.data, rd.snapshot.metadata.index);
      this.note(`node ${n.id} installed snapshot at ${rd.snapshot.metadata.index}`);
      this.counts.snapshotsInstalled++;
    }
    if (rd.entries.length > 0) {
      st.append(rd.entries);
      for (const e of rd.entries) {
        if (e.index < st.firstIndex()) continue;
        this.inv.persisted(n.id, e, e.index - 1 >= st.firstIndex() - 1 ? st.term(e.index - 1) : undefined);
      }
    }
    if (rd.hardState) {
      st.setHardState(rd.hardState);
      this.inv.durableCommit(n.id, rd.hardState.commit);
    }
    // 2. send
    for (const m of rd.messages) this.net.send(this.now, m);
    // 3. apply
    for (const e of rd.committedEntries) {
      this.inv.appliedEntry(n.id, e);
      if (e.type === EntryType.Normal && e.data.byteLength > 0) {
        const cmd = decodeCommand(e.data);
        const res = n.sm.apply(e.index, cmd);
        const p = n.proposals.get(e.index);
        if (p) {
          n.proposals.delete(e.index);
          if (p.term === e.term) p.onReply({ ok: true, value: res.ok ? 1 : 0 });
          else p.onReply({ ok: false }); // another entry won this index: ours never applies
        }
      } else {
        n.sm.skip(e.index);
        const p = n.proposals.get(e.index);
        if (p) {
          n.proposals.delete(e.index);
          p.onReply({ ok: false });
        }
      }
    }
    for (const rs of rd.readStates) {
      const r = n.readCtx.get(rs.ctx);
      if (!r) continue;
      n.readCtx.delete(rs.ctx);
      n.reads.push({ key: r.key, index: rs.index, onReply: r.onReply });
    }
    n.raft.advance(rd);
    if (n.reads.length > 0) {
      const keep: PendingRead[] = [];
      for (const r of n.reads) {
        if (n.sm.applied >= r.index) r.onReply({ ok: true, value: n.sm.get(r.key) });
        else keep.push(r);
      }
      n.reads = keep;
    }
    // 4. snapshot + compaction, the host's own policy
    const snapIndex = st.snapshot().metadata.index;
    // Or sooner when the leader must send a member a snapshot covering its re-add (sendAppend).
    const wanted = n.raft.snapshotWantedIndex;
    const due = n.sm.applied - snapIndex >= this.opts.snapshotEveryEntries || (wanted > snapIndex && n.sm.applied >= wanted);
    if (due && n.sm.applied === n.raft.log.applied) {
      st.createSnapshot(n.sm.applied, n.raft.confStateAt(n.sm.applied), n.sm.snapshot());
      const upTo = n.sm.applied - this.opts.snapshotKeepEntries;
      if (upTo > st.firstIndex() - 1) st.compact(upTo);
    }
  }

  private observe(n: SimNode): void {
    const raft = n.raft;
    const role = raft.currentRole;
    const term = raft.currentTerm;
    if (role === 'leader' && (n.lastRole !== 'leader' || n.lastTerm !== term)) {
      if (this.inv.leaderSeen(n.id, term)) {
        this.note(`node ${n.id} leads term ${term}`);
        this.counts.elections++;
      }
      this.inv.leaderComplete(n.id, term, raft.log.firstIndex(), (i) => raft.log.term(i));
    }
    n.lastRole = role;
    n.lastTerm = term;
    const c = raft.committed;
    if (c !== n.lastCommit) {
      this.inv.commitAdvanced(n.id, c, (i) => raft.log.term(i), (i) => raft.log.slice(i, i + 1, 1 << 30)?.[0]?.data);
      n.lastCommit = c;
    }
    if (role !== 'leader' && (n.proposals.size > 0 || n.readCtx.size > 0)) {
      // Lost leadership: pending reads cannot complete here; proposals may still apply.
      for (const r of n.readCtx.values()) r.onReply({ ok: false, redirect: true, leader: raft.leader });
      n.readCtx.clear();
    }
  }

  /** One line per node: role, term, commit, log terms (runs), membership. */
  describe(): string[] {
    const out: string[] = [];
    for (const n of this.nodes) {
      const r = n.raft;
      const runs: string[] = [];
      let runStart = r.log.firstIndex();
      let runTerm = r.log.term(runStart);
      for (let i = runStart + 1; i <= r.log.lastIndex() + 1; i++) {
        const t = i <= r.log.lastIndex() ? r.log.term(i) : -1;
        if (t !== runTerm) {
          runs.push(`${runStart}-${i - 1}:t${runTerm}`);
          runStart = i;
          runTerm = t;
        }
      }
      const cs = r.status().confState;
      out.push(
        `node ${n.id} ${n.up ? 'up' : 'DOWN'} ${r.currentRole} term ${r.currentTerm} lead ${r.leader} commit ${r.committed} applied ${r.log.applied} ` +
          `log [${runs.join(' ')}] voters ${JSON.stringify(cs.voters)} out ${JSON.stringify(cs.votersOutgoing)} learners ${JSON.stringify(cs.learners)}`,
      );
    }
    return out;
  }
}
