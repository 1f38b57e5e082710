/**
 * The consensus core: one Raft group member as a pure, deterministic state machine that a host
 * drives — `tick()` for time, `step(msg)` for messages, `propose()` / `readIndex()` for clients,
 * and `ready()` / `advance()` for the I/O it asks the host to perform (see `Ready`).
 *
 * Design notes (why, not what):
 *  - A membership change takes effect as soon as its entry is in the log (see confHistory),
 *    and every change goes through a joint configuration, so any two quorums of successive
 *    configurations intersect.
 *  - The leader counts its own copy of an entry only once the host says it is durable
 *    (`advance`), so "committed" always means durable on a quorum.
 *  - Only an entry of the leader's current term is committed by counting replicas (Figure 8);
 *    earlier entries commit with it by the log matching property.
 *  - Lease: every leader→follower message carries the leader's tick; a follower echoes it.
 *    A follower that heard from a leader (or just booted) refuses votes for electionTicks of
 *    its own clock, so once a quorum echoed tick t, no other leader can be elected before the
 *    leader's clock reaches t + leaseTicks (leaseTicks < electionTicks - drift).
 */
import { assert } from '../common/assert.js';
import { InvalidArgument, NotLeader, Unavailable } from '../common/errors.js';
import { allMembers, applyConfChange, decodeConfChange, encodeConfChange, isJoint, validateConfChange } from './confchange.js';
import { RaftLog } from './log.js';
import { Progress, jointVote, majorityValue } from './progress.js';
import { cloneConfState } from './storage.js';
import {
  type Config,
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  type MsgApp,
  type MsgAppResp,
  type MsgHeartbeat,
  type MsgHeartbeatResp,
  type MsgSnap,
  type MsgSnapResp,
  type MsgVote,
  type MsgVoteResp,
  NONE,
  type NodeId,
  type ProgressStatus,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SoftState,
  type Status,
  type Storage,
  entrySizeBytes,
} from './types.js';

/** Whether `cs` names `id` in any role (voter, outgoing voter, learner, learner next); allocates nothing. */
function namesMember(cs: ConfState, id: NodeId): boolean {
  return cs.voters.includes(id) || cs.votersOutgoing.includes(id) || cs.learners.includes(id) || cs.learnersNext.includes(id);
}

/** Where a proposal landed; the host matches applied entries by both fields. */
export interface ProposalRef {
  index: number;
  term: number;
}

/** Largest snapshot a follower accepts to reassemble in memory. */
export const maxSnapshotBytes = 1 << 30;
/** Largest number of reads waiting for a ReadIndex round. */
export const maxPendingReads = 65536;
/** Messages queued for the next Ready beyond this are dropped (Raft tolerates loss; a host that stopped calling ready() must not exhaust memory). */
export const maxQueuedMessages = 1 << 16;

interface PendingRead {
  ctx: string;
  index: number;
  /** ReadIndex round; 0 until the round's heartbeat is sent. */
  seq: number;
}

interface IncomingSnapshot {
  term: number;
  snapshot: Snapshot;
  buf: Uint8Array;
  received: number;
}

const emptyData = new Uint8Array(0);

/** How reads were answered, for the host's metrics and the simulator's coverage report. */
export interface ReadCounters {
  lease: number;
  readIndex: number;
  unsafe: number;
}

export class RaftNode {
  readonly id: NodeId;
  readonly readCounters: ReadCounters = { lease: 0, readIndex: 0, unsafe: 0 };
  /** Messages dropped because the host did not take Ready batches (see maxQueuedMessages). */
  droppedMessages = 0;
  private readonly cfg: Config;
  readonly log: RaftLog;

  private term = 0;
  private vote: NodeId = NONE;
  private lead: NodeId = NONE;
  private role: Role = 'follower';
  /**
   * Membership as the log defines it: the snapshot's configuration followed by one point per
   * ConfChange entry in the log, in index order. A configuration takes effect as soon as its
   * entry is in the log (appended, not applied), as in the Raft paper's joint consensus: then
   * every candidate and every leader decides with the latest configuration it holds, and two
   * successive configurations always have intersecting quorums. (Counting with the configuration
   * as of the applied index instead lets a node that has not applied a change yet win an
   * election with a quorum of a configuration two changes old.)
   */
  private confHistory: { index: number; cs: ConfState }[];
  /** See snapshotWantedIndex. */
  private snapshotWanted = 0;
  private confCheckPending = false;

  private prs = new Map<NodeId, Progress>();
  /** sortedPeers()' answer; null whenever prs gains or loses a member. */
  private peersSorted: Progress[] | null = null;
  private votes = new Map<NodeId, boolean>();

  private tickCount = 0;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /** Ticks since a leader last contacted us (or since boot): votes are refused below electionTicks. */
  private ticksSinceLeader = 0;

  private seq = 0;
  /**
   * Follower: the highest index this term's leader has shown our log to match its own (an
   * accepted append's last new entry; a snapshot it sent moves the commit index itself). A
   * heartbeat commits no further than this or the commit index.
   */
  private matchedLeaderIndex = 0;
  private pendingReads: PendingRead[] = [];
  private readsAwaitingCommit: string[] = [];
  private readStates: ReadState[] = [];
  private msgs: Message[] = [];

  private uncommittedBytes = 0;
  private leadTransferee: NodeId = NONE;
  /** A TimeoutNow was sent this term: followers may now vote early, so the lease is void. */
  private leaseRevoked = false;
  private appendsPending = false;
  private commitPending = false;

  private incoming: IncomingSnapshot | undefined;
  /** Readies handed out and not yet advanced, oldest first (at most cfg.maxOutstandingReadies). */
  private outstanding: Ready[] = [];
  /** Highest committed index handed out for apply (in an outstanding Ready or applied). */
  private applyingTo = 0;
  private prevHardState: HardState;
  private prevSoftState: SoftState;

  constructor(config: Config, storage: Storage) {
    validateConfig(config);
    this.cfg = config;
    this.id = config.id;
    this.log = new RaftLog(storage, config.applied);
    const { hardState, confState } = storage.initialState();
    assert(hardState.commit <= this.log.lastIndex(), `persisted commit ${hardState.commit} beyond last index ${this.log.lastIndex()}`);
    this.term = hardState.term;
    this.vote = hardState.vote;
    this.log.commitTo(hardState.commit);
    assert(this.log.applied <= this.log.committed, `applied ${this.log.applied} beyond commit ${this.log.committed}`);
    this.confHistory = [{ index: storage.firstIndex() - 1, cs: cloneConfState(confState) }];
    // Replay the membership changes in the log after the snapshot.
    for (let lo = storage.firstIndex(); lo <= storage.lastIndex(); ) {
      const ents = storage.entries(lo, storage.lastIndex() + 1, 64 << 20);
      assert(ents.length > 0, 'storage returned no entries');
      this.recordEntries(ents, lo);
      lo = ents[ents.length - 1].index + 1;
    }
    this.prevHardState = { ...hardState };
    this.prevSoftState = { lead: NONE, role: 'follower' };
    this.becomeFollower(this.term, NONE);
    // A restarted node may have acknowledged a leader just before it went down, and that leader
    // may be serving reads under a lease: refuse votes for one election timeout after boot.
    // A node still in the bootstrap term (1) never acknowledged any leader.
    this.ticksSinceLeader = this.term <= 1 ? this.cfg.electionTicks : 0;
  }

