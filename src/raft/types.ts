/**
 * The vocabulary of the consensus core: log entries, persistent state, membership, messages,
 * and the `Ready` batch that the host performs. Everything here is plain data so a host can
 * encode it (msgpackr) for its WAL and its transport without knowing the core.
 *
 * Node ids are positive integers; `NONE` (0) means "no node".
 */

import { RaftblockError } from '../common/errors.js';

export type NodeId = number;
export const NONE: NodeId = 0;

/** What an entry carries. `Normal` with empty data is the leader's no-op of a new term. */
export const EntryType = { Normal: 0, ConfChange: 1 } as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque to the core for `Normal`; an encoded `ConfChange` (see confchange.ts) otherwise. */
  data: Uint8Array;
}

/** What must be durable before any message that depends on it leaves the node. */
export interface HardState {
  term: number;
  /** The node voted for in `term`, or NONE. */
  vote: NodeId;
  /** Highest index known committed. Persisting it is an optimisation, not a safety need. */
  commit: number;
}

/**
 * The membership. Outside a joint configuration `votersOutgoing` is empty. During a joint
 * configuration a decision needs a majority of `voters` AND a majority of `votersOutgoing`.
 * `learnersNext` are outgoing voters that become learners when the joint configuration is left.
 */
export interface ConfState {
  voters: NodeId[];
  votersOutgoing: NodeId[];
  learners: NodeId[];
  learnersNext: NodeId[];
  /** When true the leader proposes leaving the joint configuration as soon as it is applied. */
  autoLeave: boolean;
}

export type ConfChangeType = 'addVoter' | 'addLearner' | 'removeNode';

export interface ConfChangeSingle {
  type: ConfChangeType;
  nodeId: NodeId;
}

/**
 * A membership change. Every non-empty change enters a joint configuration (joint consensus);
 * an empty `changes` list leaves it. With `autoLeave` (the default) the leader proposes the
 * leave itself once the enter entry is applied.
 */
export interface ConfChange {
  changes: ConfChangeSingle[];
  autoLeave?: boolean;
}

export interface SnapshotMetadata {
  /** Index and term of the last entry the snapshot covers. */
  index: number;
  term: number;
  /** Membership as of `index`. */
  confState: ConfState;
}