  // ------------------------------------------------------------------ public API

  /** Advances the logical clock by one tick (elections, heartbeats, lease expiry, check-quorum). */
  tick(): void {
    this.tickCount++;
    if (this.role === 'leader') {
      this.ticksSinceLeader = 0;
      this.tickHeartbeat();
    } else {
      this.ticksSinceLeader++;
      this.tickElection();
    }
  }

  /** Handles a message from a peer. Stale messages are dropped, never thrown. */
  step(m: Message): void {
    assert(m.to === this.id, `message for ${m.to} delivered to ${this.id}`);
    if (m.from === this.id) return;
    if (m.term > this.term) {
      if (m.type === 'vote' || m.type === 'preVote') {
        const inLease = this.cfg.checkQuorum && this.ticksSinceLeader < this.cfg.electionTicks;
        if (inLease && !m.transfer) return; // a leader is alive as far as we know: no disruption
      }
      if (m.type === 'preVote') {
        // Never change term for a pre-vote.
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // Our own pre-vote round for term+1 succeeding; the term changes when we campaign.
      } else if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
        this.becomeFollower(m.term, m.from);
      } else {
        // A newer term from a candidate (or a reply) names no leader: adopt it, but keep the
        // election clock running. Restarting it here lets candidates that can never win (logs
        // too short) hold back every up-to-date voter's timeout with each new term they try,
        // and no leader is ever elected (sim seed 3012181 without pre-vote). Only a leader's
        // message or a granted vote restarts the clock (Raft thesis §3.4).
        this.becomeFollower(m.term, NONE, { keepElectionClock: true });
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === 'heartbeat' || m.type === 'app')) {
        // A stale leader: tell it our term so it steps down.
        this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: false, index: 0, rejectHint: 0, logTerm: 0, seq: 0, tick: -1 });
      } else if (m.type === 'preVote') {
        this.send({ type: 'preVoteResp', from: this.id, to: m.from, term: this.term, reject: true });
      }
      return;
    }

    if (m.type === 'vote' || m.type === 'preVote') {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        break;
      case 'candidate':
      case 'preCandidate':
        this.stepCandidate(m);
        break;
      case 'follower':
        this.stepFollower(m);
        break;
    }
  }

  /** Appends data as a new entry (leader only). Throws NotLeader or Unavailable. */
  propose(data: Uint8Array): ProposalRef {
    return this.appendProposal(EntryType.Normal, data);
  }

  /** Proposes a membership change (joint consensus). Throws NotLeader, Unavailable or InvalidArgument. */
  proposeConfChange(cc: ConfChange): ProposalRef {
    this.requireLeader();
    if (this.latestConfIndex() > this.log.committed) throw new Unavailable('a membership change is still pending');
    validateConfChange(this.confState, cc);
    return this.appendProposal(EntryType.ConfChange, encodeConfChange(cc));
  }

  /**
   * Requests a linearizable read point. The answer arrives in Ready.readStates with `ctx`: the
   * host serves the read once its applied index reaches the state's index. Served at once under
   * a valid lease, otherwise after a heartbeat round confirms leadership (ReadIndex); never
   * before this leader has committed an entry of its own term. Throws NotLeader.
   */
  readIndex(ctx: string): void {
    this.requireLeader();
    if (this.cfg.unsafe?.readWithoutLeaseOrReadIndex) {
      this.readCounters.unsafe++;
      this.readStates.push({ index: this.log.committed, ctx });
      return;
    }
    if (this.pendingReads.length + this.readsAwaitingCommit.length >= maxPendingReads) throw new Unavailable('too many pending reads');
    if (!this.committedOwnTerm()) {
      this.readsAwaitingCommit.push(ctx);
      return;
    }
    this.startRead(ctx);
  }

  /** True while this leader holds a lease: no other leader can exist right now. */
  leaseValid(): boolean {
    if (this.role !== 'leader' || this.cfg.leaseTicks === 0 || this.leaseRevoked || this.leadTransferee !== NONE) return false;
    if (!this.committedOwnTerm()) return false;
    const quorumTick = this.quorumValue((pr) => (pr.id === this.id ? this.tickCount : pr.ackTick));
    return this.tickCount - quorumTick < this.cfg.leaseTicks;
  }

  /** Starts an election now (pre-vote first when enabled). Ignored by a leader or non-voter. */
  campaign(): void {
    if (this.role === 'leader' || !this.promotable()) return;
    this.startCampaign(false);
  }

  /** Leader only: hands leadership to `to` once it is caught up (MsgTimeoutNow). */
  transferLeader(to: NodeId): void {
    this.requireLeader();
    if (to === this.id) return;
    if (!this.confState.voters.includes(to)) throw new InvalidArgument(`transfer target ${to} is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.electionElapsed = 0; // the transfer is abandoned after one election timeout
    const pr = this.prs.get(to);
    assert(pr !== undefined, 'voter without progress');
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(pr, true);
  }

  /** Tells the leader a peer is unreachable: stop pipelining to it until it answers. */
  reportUnreachable(id: NodeId): void {
    const pr = this.prs.get(id);
    if (this.role === 'leader' && pr && pr.state === 'replicate') pr.becomeProbe();
  }

  /**
   * Leader only: member `id` has lost what it acknowledged (its replica is being rebuilt from
   * a snapshot). Its match is forgotten, so an entry only it and this leader held is not
   * committed by counting it: without this, an acknowledgement from before the loss could
   * still complete a quorum when this leader's own append becomes durable, and the entry
   * would be committed on fewer durable copies than a quorum. It counts again from its next
   * acknowledgement; the probe starts at the end of the log, so a rebuilt replica catches up
   * by entries when it can, not by another snapshot.
   */
  forgetMatch(id: NodeId): void {
    const pr = this.prs.get(id);
    if (this.role !== 'leader' || !pr || id === this.id) return;
    this.forgetPeerLog(pr);
  }

  /**
   * Whether this node's log holds a configuration that removed `id` followed by a later one
   * that has it a member again (as far as the membership history kept reaches): a member
   * added back since its removal.
   */
  memberAgainAfterRemoval(id: NodeId): boolean {
    const h = this.confHistory;
    if (!allMembers(h[h.length - 1].cs).includes(id)) return false;
    // A configuration of no voters is none known yet (a joiner's, before its snapshot).
    for (let i = h.length - 2; i >= 0; i--) if (h[i].cs.voters.length > 0 && !allMembers(h[i].cs).includes(id)) return true;
    return false;
  }

  /**
   * When `id` became a member again after a break (an earlier configuration in the history
   * kept named it, a later one did not): the index of the configuration from which it was a
   * member since, also while a later configuration removes it again (its progress lasts until
   * that removal commits). 0 otherwise: a member all along, as far as the history reaches, or
   * never before (entries before its addition name no earlier life of its id).
   */
  private memberAgainSince(id: NodeId): number {
    const h = this.confHistory;
    let i = h.length - 1;
    while (i >= 0 && !namesMember(h[i].cs, id)) i--;
    let since = 0;
    for (; i >= 0 && namesMember(h[i].cs, id); i--) since = h[i].index;
    if (since === 0) return 0;
    for (; i >= 0; i--) if (namesMember(h[i].cs, id)) return since;
    return 0;
  }

  /**
   * A leader's wish for a snapshot at or past this index (0: none): a member whose log ends
   * before the configuration that made it a member again is sent only a snapshot that covers
   * that configuration (see sendAppend), and the host takes one once it has applied so far.
   */
  get snapshotWantedIndex(): number {
    if (this.role !== 'leader' || this.snapshotWanted <= this.log.storage.snapshot().metadata.index) return 0;
    return this.snapshotWanted;
  }

  /**
   * A Ready may be taken while earlier ones are still being persisted (up to
   * `maxOutstandingReadies`): the host's writes then overlap instead of each waiting for the
   * one before. Readies must be advanced in the order they were taken, and a host persists
   * them in that order (a later one's messages may promise what an earlier one writes). A
   * snapshot travels alone: it is handed out only when nothing else is outstanding, and
   * nothing follows it until it is advanced.
   */
  hasReady(): boolean {
    if (!this.mayTakeReady()) return false;
    this.flush();
    // Field by field, not hardState(): a host asks every touched group on every pump.
    const prev = this.prevHardState;
    if (this.term !== prev.term || this.vote !== prev.vote || this.log.committed !== prev.commit) return true;
    if (this.lead !== this.prevSoftState.lead || this.role !== this.prevSoftState.role) return true;
    // (A snapshot waiting here means nothing is outstanding: see mayTakeReady.)
    if (this.log.unstableSnapshot || this.log.hasEntriesToPersist()) return true;
    if (this.msgs.length > 0 || this.readStates.length > 0) return true;
    return Math.min(this.log.committed, this.log.stableLastIndex()) > this.nextApplyFrom() - 1;
  }

  private mayTakeReady(): boolean {
    const n = this.outstanding.length;
    if (n === 0) return true;
    if (n >= this.cfg.maxOutstandingReadies) return false;
    return this.outstanding[n - 1].snapshot === undefined && this.log.unstableSnapshot === undefined;
  }

  private nextApplyFrom(): number {
    return Math.max(this.applyingTo, this.log.applied) + 1;
  }

  /** The next batch of work; call `advance(ready)` when it is done, in the order taken. */
  ready(): Ready {
    assert(this.mayTakeReady(), 'ready() while maxOutstandingReadies are outstanding, or behind a snapshot');
    this.flush();
    const hs = this.hardState();
    const rd: Ready = {
      entries: this.log.entriesToPersist(),
      messages: this.msgs,
      committedEntries: this.log.nextCommittedEntries(this.nextApplyFrom(), this.cfg.maxCommittedSizePerReady),
      readStates: this.readStates,
      mustSync: false,
    };
    this.log.handOutAll();
    if (!hardStateEqual(hs, this.prevHardState)) {
      rd.hardState = hs;
      rd.mustSync = hs.term !== this.prevHardState.term || hs.vote !== this.prevHardState.vote;
    }
    if (this.lead !== this.prevSoftState.lead || this.role !== this.prevSoftState.role) {
      rd.softState = { lead: this.lead, role: this.role };
    }
    // Only with nothing outstanding (mayTakeReady): a snapshot travels alone.
    if (this.log.unstableSnapshot) rd.snapshot = this.log.unstableSnapshot;
    if (rd.entries.length > 0 || rd.snapshot) rd.mustSync = true;
    if (rd.committedEntries.length > 0) this.applyingTo = rd.committedEntries[rd.committedEntries.length - 1].index;
    this.msgs = [];
    this.readStates = [];
    this.outstanding.push(rd);
    this.prevHardState = hs;
    this.prevSoftState = { lead: this.lead, role: this.role };
    return rd;
  }

  /**
   * The host persisted rd's snapshot, entries and hard state (and everything of the Readies
   * taken before it), sent its messages and applied its committed entries. May be called
   * asynchronously, after more ticks and steps; Readies are advanced in the order taken.
   */
  advance(rd: Ready): void {
    assert(rd === this.outstanding[0], 'advance() of a Ready that is not the oldest outstanding');
    this.outstanding.shift();
    if (rd.snapshot) {
      const idx = rd.snapshot.metadata.index;
      this.log.stableSnapTo(idx);
      if (idx > this.log.applied) this.log.applied = idx;
      if (idx > this.applyingTo) this.applyingTo = idx;
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      this.log.stableTo(last.index, last.term);
      if (this.role === 'leader') {
        const self = this.prs.get(this.id);
        if (self && self.maybeUpdate(this.log.stableLastIndex())) this.maybeCommit();
      }
    }
    for (const e of rd.committedEntries) {
      assert(e.index === this.log.applied + 1, `applying ${e.index} after ${this.log.applied}`);
      assert(e.index <= this.log.committed, `applying ${e.index} beyond commit ${this.log.committed}`);
      this.log.applied = e.index;
      if (this.role === 'leader') this.uncommittedBytes = Math.max(0, this.uncommittedBytes - entrySizeBytes(e));
    }
    // Forget configurations the storage no longer needs (it compacted past them).
    const floor = this.log.storage.firstIndex() - 1;
    while (this.confHistory.length > 1 && this.confHistory[1].index <= floor) this.confHistory.shift();
  }

  /**
   * Membership as of `index`, for a snapshot the host takes there. Valid for any index from
   * the storage's snapshot onwards.
   */
  confStateAt(index: number): ConfState {
    let found: ConfState | undefined;
    for (const p of this.confHistory) if (p.index <= index) found = p.cs;
    assert(found !== undefined, `membership at ${index} is no longer known (first ${this.confHistory[0].index})`);
    return cloneConfState(found);
  }

  status(): Status {
    let progress: Map<NodeId, ProgressStatus> | undefined;
    if (this.role === 'leader') {
      progress = new Map();
      for (const [id, pr] of this.prs) {
        // Heard since the last check-quorum round, or answered a message sent within the last
        // election timeout: right after a round clears every flag, a peer answering all along
        // must not read as silent (a caller polling in step with the rounds would never see
        // it active).
        const recentActive = pr.recentActive || this.tickCount - pr.ackTick <= this.cfg.electionTicks;
        progress.set(id, { match: pr.match, next: pr.next, state: pr.state, recentActive, isLearner: pr.isLearner });
      }
    }
    return {
      id: this.id,
      hardState: this.hardState(),
      softState: { lead: this.lead, role: this.role },
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      confState: cloneConfState(this.confState),
      progress,
      leadTransferee: this.leadTransferee,
      leaseValid: this.leaseValid(),
    };
  }

  get currentTerm(): number {
    return this.term;
  }
  get leader(): NodeId {
    return this.lead;
  }
  get currentRole(): Role {
    return this.role;
  }
  get committed(): number {
    return this.log.committed;
  }
  /** The index of the last entry in this node's log (a proposal's entry right after propose). */
  get lastIndex(): number {
    return this.log.lastIndex();
  }

  // ------------------------------------------------------------------ roles

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private get confState(): ConfState {
    return this.confHistory[this.confHistory.length - 1].cs;
  }

  /** Index of the latest ConfChange entry in the log (or of the snapshot holding the membership). */
  private latestConfIndex(): number {
    return this.confHistory[this.confHistory.length - 1].index;
  }

  /** The log was (re)written from index `from` with `ents` (which may start before it). */
  private recordEntries(ents: Entry[], from: number): void {
    const before = this.confHistory.length;
    let changed = false;
    while (this.confHistory.length > 1 && this.confHistory[this.confHistory.length - 1].index >= from) {
      this.confHistory.pop();
      changed = true;
    }
    assert(this.confHistory[0].index < from, `log rewritten at ${from}, at or below the membership base ${this.confHistory[0].index}`);
    for (const e of ents) {
      if (e.index < from || e.type !== EntryType.ConfChange) continue;
      const cs = this.confState;
      const cc = decodeConfChange(e.data);
      // Identical on every node: a change that does not fit the configuration is a no-op.
      const fits = cc.changes.length === 0 ? isJoint(cs) : !isJoint(cs);
      this.confHistory.push({ index: e.index, cs: fits ? applyConfChange(cs, cc) : cs });
      changed = true;
    }
    if (changed || this.confHistory.length !== before) {
      this.confCheckPending = true;
      if (this.role === 'leader') this.syncProgress(true);
    }
  }

  /**
   * Leader: one progress per member of the latest configuration, plus members of the last
   * committed one that a pending change removes (they keep receiving the log until the removal
   * commits, so they learn that they are out).
   */
  /**
   * Progress for every member of the configurations not yet committed and the last committed
   * one. `addedActive`: a member a configuration change adds now counts as recently active (as
   * in etcd), else the next check-quorum round would count it down before it could answer,
   * and a leader whose quorum needs it would step down.
   */
  private syncProgress(addedActive = false): void {
    const members = new Set<NodeId>();
    for (let i = this.confHistory.length - 1; i >= 0; i--) {
      const p = this.confHistory[i];
      for (const id of allMembers(p.cs)) members.add(id);
      if (p.index <= this.log.committed) break;
    }
    this.peersSorted = null;
    for (const id of [...this.prs.keys()]) if (!members.has(id)) this.prs.delete(id);
    const cs = this.confState;
    for (const id of members) {
      const learner = !cs.voters.includes(id) && !cs.votersOutgoing.includes(id);
      const pr = this.prs.get(id);
      if (pr) pr.isLearner = learner;
      else {
        const added = new Progress(id, this.log.lastIndex() + 1, this.cfg.maxInflightMsgs, this.cfg.maxInflightBytes, learner);
        added.recentActive = addedActive;
        // A member added back: what it answered before is not about this progress.
        if (this.role === 'leader') this.fenceAnswers(added);
        this.prs.set(id, added);
      }
    }
    if (this.leadTransferee !== NONE && !cs.voters.includes(this.leadTransferee)) this.leadTransferee = NONE;
  }

  /**
   * Leader, once its latest configuration is committed: leave a joint configuration
   * automatically, drop progress of removed members, and step down if no longer a voter.
   */
  private confMaintenance(): void {
    this.confCheckPending = false;
    if (this.role !== 'leader' || this.latestConfIndex() > this.log.committed) return;
    this.syncProgress();
    const cs = this.confState;
    if (isJoint(cs)) {
      if (cs.autoLeave) this.appendProposal(EntryType.ConfChange, encodeConfChange({ changes: [] }), true);
      return;
    }
    if (!this.promotable()) {
      // Removed (or demoted): hand leadership to the most caught-up voter, then step down.
      let best: Progress | undefined;
      for (const id of cs.voters) {
        const pr = this.prs.get(id);
        if (pr && (!best || pr.match > best.match)) best = pr;
      }
      if (best && best.match === this.log.lastIndex()) this.sendTimeoutNow(best.id);
      this.becomeFollower(this.term, NONE);
    }
  }

  private promotable(): boolean {
    return this.confState.voters.includes(this.id) || this.confState.votersOutgoing.includes(this.id);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      assert(term > this.term, `term going backwards: ${this.term} -> ${term}`);
      this.term = term;
      this.vote = NONE;
      this.matchedLeaderIndex = 0;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTicks + this.cfg.rng.nextInt(this.cfg.electionTicks);
    this.leadTransferee = NONE;
    this.votes.clear();
    this.prs.clear();
    this.peersSorted = null;
    this.pendingReads = [];
    this.readsAwaitingCommit = [];
    this.leaseRevoked = false;
    this.uncommittedBytes = 0;
    this.appendsPending = false;
    this.commitPending = false;
  }

  /**
   * `keepElectionClock`: the election count and deadline run on (see step: a newer term from a
   * message naming no leader). The deadline too: redrawn, it could fall at or below the count,
   * and every voter the same stale candidate woke would campaign at the next tick and split
   * the votes.
   */
  private becomeFollower(term: number, lead: NodeId, opts: { keepElectionClock?: boolean } = {}): void {
    const elapsedTicks = this.electionElapsed;
    const timeoutTicks = this.randomizedElectionTimeout;
    this.reset(term);
    if (opts.keepElectionClock) {
      this.electionElapsed = elapsedTicks;
      this.randomizedElectionTimeout = timeoutTicks;
    }
    this.role = 'follower';
    this.lead = lead;
    if (lead !== NONE) this.ticksSinceLeader = 0;
  }

  private becomePreCandidate(): void {
    assert(this.role !== 'leader', 'leader cannot become pre-candidate');
    // A pre-candidate keeps its term and vote: a failed pre-vote disturbs nobody.
    this.votes.clear();
    this.prs.clear();
    this.peersSorted = null;
    this.role = 'preCandidate';
    this.lead = NONE;
    this.electionElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTicks + this.cfg.rng.nextInt(this.cfg.electionTicks);
  }

  private becomeCandidate(): void {
    assert(this.role !== 'leader', 'leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    assert(this.role === 'candidate', 'only a candidate becomes leader');
    const term = this.term;
    this.reset(term);
    this.role = 'leader';
    this.lead = this.id;
    this.ticksSinceLeader = 0;
    // A wish of an earlier term may name entries since truncated (see snapshotWantedIndex).
    this.snapshotWanted = 0;
    this.syncProgress();
    const self = this.prs.get(this.id);
    if (self) {
      self.match = this.log.stableLastIndex();
      self.becomeReplicate();
      self.recentActive = true;
    }
    this.confCheckPending = true;
    // The no-op of a new term: once it commits, everything before it is committed (Figure 8).
    this.appendProposal(EntryType.Normal, emptyData, true);
  }

  /**
   * Starts an election: a pre-vote round first unless `skipPreVote`. Only a campaign ordered by
   * the leader (TimeoutNow) is a `transfer`, which voters honour even inside their lease.
   */
  private startCampaign(skipPreVote: boolean, transfer = false): void {
    if (this.cfg.preVote && !skipPreVote) {
      this.becomePreCandidate();
      this.votes.set(this.id, true);
      if (this.pollVotes() === 'won') {
        this.startCampaign(true);
        return;
      }
      this.sendVoteRequests('preVote', this.term + 1, false);
    } else {
      this.becomeCandidate();
      this.votes.set(this.id, true);
      if (this.pollVotes() === 'won') {
        this.becomeLeader();
        return;
      }
      this.sendVoteRequests('vote', this.term, transfer);
    }
  }

  private sendVoteRequests(type: 'vote' | 'preVote', term: number, transfer: boolean): void {
    const voters = new Set([...this.confState.voters, ...this.confState.votersOutgoing]);
    for (const id of [...voters].sort((a, b) => a - b)) {
      if (id === this.id) continue;
      this.send({ type, from: this.id, to: id, term, index: this.log.lastIndex(), logTerm: this.log.lastTerm(), transfer });
    }
  }

  private pollVotes(): 'won' | 'lost' | 'pending' {
    return jointVote(this.confState.voters, this.confState.votersOutgoing, this.votes);
  }

  // ------------------------------------------------------------------ ticks

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.startCampaign(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, NONE);
          return;
        }
        for (const pr of this.prs.values()) if (pr.id !== this.id) pr.recentActive = false;
      }
      this.leadTransferee = NONE;
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  private quorumActive(): boolean {
    return this.quorumValue((pr) => (pr.id === this.id || pr.recentActive ? 1 : 0)) === 1;
  }

  /** The value a (joint) quorum of voters has reached, by a per-progress measure. */
  private quorumValue(value: (pr: Progress) => number): number {
    const v = (id: NodeId): number => {
      const pr = this.prs.get(id);
      return pr ? value(pr) : Number.NEGATIVE_INFINITY;
    };
    return Math.min(majorityValue(this.confState.voters, v), majorityValue(this.confState.votersOutgoing, v));
  }

  // ------------------------------------------------------------------ message handling

  private handleVoteRequest(m: MsgVote): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.lead === NONE) ||
      (m.type === 'preVote' && m.term > this.term);
    const respType = m.type === 'vote' ? 'voteResp' : 'preVoteResp';
    // A node that knows no membership yet (a joiner before the leader's snapshot: new, or a
    // member retired and wanted back, its log dropped) grants nothing: its empty log makes any
    // candidate up to date, and a stale one whose old configuration still names this id could
    // win without entries the id's previous log had acknowledged (why etcd never reuses ids).
    const knowsMembership = this.confState.voters.length > 0;
    if (knowsMembership && canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      this.send({ type: respType, from: this.id, to: m.from, term: m.term, reject: false });
      if (m.type === 'vote') {
        assert(this.vote === NONE || this.vote === m.from, `second vote in term ${this.term}`);
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ type: respType, from: this.id, to: m.from, term: this.term, reject: true });
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'app':
      case 'heartbeat':
      case 'snap':
        // A leader exists in our term.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'voteResp':
      case 'preVoteResp': {
        const mine = (this.role === 'candidate' && m.type === 'voteResp') || (this.role === 'preCandidate' && m.type === 'preVoteResp');
        if (!mine) return;
        this.votes.set(m.from, !m.reject);
        const r = this.pollVotes();
        if (r === 'won') {
          if (this.role === 'preCandidate') this.startCampaign(true);
          else this.becomeLeader();
        } else if (r === 'lost') {
          this.becomeFollower(this.term, NONE);
        }
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'app':
        this.electionElapsed = 0;
        this.ticksSinceLeader = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.ticksSinceLeader = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case 'snap':
        this.electionElapsed = 0;
        this.ticksSinceLeader = 0;
        this.lead = m.from;
        this.handleSnapshotChunk(m);
        return;
      case 'timeoutNow':
        if (this.promotable()) this.startCampaign(true, true);
        return;
      default:
        return;
    }
  }

  private handleAppend(m: MsgApp): void {
    const echo = { seq: m.seq, tick: m.tick };
    if (m.index < this.log.committed) {
      this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: false, index: this.log.committed, rejectHint: 0, logTerm: 0, ...echo });
      return;
    }
    const res = this.log.maybeAppend(m.index, m.logTerm, m.entries);
    if (res !== undefined) {
      const lastNew = res.lastNew;
      if (lastNew > this.matchedLeaderIndex) this.matchedLeaderIndex = lastNew;
      if (res.writtenFrom !== Number.POSITIVE_INFINITY) this.recordEntries(m.entries, res.writtenFrom);
      this.log.commitTo(Math.min(m.commit, lastNew));
      this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: false, index: lastNew, rejectHint: 0, logTerm: 0, ...echo });
      return;
    }
    // Fast backtracking: point the leader at the last entry whose term could match.
    let hint = Math.min(m.index, this.log.lastIndex());
    hint = this.log.findConflictByTerm(hint, m.logTerm);
    const hintTerm = this.log.term(hint) ?? 0;
    this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: true, index: m.index, rejectHint: hint, logTerm: hintTerm, ...echo });
  }

  private handleHeartbeat(m: MsgHeartbeat): void {
    // The commit is min(leader commit, our match as the leader knows it), and that match may
    // come from a previous instance of this member's log (Config.logInstance), which held what
    // this one may not, or other entries at the same indexes (an instance rebuilt from a
    // deposed leader's point): the leader learns of the new instance from our next append
    // answer. Until then only what this leader's appends have shown to match its log in this
    // term is committed here (as etcd's commit from an append is bounded by its last new entry).
    // (A host that names no instances never loses a log: etcd's rule, up to our last index.)
    const last = this.log.lastIndex();
    const matched = this.cfg.logInstance === 0 ? last : Math.max(this.log.committed, this.matchedLeaderIndex);
    this.log.commitTo(Math.min(m.commit, matched));
    this.send({ type: 'heartbeatResp', from: this.id, to: m.from, term: this.term, seq: m.seq, tick: m.tick });
    if (m.commit > matched) {
      // A leader that believes we hold `m.commit` sends no append to ask (a restarted follower
      // of an idle group would never learn the commit), and heartbeat answers name no instance
      // (they are coalesced per node pair into integer rows, which a field more would undo):
      // refuse the append it believes matched, an answer naming ours; a leader that knew
      // another instance forgets it and probes.
      const logTerm = this.log.term(last) ?? 0;
      this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: true, index: m.commit, rejectHint: last, logTerm, seq: m.seq, tick: m.tick });
    }
  }

  private handleSnapshotChunk(m: MsgSnap): void {
    const echo = { seq: m.seq, tick: m.tick };
    const meta = m.metadata;
    if (m.logInstance !== undefined && this.cfg.logInstance !== 0 && m.logInstance !== this.cfg.logInstance) {
      // Meant for an earlier instance of this log (sent before a retirement or restart, delivered
      // after). Its configuration may name this id a voter of a membership since replaced, which
      // a member back after a removal must never take for its own. The refusal names our
      // instance: the leader forgets what it knew of this log and probes it afresh.
      this.send({ type: 'snapResp', from: this.id, to: m.from, term: this.term, index: meta.index, offset: 0, reject: true, ...echo });
      return;
    }
    if (meta.index <= this.log.committed) {
      this.incoming = undefined;
      this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: false, index: this.log.committed, rejectHint: 0, logTerm: 0, ...echo });
      return;
    }
    if (m.totalBytes > maxSnapshotBytes || m.offset + m.chunk.byteLength > m.totalBytes) return; // refuse; the leader will retry
    let inc = this.incoming;
    if (!inc || inc.snapshot.metadata.index !== meta.index || inc.snapshot.metadata.term !== meta.term || inc.term !== m.term) {
      if (m.offset !== 0) {
        this.send({ type: 'snapResp', from: this.id, to: m.from, term: this.term, index: meta.index, offset: 0, reject: true, ...echo });
        return;
      }
      inc = { term: m.term, snapshot: { metadata: meta, data: emptyData }, buf: new Uint8Array(m.totalBytes), received: 0 };
      this.incoming = inc;
    }
    if (m.offset > inc.received) {
      this.send({ type: 'snapResp', from: this.id, to: m.from, term: this.term, index: meta.index, offset: inc.received, reject: true, ...echo });
      return;
    }
    if (m.offset === inc.received) {
      inc.buf.set(m.chunk, m.offset);
      inc.received += m.chunk.byteLength;
    }
    if (inc.received < inc.buf.byteLength) {
      this.send({ type: 'snapResp', from: this.id, to: m.from, term: this.term, index: meta.index, offset: inc.received, reject: false, ...echo });
      return;
    }
    this.incoming = undefined;
    const snap: Snapshot = { metadata: meta, data: inc.buf };
    this.restore(snap);
    // The snapshot's index (now committed here), as etcd answers: a log that already held the
    // snapshot's last entry may hold a tail beyond it this leader never sent, not to be counted.
    this.send({ type: 'appResp', from: this.id, to: m.from, term: this.term, reject: false, index: this.log.committed, rejectHint: 0, logTerm: 0, ...echo });
  }

  private restore(snap: Snapshot): void {
    const meta = snap.metadata;
    if (meta.index <= this.log.committed) return;
    if (this.log.matchTerm(meta.index, meta.term)) {
      // The snapshot overlaps our log, which already holds its last entry: by log matching we
      // hold everything it covers, so keep the log and only move commit forward.
      this.log.commitTo(meta.index);
      return;
    }
    // Configurations up to the old commit stay valid (the host may still snapshot there before
    // it installs this one); everything after comes from the snapshot.
    const committed = this.log.committed;
    this.confHistory = this.confHistory.filter((p) => p.index <= committed);
    this.log.restore(snap);
    this.confHistory.push({ index: meta.index, cs: cloneConfState(meta.confState) });
  }

  private stepLeader(m: Message): void {
    const pr = this.prs.get(m.from);
    if (!pr) return;
    if ((m.type === 'appResp' || m.type === 'heartbeatResp' || m.type === 'snapResp') && m.seq < pr.answersFromSeq) return;
    switch (m.type) {
      case 'appResp': {
        const forgot = this.noteLogInstance(pr, m.logInstance);
        this.noteAck(pr, m);
        this.handleAppendResponse(pr, m);
        // A rejection meant for the old instance is stale now: probe the new one at once.
        if (forgot) this.sendAppend(pr, true);
        return;
      }
      case 'heartbeatResp':
        this.noteAck(pr, m);
        this.handleHeartbeatResponse(pr, m);
        return;
      case 'snapResp': {
        const forgot = this.noteLogInstance(pr, m.logInstance);
        this.noteAck(pr, m);
        if (forgot) this.sendAppend(pr, true);
        else this.handleSnapshotResponse(pr, m);
        return;
      }
      default:
        return;
    }
  }

  /**
   * The instance of `pr`'s log an answer comes from (Config.logInstance). Another one than
   * `pr.match` was acknowledged by has lost what that one held: its progress starts over.
   * Returns true when it did.
   */
  private noteLogInstance(pr: Progress, logInstance: number | undefined): boolean {
    if (logInstance === undefined || logInstance === 0 || logInstance === pr.logInstance) return false;
    const heardBefore = pr.logInstance !== 0;
    pr.logInstance = logInstance;
    if (!heardBefore) return false;
    // Later answers to earlier messages may come from the old instance: dropped. (The one in
    // hand is the new instance's, and is taken.)
    this.forgetPeerLog(pr);
    return true;
  }

  /** `pr`'s log is not what it acknowledged: probe from the end, and take only answers to messages from now on. */
  private forgetPeerLog(pr: Progress): void {
    pr.forgetLog(this.log.lastIndex() + 1);
    this.fenceAnswers(pr);
  }

  /**
   * From now on `pr` takes only answers to messages sent from now on: the next round number
   * goes out with every later message, and answers echo it. (A later round confirms
   * leadership as well as an earlier one, so reads waiting on the round counter lose nothing.)
   */
  private fenceAnswers(pr: Progress): void {
    this.seq++;
    pr.answersFromSeq = this.seq;
  }

  private noteAck(pr: Progress, m: MsgAppResp | MsgHeartbeatResp | MsgSnapResp): void {
    pr.recentActive = true;
    if (m.tick >= 0 && m.tick <= this.tickCount && m.tick > pr.ackTick) pr.ackTick = m.tick;
    if (m.seq > pr.ackSeq && m.seq <= this.seq) {
      pr.ackSeq = m.seq;
      this.releaseReads();
    }
  }

  private handleAppendResponse(pr: Progress, m: MsgAppResp): void {
    if (m.reject) {
      let nextProbe = m.rejectHint;
      if (m.logTerm > 0) nextProbe = this.log.findConflictByTerm(m.rejectHint, m.logTerm);
      if (pr.maybeDecrTo(m.index, nextProbe)) {
        if (pr.state === 'replicate') pr.becomeProbe();
        this.sendAppend(pr, true);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    const updated = pr.maybeUpdate(m.index);
    if (pr.state === 'replicate') pr.inflights.freeLE(m.index);
    if (updated) {
      if (pr.state === 'probe') pr.becomeReplicate();
      else if (pr.state === 'snapshot' && (pr.match >= pr.pendingSnapshot || pr.match + 1 >= this.log.firstIndex())) {
        pr.becomeProbe();
        pr.becomeReplicate();
      }
      if (this.maybeCommit()) this.commitPending = true;
      if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) this.sendTimeoutNow(m.from);
    }
    if (updated || wasPaused) this.sendAppend(pr, false);
  }

  private handleHeartbeatResponse(pr: Progress, _m: MsgHeartbeatResp): void {
    pr.probeSent = false;
    // A full pipeline that a live follower does not drain lost a message: make room, so the
    // next MsgApp exposes the gap and the follower's rejection resets replication.
    if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
    if (pr.state === 'snapshot') {
      if (pr.snapChunksAcked >= this.snapshotChunkCount(pr.snapTotalBytes)) {
        // Every chunk arrived but the final answer did not: probe where the snapshot ends.
        pr.becomeProbe();
      } else {
        // Resend what was not acknowledged (chunks may have been lost).
        pr.snapChunksSent = pr.snapChunksAcked;
        this.sendSnapshotChunks(pr);
        return;
      }
    }
    if (pr.match < this.log.lastIndex()) this.sendAppend(pr, true);
  }

  private handleSnapshotResponse(pr: Progress, m: MsgSnapResp): void {
    if (pr.state !== 'snapshot' || m.index !== pr.pendingSnapshot) return;
    const chunks = this.snapshotChunkCount(pr.snapTotalBytes);
    const got = m.offset >= pr.snapTotalBytes ? chunks : Math.floor(m.offset / this.cfg.maxSnapshotChunkBytes);
    if (m.reject) {
      pr.snapChunksAcked = got;
      pr.snapChunksSent = got;
    } else {
      pr.snapChunksAcked = Math.max(pr.snapChunksAcked, got);
      if (pr.snapChunksSent < pr.snapChunksAcked) pr.snapChunksSent = pr.snapChunksAcked;
    }
    this.sendSnapshotChunks(pr);
  }

  // ------------------------------------------------------------------ leader: replication

  private requireLeader(): void {
    if (this.role !== 'leader') throw new NotLeader(`node ${this.id} is not the leader`, this.lead === NONE ? undefined : String(this.lead));
  }

  private appendProposal(type: EntryType, data: Uint8Array, internal = false): ProposalRef {
    this.requireLeader();
    const size = entrySizeBytes({ term: 0, index: 0, type, data });
    if (!internal) {
      if (this.leadTransferee !== NONE) throw new Unavailable('leadership transfer in progress');
      const limit = this.cfg.maxUncommittedEntriesBytes;
      if (limit > 0 && this.uncommittedBytes > 0 && this.uncommittedBytes + size > limit) throw new Unavailable('too many uncommitted bytes');
    }
    const index = this.log.lastIndex() + 1;
    const entry: Entry = { term: this.term, index, type, data };
    this.log.append([entry]);
    if (type === EntryType.ConfChange) this.recordEntries([entry], index);
    this.uncommittedBytes += size;
    this.appendsPending = true;
    return { index, term: this.term };
  }

  /** Advances commit to what a quorum holds durably, if that entry is of the current term. */
  private maybeCommit(): boolean {
    const mci = this.quorumValue((pr) => pr.match);
    if (!Number.isFinite(mci) || mci <= this.log.committed) return false;
    const t = this.log.term(mci);
    if (t !== this.term && !this.cfg.unsafe?.commitPreviousTermByCounting) return false;
    const hadOwn = this.committedOwnTerm();
    const ci = this.latestConfIndex();
    if (ci > this.log.committed && ci <= mci) this.confCheckPending = true;
    this.log.commitTo(mci);
    if (!hadOwn && this.committedOwnTerm()) {
      const waiting = this.readsAwaitingCommit;
      this.readsAwaitingCommit = [];
      for (const ctx of waiting) this.startRead(ctx);
    }
    return true;
  }

  private committedOwnTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private startRead(ctx: string): void {
    if (this.leaseValid()) {
      this.readCounters.lease++;
      this.readStates.push({ index: this.log.committed, ctx });
      return;
    }
    this.pendingReads.push({ ctx, index: this.log.committed, seq: 0 });
    this.releaseReads();
  }

  /** Releases reads whose round a quorum acknowledged. */
  private releaseReads(): void {
    if (this.pendingReads.length === 0) return;
    const q = this.quorumValue((pr) => (pr.id === this.id ? this.seq + 1 : pr.ackSeq));
    let n = 0;
    while (n < this.pendingReads.length) {
      const r = this.pendingReads[n];
      // A single-voter group confirms at once (its own ack counts as the next round).
      const confirmed = r.seq === 0 ? this.isSingleVoter() : q >= r.seq;
      if (!confirmed) break;
      this.readStates.push({ index: r.index, ctx: r.ctx });
      this.readCounters.readIndex++;
      n++;
    }
    if (n > 0) this.pendingReads.splice(0, n);
  }

  private isSingleVoter(): boolean {
    const voters = new Set([...this.confState.voters, ...this.confState.votersOutgoing]);
    return voters.size === 1 && voters.has(this.id);
  }

  /** Sends what accumulated since the last Ready: batched appends, commit news, read rounds. */
  private flush(): void {
    if (this.role !== 'leader') return;
    if (this.confCheckPending) {
      this.confMaintenance();
      if (this.role !== 'leader') return;
    }
    if (this.appendsPending || this.commitPending) {
      const sendIfEmpty = this.commitPending && this.cfg.eagerCommitNews;
      this.appendsPending = false;
      this.commitPending = false;
      for (const pr of this.sortedPeers()) this.sendAppend(pr, sendIfEmpty);
    }
    if (this.pendingReads.some((r) => r.seq === 0)) {
      this.seq++;
      for (const r of this.pendingReads) if (r.seq === 0) r.seq = this.seq;
      this.bcastHeartbeat();
      this.releaseReads();
    }
  }

  /** The other members' progress in id order; cached until the set of members changes. */
  private sortedPeers(): readonly Progress[] {
    if (this.peersSorted === null) {
      const out: Progress[] = [];
      for (const [id, pr] of this.prs) if (id !== this.id) out.push(pr);
      this.peersSorted = out.sort((a, b) => a.id - b.id);
    }
    return this.peersSorted;
  }

  /** Sends MsgApp to pr while the pipeline has room. Returns whether anything was sent. */
  private sendAppend(pr: Progress, sendIfEmpty: boolean): boolean {
    let sent = false;
    for (;;) {
      if (pr.isPaused()) return sent;
      // A member whose log ends before the configuration that made it a member again (a
      // replica retired and added back, its log a new instance, or a reused id) must not replay
      // the entries before it: their configurations name an earlier life of its id, in which it
      // may count itself a voter, and with another stale member form a majority of a
      // configuration long replaced, whose quorum its dropped log was part of. It gets a snapshot
      // taken at or after that configuration, or nothing until the host has taken one.
      // (The re-add is a configuration entry: a member whose next is past the latest one has
      // nothing to check, the usual case, and no history is scanned.)
      const since = this.cfg.unsafe?.replayReAddedMember || pr.next > this.latestConfIndex() ? 0 : this.memberAgainSince(pr.id);
      if (pr.next <= since) {
        if (this.log.storage.snapshot().metadata.index >= since) {
          this.startSnapshot(pr);
          return true;
        }
        this.snapshotWanted = Math.max(this.snapshotWanted, since);
        return sent;
      }
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      const last = this.log.lastIndex();
      let budget = this.cfg.maxSizePerMsg;
      if (this.cfg.maxInflightBytes > 0) budget = Math.max(1, Math.min(budget, this.cfg.maxInflightBytes - pr.inflights.bytes));
      const ents = prevTerm === undefined ? undefined : this.log.slice(pr.next, last + 1, budget, this.cfg.maxEntriesPerMsg);
      if (prevTerm === undefined || ents === undefined) {
        this.startSnapshot(pr);
        return true;
      }
      if (ents.length === 0 && !sendIfEmpty) return sent;
      assert(ents.length <= this.cfg.maxEntriesPerMsg, 'MsgApp over maxEntriesPerMsg');
      this.send({
        type: 'app', from: this.id, to: pr.id, term: this.term, index: prevIndex, logTerm: prevTerm,
        entries: ents, commit: this.log.committed, seq: this.seq, tick: this.tickCount,
      });
      sent = true;
      sendIfEmpty = false;
      if (ents.length > 0 && pr.state === 'replicate') {
        const lastSent = ents[ents.length - 1].index;
        let bytes = 0;
        for (const e of ents) bytes += entrySizeBytes(e);
        pr.next = lastSent + 1;
        pr.inflights.add(lastSent, bytes);
      } else if (pr.state === 'probe') {
        pr.probeSent = true;
      }
      if (pr.state !== 'replicate' || pr.next > last) return sent;
    }
  }

  private snapshotChunkCount(totalBytes: number): number {
    return Math.max(1, Math.ceil(totalBytes / this.cfg.maxSnapshotChunkBytes));
  }

  private startSnapshot(pr: Progress): void {
    const snap = this.log.storage.snapshot();
    assert(snap.metadata.index >= pr.next - 1 || snap.metadata.index >= this.log.firstIndex() - 1, 'snapshot does not cover the compacted log');
    pr.becomeSnapshot(snap.metadata.index, snap.data.byteLength);
    this.sendSnapshotChunks(pr);
  }

  /** Sends chunks of the pending snapshot while fewer than maxInflightSnapshotChunks are unacknowledged. */
  private sendSnapshotChunks(pr: Progress): void {
    const snap = this.log.storage.snapshot();
    if (snap.metadata.index !== pr.pendingSnapshot) {
      // A newer snapshot replaced the one being sent: start over with it.
      pr.becomeSnapshot(snap.metadata.index, snap.data.byteLength);
    }
    const chunkBytes = this.cfg.maxSnapshotChunkBytes;
    const total = snap.data.byteLength;
    const chunks = this.snapshotChunkCount(total);
    while (pr.snapChunksSent < chunks && pr.snapChunksSent - pr.snapChunksAcked < this.cfg.maxInflightSnapshotChunks) {
      const offset = pr.snapChunksSent * chunkBytes;
      const end = Math.min(total, offset + chunkBytes);
      const m: MsgSnap = {
        type: 'snap', from: this.id, to: pr.id, term: this.term, metadata: snap.metadata, offset,
        totalBytes: total, chunk: snap.data.subarray(offset, end), seq: this.seq, tick: this.tickCount,
      };
      if (pr.logInstance !== 0) m.logInstance = pr.logInstance;
      this.send(m);
      pr.snapChunksSent++;
    }
  }

  private bcastHeartbeat(): void {
    for (const pr of this.sortedPeers()) {
      this.send({
        type: 'heartbeat', from: this.id, to: pr.id, term: this.term,
        commit: Math.min(pr.match, this.log.committed), seq: this.seq, tick: this.tickCount,
      });
    }
  }

  private sendTimeoutNow(to: NodeId): void {
    this.leaseRevoked = true;
    this.send({ type: 'timeoutNow', from: this.id, to, term: this.term });
  }

  private send(m: Message): void {
    assert(m.to !== this.id, 'message to self');
    if ((m.type === 'appResp' || m.type === 'snapResp') && this.cfg.logInstance !== 0) m.logInstance = this.cfg.logInstance;
    assert(m.term <= this.term || m.type === 'preVote' || m.type === 'preVoteResp', `message of future term ${m.term} at term ${this.term}`);
    if (this.msgs.length >= maxQueuedMessages) {
      this.droppedMessages++;
      return;
    }
    this.msgs.push(m);
  }

}

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function validateConfig(c: Config): void {
  assert(Number.isInteger(c.id) && c.id > 0, 'config.id must be a positive integer');
  assert(c.heartbeatTicks > 0 && c.electionTicks > c.heartbeatTicks, 'need 0 < heartbeatTicks < electionTicks');
  assert(c.maxInflightMsgs > 0 && c.maxInflightMsgs <= 1 << 16, 'maxInflightMsgs out of range');
  assert(c.maxInflightBytes >= 0, 'maxInflightBytes must be >= 0');
  assert(c.maxSizePerMsg > 0, 'maxSizePerMsg must be positive');
  assert(c.maxEntriesPerMsg > 0, 'maxEntriesPerMsg must be positive');
  assert(c.maxUncommittedEntriesBytes >= 0, 'maxUncommittedEntriesBytes must be >= 0');
  assert(c.maxCommittedSizePerReady > 0, 'maxCommittedSizePerReady must be positive');
  assert(c.maxSnapshotChunkBytes > 0, 'maxSnapshotChunkBytes must be positive');
  assert(c.maxInflightSnapshotChunks > 0, 'maxInflightSnapshotChunks must be positive');
  assert(Number.isInteger(c.maxOutstandingReadies) && c.maxOutstandingReadies > 0, 'maxOutstandingReadies must be a positive integer');
  assert(c.maxClockDriftTicks >= 0, 'maxClockDriftTicks must be >= 0');
  if (c.leaseTicks > 0) {
    assert(c.checkQuorum, 'a leader lease requires checkQuorum (followers must refuse early votes)');
    assert(c.leaseTicks <= c.electionTicks - c.maxClockDriftTicks - 1, 'leaseTicks must be < electionTicks - maxClockDriftTicks');
  }
}