export interface Snapshot {
  metadata: SnapshotMetadata;
  /** The host's state machine image, opaque to the core. */
  data: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Messages. Every message carries from, to and the sender's term. Messages a leader sends to a
// follower carry `seq` and `tick`, which the follower echoes: `seq` confirms ReadIndex rounds,
// `tick` (the leader's clock when it sent) dates the acknowledgement for the leader lease.

interface MsgBase {
  from: NodeId;
  to: NodeId;
  term: number;
}

interface LeaderEcho {
  /** Leader-local round counter, echoed back in the response. */
  seq: number;
  /** Leader's tick counter when the message was sent, echoed back in the response. */
  tick: number;
}

/** Append entries after (index, logTerm); entries may be empty (a probe). */
export interface MsgApp extends MsgBase, LeaderEcho {
  type: 'app';
  index: number;
  logTerm: number;
  entries: Entry[];
  commit: number;
}

export interface MsgAppResp extends MsgBase, LeaderEcho {
  type: 'appResp';
  reject: boolean;
  /** Accepted: the highest index now known to match. Rejected: the `index` of the MsgApp. */
  index: number;
  /** Rejected: the follower's best guess of where the logs may match (fast backtracking). */
  rejectHint: number;
  /** Rejected: the follower's term at `rejectHint` (conflict-term hint), 0 if unknown. */
  logTerm: number;
  /** The answering instance of the follower's log (Config.logInstance); absent: none. */
  logInstance?: number;
}

export interface MsgVote extends MsgBase {
  type: 'vote' | 'preVote';
  /** The candidate's last log entry. */
  index: number;
  logTerm: number;
  /** Campaign started by a leadership transfer: voters ignore their leader lease. */
  transfer: boolean;
}

export interface MsgVoteResp extends MsgBase {
  type: 'voteResp' | 'preVoteResp';
  reject: boolean;
}

export interface MsgHeartbeat extends MsgBase, LeaderEcho {
  type: 'heartbeat';
  /** min(leader commit, follower match): never beyond what the follower is known to hold. */
  commit: number;
}

export interface MsgHeartbeatResp extends MsgBase, LeaderEcho {
  type: 'heartbeatResp';
}

/** One chunk of an InstallSnapshot transfer. Chunks of one snapshot are sent in order. */
export interface MsgSnap extends MsgBase, LeaderEcho {
  type: 'snap';
  metadata: SnapshotMetadata;
  /** Byte offset of `chunk` in the snapshot data. */
  offset: number;
  totalBytes: number;
  chunk: Uint8Array;
  /**
   * The instance of the follower's log (Config.logInstance) the snapshot is meant for: the one
   * the leader last heard from. A follower of another instance refuses it. Absent: none heard.
   */
  logInstance?: number;
}

export interface MsgSnapResp extends MsgBase, LeaderEcho {
  type: 'snapResp';
  /** The snapshot's index. */
  index: number;
  /** Bytes received contiguously so far (the next offset wanted); on reject, restart here. */
  offset: number;
  reject: boolean;
  /** The answering instance of the follower's log (Config.logInstance); absent: none. */
  logInstance?: number;
}

/** Leadership transfer: the target campaigns at once, ignoring its election timer. */
export interface MsgTimeoutNow extends MsgBase {
  type: 'timeoutNow';
}

export type Message =
  | MsgApp
  | MsgAppResp
  | MsgVote
  | MsgVoteResp
  | MsgHeartbeat
  | MsgHeartbeatResp
  | MsgSnap
  | MsgSnapResp
  | MsgTimeoutNow;

export type MessageType = Message['type'];

// ---------------------------------------------------------------------------------------------

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

/** Volatile state the host may want to observe (leader changes). */
export interface SoftState {
  lead: NodeId;
  role: Role;
}

/**
 * A linearizable read may be served once the host's applied index reaches `index`.
 * `ctx` is the caller's opaque request id given to `readIndex`.
 */
export interface ReadState {
  index: number;
  ctx: string;
}

/**
 * One batch of work for the host, in order of obligation:
 *  1. persist `snapshot` (if any), then `entries` (append; an entry at an index the storage
 *     already holds replaces it and everything after it), then `hardState` (if any);
 *  2. only then send `messages` (they may promise what step 1 wrote);
 *  3. apply `committedEntries` in order (all of them are durable locally), and serve the reads
 *     of `readStates` once applied reaches their index;
 *  4. call `advance(ready)`. This may happen later (asynchronous persistence): until then the
 *     core hands out no new Ready, keeps accepting ticks, messages and proposals, and (as a
 *     leader) does not count its own copy of `entries` toward a quorum.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  messages: Message[];
  committedEntries: Entry[];
  readStates: ReadState[];
  /** True when hardState/entries/snapshot must reach stable storage (fsync) before messages. */
  mustSync: boolean;
}

/** A deterministic random source handed to the core (no Math.random inside). */
export interface Rng {
  /** A uniformly distributed integer in [0, bound). */
  nextInt(bound: number): number;
}

/** Deliberately broken behaviours, only for proving that the simulator catches them. */
export interface UnsafeFlags {
  /** The leader answers ReadIndex at once, with neither a lease nor a quorum round. */
  readWithoutLeaseOrReadIndex?: boolean;
  /** The leader commits entries of earlier terms by counting replicas (Raft Figure 8). */
  commitPreviousTermByCounting?: boolean;
  /**
   * The leader sends a member added back after a removal the entries from before its re-add
   * (configurations naming an earlier life of its id), where it must send a snapshot past it.
   */
  replayReAddedMember?: boolean;
}

export interface Config {
  id: NodeId;
  /** Election timeout in ticks; the actual timeout is randomized in [electionTicks, 2*electionTicks). */
  electionTicks: number;
  /** The leader sends heartbeats every heartbeatTicks; must be < electionTicks. */
  heartbeatTicks: number;
  /** Replication pipeline depth per follower (MsgApp in flight). */
  maxInflightMsgs: number;
  /** Bytes of entry data in flight per follower; 0 = unlimited. */
  maxInflightBytes: number;
  /** Bytes of entry data per MsgApp (at least one entry is always sent). */
  maxSizePerMsg: number;
  /** Entries per MsgApp. */
  maxEntriesPerMsg: number;
  /** Bytes of proposed but not yet committed entry data the leader accepts; 0 = unlimited. */
  maxUncommittedEntriesBytes: number;
  /** Bytes of committed entries per Ready; at least one entry is always handed out. */
  maxCommittedSizePerReady: number;
  /** Bytes of snapshot data per MsgSnap chunk. */
  maxSnapshotChunkBytes: number;
  /** Snapshot chunks in flight per follower. */
  maxInflightSnapshotChunks: number;
  /**
   * Readies the host may hold at once (taken, not yet advanced): above 1, a group's next
   * entries go to the host's log while the previous write is still in flight.
   */
  maxOutstandingReadies: number;
  /**
   * When the commit index advances, tell the followers at once (an empty MsgApp when no entry
   * is due). False leaves it to the next MsgApp or heartbeat (at most heartbeatTicks later):
   * each commit then costs no extra message and no extra acknowledgement per follower, and
   * followers apply a little later (reads are served by leaders, which know the commit).
   */
  eagerCommitNews: boolean;
  preVote: boolean;
  checkQuorum: boolean;
  /**
   * Leader lease in ticks for local linearizable reads; 0 disables the lease (every read then
   * takes a ReadIndex round). Requires checkQuorum and
   * leaseTicks <= electionTicks - maxClockDriftTicks - 1.
   */
  leaseTicks: number;
  /** Bound on how many ticks any two nodes' clocks may disagree by over one election timeout. */
  maxClockDriftTicks: number;
  /** Index the host has already applied (on restart); 0 for a fresh node. */
  applied: number;
  /**
   * Names this instance of the member's log, told to the leader in every append and snapshot
   * answer; 0: none. A member whose log was lost comes back under its id (a PG replica retired
   * and wanted again, rebuilt from its leader): what its previous instance acknowledged must
   * not count for the new one, and a leader that sees the instance change forgets it (as etcd
   * would only by never reusing a member id). Any value that differs from the previous
   * instance's will do; a restart with the log intact may keep it or not (a new one costs
   * the leader one probe).
   */
  logInstance: number;
  rng: Rng;
  unsafe?: UnsafeFlags;
}

/** Sensible defaults; a host overrides what it needs. */
export function defaultConfig(id: NodeId, rng: Rng): Config {
  return {
    id,
    electionTicks: 10,
    heartbeatTicks: 1,
    maxInflightMsgs: 64,
    maxInflightBytes: 8 << 20,
    maxSizePerMsg: 1 << 20,
    maxEntriesPerMsg: 1024,
    maxUncommittedEntriesBytes: 64 << 20,
    maxCommittedSizePerReady: 16 << 20,
    maxSnapshotChunkBytes: 1 << 20,
    maxInflightSnapshotChunks: 4,
    maxOutstandingReadies: 1,
    eagerCommitNews: true,
    preVote: true,
    checkQuorum: true,
    leaseTicks: 7,
    maxClockDriftTicks: 2,
    applied: 0,
    logInstance: 0,
    rng,
  };
}

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  /**
   * Heard from within the last election timeout: since the last check-quorum round, or in
   * answer to a message sent within the last electionTicks.
   */
  recentActive: boolean;
  isLearner: boolean;
}

export interface Status {
  id: NodeId;
  hardState: HardState;
  softState: SoftState;
  applied: number;
  lastIndex: number;
  confState: ConfState;
  /** Leader only: replication state of every member. */
  progress: Map<NodeId, ProgressStatus> | undefined;
  leadTransferee: NodeId;
  leaseValid: boolean;
}

// ---------------------------------------------------------------------------------------------
// Storage: what the host has made durable, read back by the core. The host writes to it while
// handling a Ready (and when it takes snapshots / compacts); the core only reads.

/** The requested index is below the storage's first index (compacted into a snapshot). */
export class LogCompacted extends RaftblockError {
  constructor(index: number) {
    super('LOG_COMPACTED', `raft log index ${index} is compacted`);
  }
}

/** The requested index is beyond the storage's last index. */
export class LogUnavailable extends RaftblockError {
  constructor(index: number) {
    super('LOG_UNAVAILABLE', `raft log index ${index} is unavailable`);
  }
}

export interface Storage {
  /**
   * The persisted hard state, and the membership as of the storage's snapshot (index
   * firstIndex() - 1), read once when the node starts. The core replays the ConfChange entries
   * held after the snapshot itself. A new group is bootstrapped by a snapshot at index 1, term 1
   * holding the initial voters (see MemoryStorage); a node that joins later starts empty.
   */
  initialState(): { hardState: HardState; confState: ConfState };
  /**
   * Entries [lo, hi), at most maxBytes of data but always at least one entry if any.
   * Throws LogCompacted if lo < firstIndex(), LogUnavailable if hi > lastIndex() + 1.
   */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of the entry at index, for firstIndex()-1 <= index <= lastIndex(). Throws otherwise. */
  term(index: number): number;
  /** Index of the first entry still held (snapshot index + 1). */
  firstIndex(): number;
  /** Index of the last entry held (snapshot index if none). */
  lastIndex(): number;
  /** The latest snapshot. */
  snapshot(): Snapshot;
}

/** Size of an entry for flow control: its data plus a fixed header estimate. */
export function entrySizeBytes(e: Entry): number {
  return e.data.byteLength + 24;
}
