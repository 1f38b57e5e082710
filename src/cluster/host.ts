/**
 * The Multi-Raft host: drives one RaftNode per group on this node (group 0 = metadata, the
 * others PG replicas) from one tick timer, and performs their Ready batches:
 *
 *  1. entries and hard state of EVERY group with work go into the node's one WAL in the same
 *     synchronous run, so one device flush makes them all durable (group commit);
 *  2. then the messages leave (one frame per destination, see transport.ts);
 *  3. committed entries are applied to each group's state machine in order, in a per-group
 *     chain that runs while the next round persists; a proposer is answered once its entry is
 *     committed AND applied here;
 *  4. advance.
 *
 * Raft's Storage is a MemoryStorage per group holding what the WAL holds since the last
 * checkpoint (the WAL is the durable copy; the cache is rebuilt from it at start).
 */
import { randomInt } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Counter, Gauge, type Registry } from 'prom-client';
import { FlatHistogram } from '../metrics/flat-histogram.js';
import { assert } from '../common/assert.js';
import { jitteredMs } from '../common/backoff.js';
import { NotLeader, RaftblockError, TimedOut, Unavailable } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import {
  MemoryStorage,
  RaftNode,
  cloneConfState,
  SeededRng,
  decodeConfChange,
  type Config,
  defaultConfig,
  emptyConfState,
  type ConfChange,
  type ConfState,
  type Entry,
  type Message,
  type Ready,
  type Role,
  type Snapshot,
  leavesBeforePersist,
} from '../raft/index.js';
import type { Wal, WalStats } from '../wal/index.js';
import type { Transport } from './transport.js';

/** What a Raft group replicates into. */
export interface GroupStateMachine {
  /** Index of the last entry applied. */
  readonly appliedIndex: number;
  /** Index of the last entry applied that survives a crash without the WAL. */
  readonly durableIndex: number;
  readonly appliedTerm: number;
  /** Marks an empty state machine as having applied up to `index` (a bootstrap snapshot of the log). */
  skip(index: number, term: number): void;
  /** Applies one committed entry; the result is handed to the proposer. */
  apply(index: number, term: number, data: Uint8Array): Promise<unknown>;
  /**
   * Makes everything applied durable; returns the index the WAL may drop up to. A failed write
   * or sync must be thrown (IO_ERROR): the host stops the node rather than try again.
   */
  checkpoint(): Promise<number>;
  /** An image for InstallSnapshot (see PgStore.snapshotImage for why it may be newer). */
  snapshotImage(): Promise<Uint8Array>;
  /** Replaces the state with an image at (index, term), durably. */
  restoreImage(image: Uint8Array, index: number, term: number): Promise<void>;
  /**
   * Small state machines (group 0) put their exact image into Raft snapshots: an empty
   * snapshot then means the empty state, and nothing is pulled from a peer.
   */
  readonly inlineSnapshots?: boolean;
  /** The image exactly at `index`, when the state machine still has it (inline snapshots). */
  exactImage?(index: number): Uint8Array | undefined;
  /**
   * Applying a committed entry can only succeed (or fail fatally: the node stops and replays
   * it from the WAL) and yields nothing for the proposer, so a proposer may be answered once
   * its entry is committed, before it is applied. Reads stay linearizable: a read barrier
   * waits for the applied index to reach the read index, which covers every answered write.
   */
  readonly ackOnCommit?: boolean;
  /**
   * The group's membership as of `durableIndex`, when the state machine keeps it (PGs, whose
   * configuration changes when they move; see pg-membership.ts). Without it a group resumes
   * with the voters it is started with.
   */
  readonly durableConfState?: ConfState;
  /**
   * Persists the membership as of `index` (a checkpoint's or an installed snapshot's). The
   * host calls it before the WAL may drop the entries up to `index`.
   */
  saveConfState?(index: number, cs: ConfState): Promise<void>;
  /**
   * A snapshot at `index` with membership `cs` is about to replace the state: the machine
   * keeps `cs` aside, so that a crash after its state reached `index` but before the snapshot
   * was recorded anywhere else still finds the membership that goes with it.
   */
  prepareSnapshot?(index: number, cs: ConfState): Promise<void>;
  /** Membership kept by the state machine itself (it persists it with its image). */
  readonly voters?: number[];
  /** A committed membership change, in log order. */
  applyConfChange?(cc: ConfChange): void;
  close(): Promise<void>;
}

export interface HostOptions {
  nodeId: number;
  wal: Wal;
  transport: Transport;
  registry?: Registry;
  /** Milliseconds per Raft tick. */
  tickMs?: number;
  electionTicks?: number;
  /** Readies per group handled at once (see Config.maxOutstandingReadies); default 4. */
  maxOutstandingReadies?: number;
  /** Entries kept in memory behind the checkpoint for slow followers. */
  keepEntriesAfterCheckpoint?: number;
  /** Bytes of entry data kept in memory behind the checkpoint (per group). */
  keepBytesAfterCheckpoint?: number;
  /** How often the host looks for groups that need a checkpoint (see checkpointDue). */
  checkpointIntervalMs?: number;
  /** A group is checkpointed once this many bytes of entries were appended since its last one. */
  checkpointPendingBytes?: number;
  /** ... or this many entries were applied since its last one. */
  checkpointPendingEntries?: number;
  /** ... or its last checkpoint is older than this while it has applied something since. */
  checkpointMaxAgeMs?: number;
  /** Bytes appended since their checkpoint, summed over all groups, kept at most (roughly). */
  checkpointNodePendingBytes?: number;
  /** WAL segments live at most before every group with applied entries is checkpointed. */
  checkpointMaxWalSegments?: number;
  /**
   * Pulls a snapshot image of `group` from node `from` (a follower installing a snapshot at
   * `atLeast`, which the source refuses, UNAVAILABLE, until it has applied up to it).
   */
  fetchSnapshot(from: number, group: number, atLeast?: number): Promise<Uint8Array>;
  /**
   * Streams the state of `group` from node `from` straight into its state machine, ending at
   * (index, term) durably. When given, it replaces fetchSnapshot + restoreImage (large PGs).
   */
  pullSnapshot?(from: number, group: number, index: number, term: number): Promise<void>;
  /** A message arrived for a group this node does not run yet. Returns true if it now does. */
  onUnknownGroup?(group: number, msg: Message): boolean;
  /**
   * Asks node `from` (the group's leader) for a snapshot point at `atLeast` or later, and at
   * least at its commit index, to rebuild a replica whose WAL needs repair (see repair()).
   * When not given, such a replica only stays out of elections.
   */
  repairPoint?(from: number, group: number, atLeast: number): Promise<RepairPoint>;
  /**
   * What the node does once the host has logged an error it cannot go on from (see
   * MultiRaftHost.fail). Default: exit with code 70, so that the restart replays the WAL from
   * the last checkpoint. Tests watch it instead.
   */
  onFatal?(err: unknown): void;
}

/** Where a leader's Raft snapshot of a group stands (a repairing replica rebuilds from it). */
export interface RepairPoint {
  index: number;
  term: number;
  confState: ConfState;
  /** The leader's current term. */
  leaderTerm: number;
}

/**
 * Whether an error from a state machine's apply or checkpoint stops the node: a failed write or
 * sync (IO_ERROR; or an error of Node's own fs calls, such as the checkpoint file's, which carry
 * no code of ours), damaged state (CORRUPTION), a broken invariant. None of them may be retried:
 * Linux reports a failed writeback once and marks the pages clean, so a checkpoint retried after
 * a failed fdatasync succeeds and lets the WAL drop entries whose data never reached the disk.
 * Any other RaftblockError concerns the one call (a command the state machine refused, a store
 * closed under it).
 */
export function stopsTheNode(err: unknown): boolean {
  return !(err instanceof RaftblockError) || err.code === 'IO_ERROR' || err.code === 'CORRUPTION' || err.code === 'ASSERTION_FAILED';
}

/** Pause between attempts to repair one replica. */
const repairRetryMs = 1000;

export const defaultTickMs = 100;
export const defaultKeepBytesAfterCheckpoint = 4 * 1024 * 1024;
export const defaultElectionTicks = 10;
/** Raft log instances (Config.logInstance) are drawn from [1, this): a safe integer on the wire, and two draws for one replica all but never meet. */
const maxLogInstance = 2 ** 47;
/*
 * A group's next Ready is taken while the WAL is still writing the previous one, so its new
 * entries reach the WAL (and, on a leader, its followers) without waiting a whole device
 * write: without this a request that arrives during a write waits for it to end, then for its
 * own write, on the leader and again on each follower. Four matches the WAL's batches in
 * flight.
 */
export const defaultMaxOutstandingReadies = 4;
/*
 * Checkpoints cost device flushes per group (its data files, then its checkpoint file), so
 * a group is checkpointed when it needs it rather than on every timer round. Every trigger
 * bounds something: pending bytes and entries bound the Raft log held in memory per group
 * (MemoryStorage keeps everything after the last checkpoint), the node-wide byte cap bounds
 * the sum of those, and the age and WAL segment caps bound the WAL's disk space (a segment is
 * recycled only once every group's checkpoint has passed it, so one quiet group must not pin
 * it for ever).
 */
export const defaultCheckpointScanMs = 1000;
export const defaultCheckpointPendingBytes = 4 * 1024 * 1024;
export const defaultCheckpointPendingEntries = 2048;
export const defaultCheckpointMaxAgeMs = 10_000;
export const defaultCheckpointNodePendingBytes = 64 * 1024 * 1024;
export const defaultCheckpointMaxWalSegments = 4;
/** Committed entries a group may answer before applying them (see ackCommitted). */
export const maxAckAheadOfApply = 64;

interface Waiter {
  term: number;
  /** performance.now() when proposed. */
  startedMs: number;
  /** performance.now() past which the proposer is answered TimedOut (Infinity: never). */
  deadlineMs: number;
  /** What was proposed, for the timeout's message. */
  what: string;
  resolve(result: unknown): void;
  reject(err: Error): void;
}

/**
 * An AbortController whose signal takes any number of listeners: every request forwarded to
 * a group's leader listens to it (32 in flight is normal), and Node warns of a leak past 10.
 */
function unlimitedAbortController(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}

export class Group {
  readonly id: number;
  /** Replaced once, when a replica whose WAL needed repair is rebuilt (see MultiRaftHost.repair). */
  raft: RaftNode;
  readonly storage: MemoryStorage;
  readonly sm: GroupStateMachine;
  confState: ConfState;
  role: Role = 'follower';
  /** The leader this replica knows of (0: none); set through noteLead. */
  lead = 0;
  term = 0;
  /**
   * The highest term whose hard state is durable here (the WAL's, or one a Ready wrote and
   * whose write completed): a leader's messages leave before its Ready is durable only once
   * its term is (raft/early-send.ts).
   */
  durableTerm: number;
  /**
   * Aborted whenever this replica learns of another leader or loses the one it knew, then
   * replaced: a gateway waiting for the leader it forwarded to stops waiting and asks again
   * (a partitioned leader never answers; its request would otherwise wait out its timeout).
   */
  private leadChange = unlimitedAbortController();
  commit = 0;
  /** Proposals by index, answered after apply. */
  readonly waiters = new Map<number, Waiter>();
  /** ReadIndex requests by ctx. */
  readonly reads = new Map<string, { resolve(): void; reject(err: Error): void; timer: NodeJS.Timeout }>();
  /** Reads waiting for applied >= index. */
  readonly readsAwaitingApply: { index: number; resolve(): void }[] = [];
  applyChain: Promise<void> = Promise.resolve();
  /** The highest index handed to the apply chain. */
  queuedApplyIndex: number;
  removed = false;
  /** Removed without draining its Readies: what they would still send is dropped (retirement). */
  silenced = false;
  snapshotInstalling = false;
  /**
   * The WAL found this replica's log damaged: its Raft node is held (not ticked, stepped or
   * asked for a Ready, so it sends nothing, acknowledges nothing and votes in nothing) until
   * the state is rebuilt from the leader's snapshot.
   */
  repairing = false;
  repairRunning = false;
  /** This group's part of a checkpoint pass while it runs (removeGroup waits for it). */
  checkpointRunning: Promise<void> | undefined = undefined;
  repairRetryAtMs = 0;
  /**
   * The host tick at which this replica stopped leading with no leader in sight, while it
   * still knows of none; -1 otherwise (see MultiRaftHost.noteSoftState).
   */
  leaderlessSinceTick = -1;
  /** The host tick at which this replica became the group's leader; -1 while it does not lead. */
  leaderSinceTick = -1;
  /**
   * Settles once every Ready taken so far is handled: the next one waits for it before it
   * sends what its own write promises and advances (Readies advance in the order taken).
   */
  readyTail: Promise<void> = Promise.resolve();
  /** Proposals up to this index were answered from the quorum's commit (see ackQuorumCommitted). */
  quorumAckedIndex = 0;
  /** In the host's list of groups the next pump asks for a Ready (see MultiRaftHost.touch). */
  touched = false;
  /** Bytes of entry data appended since the last checkpoint began (an estimate: truncated
   * suffixes are still counted, which only makes a checkpoint come sooner). */
  pendingBytes = 0;
  /** When the last checkpoint of this group finished (performance.now()). */
  lastCheckpointMs = performance.now();

  /** Aborts when the leader this replica knows of changes (see leadChange). */
  get leadChanged(): AbortSignal {
    return this.leadChange.signal;
  }

  noteLead(lead: number): void {
    if (lead === this.lead) return;
    this.lead = lead;
    this.leadChange.abort();
    this.leadChange = unlimitedAbortController();
  }

  constructor(id: number, raft: RaftNode, storage: MemoryStorage, sm: GroupStateMachine, confState: ConfState) {
    this.id = id;
    this.raft = raft;
    this.storage = storage;
    this.sm = sm;
    this.confState = confState;
    this.queuedApplyIndex = sm.appliedIndex;
    // The storage holds what the WAL held at start (or a new group's bootstrap state, which a
    // restart rebuilds the same): durable.
    this.durableTerm = storage.hardState.term;
  }

  get isLeader(): boolean {
    return this.role === 'leader';
  }
}

interface HostMetrics {
  role: Gauge;
  term: Gauge;
  commit: Gauge;
  applyLag: Gauge;
  elections: Counter;
  proposals: Counter;
  commitLatency: FlatHistogram;
  walBatchRecords: FlatHistogram;
  walFlushLatency: FlatHistogram;
  readyRounds: Counter;
  snapshotsInstalled: Counter;
  electionMessagesMuted: Counter;
  replicasRepaired: Counter;
}

/**
 * Per-group gauges are read at scrape time from the groups themselves: setting four labelled
 * gauges on every Ready cost a label lookup each on the hot path.
 */
function perGroupGauge(name: string, help: string, registers: Registry[], groups: () => Iterable<Group>, value: (g: Group) => number): Gauge {
  return new Gauge({
    name,
    help,
    labelNames: ['group'],
    registers,
    collect(this: Gauge) {
      this.reset();
      for (const g of groups()) this.set({ group: String(g.id) }, value(g));
    },
  });
}

/**
 * The WAL's own counters (WalStats), read at scrape time: the WAL counts them per device
 * write already, and stays free of the metrics library. Batches against records and bytes
 * give the device write's mean size, the group commit's yield.
 */
function walCounters(registers: Registry[], stats: () => WalStats): void {
  const counter = (name: string, help: string, value: (s: WalStats) => number): void => {
    new Counter({
      name,
      help,
      registers,
      collect(this: Counter) {
        this.reset();
        this.inc(value(stats()));
      },
    });
  };
  counter('raftblock_wal_batches_written_total', 'WAL batches made durable (one device write each)', (s) => s.batchesWritten);
  counter('raftblock_wal_records_written_total', 'WAL records in those batches', (s) => s.recordsWritten);
  counter('raftblock_wal_bytes_written_total', 'Bytes of those batches, padding to the device block included', (s) => s.bytesWritten);
  counter('raftblock_wal_segments_created_total', 'WAL segment files created (zero-filled)', (s) => s.segmentsCreated);
  counter('raftblock_wal_segments_recycled_total', 'WAL segment files reused after truncation', (s) => s.segmentsRecycled);
  counter('raftblock_wal_segments_removed_total', 'Idle WAL segment files removed (beyond the few kept for reuse)', (s) => s.segmentsRemoved);
}

function makeMetrics(registry: Registry | undefined, groups: () => Iterable<Group>, walStats: () => WalStats): HostMetrics {
  const registers = registry ? [registry] : [];
  walCounters(registers, walStats);
  return {
    role: perGroupGauge('raftblock_raft_role', 'Role per group: 0 follower, 1 candidate, 2 leader', registers, groups, (g) => roleCode[g.role] ?? 0),
    term: perGroupGauge('raftblock_raft_term', 'Current term per group', registers, groups, (g) => g.term),
    commit: perGroupGauge('raftblock_raft_commit_index', 'Commit index per group', registers, groups, (g) => g.commit),
    applyLag: perGroupGauge('raftblock_raft_apply_lag_entries', 'Commit index minus applied index per group', registers, groups, (g) => Math.max(0, g.commit - g.sm.appliedIndex)),
    elections: new Counter({ name: 'raftblock_raft_leader_changes_total', help: 'Times a group on this node became leader', registers }),
    proposals: new Counter({ name: 'raftblock_raft_proposals_total', help: 'Entries proposed by leaders on this node', registers }),
    commitLatency: new FlatHistogram({
      name: 'raftblock_raft_propose_to_apply_seconds',
      help: 'Proposal to answer on the leader: committed on a quorum (PGs) or applied (metadata group)',
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
      registers,
    }),
    walBatchRecords: new FlatHistogram({ name: 'raftblock_wal_ready_batch_groups', help: 'Groups whose Ready entered one WAL batch (group commit)', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers }),
    walFlushLatency: new FlatHistogram({
      name: 'raftblock_wal_flush_seconds',
      help: 'Latency of one group-commit round in the WAL',
      buckets: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
      registers,
    }),
    readyRounds: new Counter({ name: 'raftblock_raft_ready_rounds_total', help: 'Ready rounds handled', registers }),
    snapshotsInstalled: new Counter({ name: 'raftblock_raft_snapshots_installed_total', help: 'Snapshots installed by followers on this node', registers }),
    replicasRepaired: new Counter({
      name: 'raftblock_raft_replicas_repaired_total',
      help: 'Replicas rebuilt from their leader\'s snapshot (a damaged WAL, a replaced data dir, a restore cut short)',
      registers,
    }),
    electionMessagesMuted: new Counter({
      name: 'raftblock_raft_election_messages_muted_total',
      help: 'Vote requests and responses withheld by replicas whose WAL needs repair',
      registers,
    }),
  };
}

/** Messages that elect a leader: a replica awaiting repair sends none of them. */
function isElectionMessage(m: Message): boolean {
  return m.type === 'vote' || m.type === 'preVote' || m.type === 'voteResp' || m.type === 'preVoteResp';
}

const roleCode: Record<string, number> = { follower: 0, preCandidate: 1, candidate: 1, leader: 2 };

export class MultiRaftHost {
  readonly nodeId: number;
  private readonly opts: HostOptions;
  private readonly wal: Wal;
  private readonly transport: Transport;
  private readonly log: Logger;
  private readonly metrics: HostMetrics;
  readonly groups = new Map<number, Group>();
  private tickTimer: NodeJS.Timeout | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private pumpScheduled = false;
  /** Groups whose Ready is being handled. */
  private inFlight = 0;
  private stopped = false;
  private nextReadCtx = 1;
  private readonly rngSeed: number;
  private checkpointing = false;
  /** fail() was called: the node is going down, and no checkpoint starts any more. */
  private failed = false;
  /** Groups to ask for a Ready in the next pump, and the list the pump after it fills. */
  private touched: Group[] = [];
  private touchedSpare: Group[] = [];
  /** The next pump asks every group (a tick passed). */
  private scanAll = true;
  readonly tickMs: number;
  private tickOriginMs = 0;
  private ticksDone = 0;

  constructor(opts: HostOptions) {
    this.opts = opts;
    this.nodeId = opts.nodeId;
    this.wal = opts.wal;
    this.transport = opts.transport;
    this.log = createLogger('host', { node: opts.nodeId });
    this.metrics = makeMetrics(opts.registry, () => this.groups.values(), () => this.wal.stats);
    this.tickMs = opts.tickMs ?? defaultTickMs;
    this.rngSeed = (opts.nodeId * 2654435761 + Date.now()) >>> 0;
  }

  start(): void {
    this.tickOriginMs = performance.now();
    this.ticksDone = 0;
    this.tickTimer = setInterval(() => this.tick(), this.tickMs);
    this.checkpointTimer = setInterval(() => void this.checkpointDue(), this.opts.checkpointIntervalMs ?? defaultCheckpointScanMs);
  }

  /**
   * Starts (or resumes) a group. A fresh group starts with `voters`; a group with state in
   * the WAL resumes from it and the state machine's durable index.
   *
   * `rebuild`: a replica this node held before its data dir was lost (map.ts rebuiltAtEpoch),
   * or whose store a crash left with part of a snapshot image (PgStore.holdsPartialImage). It
   * starts held, like a replica whose WAL needs repair, and takes part in nothing until
   * repair() has rebuilt it from its leader: its state cannot be trusted, so it must neither
   * vote nor acknowledge.
   */
  async addGroup(id: number, voters: number[], sm: GroupStateMachine, opts: { campaign?: boolean; rebuild?: boolean; rebuildReason?: string } = {}): Promise<Group> {
    assert(!this.groups.has(id), `group ${id} already running`);
    const storage = new MemoryStorage(voters);
    const confState = sm.durableConfState ? cloneConfState(sm.durableConfState) : emptyConfState();
    if (!sm.durableConfState) confState.voters = [...voters];
    const base = sm.durableIndex;
    assert(sm.appliedIndex === base, 'a state machine starts from its durable state');
    if (base > 0) {
      // This snapshot is what the group hands a follower that needs one before the next
      // checkpoint replaces it. For an inline-snapshot machine (group 0) its data IS the state
      // (an empty one means the empty map), so it must carry the exact image at `base`: with
      // empty data a member joining after a restart installed an empty map at `base`, then
      // applied the later entries on top of it, and held another map than its peers at the
      // same applied index. Other machines' images are pulled from the leader's live state.
      const image = sm.inlineSnapshots ? sm.exactImage?.(base) : new Uint8Array(0);
      assert(image !== undefined, `group ${id} resumes at ${base} without its image at that index`);
      storage.applySnapshot({ metadata: { index: base, term: sm.appliedTerm, confState }, data: image });
    } else {
      // A new group's log may start from a bootstrap snapshot (the initial membership).
      const boot = storage.snapshot().metadata;
      if (boot.index > 0) sm.skip(boot.index, boot.term);
    }
    const known = this.wal.groupIds().includes(id);
    const boot = storage.snapshot().metadata;
    // The WAL's log for a new group starts after the bootstrap snapshot, as Raft's does. A
    // rebuilt replica leaves no trace in the WAL before its leader's snapshot (whatever its
    // store holds from a rebuild cut short): a crash meanwhile must find it unknown, and
    // rebuild it again rather than resume it.
    if (!known && boot.index > 0 && opts.rebuild !== true) await this.wal.installSnapshot(id, { index: boot.index, term: boot.term });
    // A damaged log (records lost in the middle, entries after the loss that may not belong
    // together) is not loaded at all: the replica is rebuilt from its leader (repair()).
    // Rebuilt too: a replica whose store a crash left with part of a snapshot image (the WAL
    // knows it, but its state machine cannot be trusted), and one whose data dir was replaced.
    const repairing = id !== 0 && this.opts.repairPoint !== undefined && (opts.rebuild === true || (known && this.wal.needsRepair(id)));
    assert(!opts.rebuild || repairing, `group ${id} cannot be rebuilt: no repair source`);
    if (known) {
      const hs = this.wal.hardState(id);
      const last = this.wal.lastIndex(id);
      const first = Math.max(this.wal.firstIndex(id), base + 1);
      if (last >= first && !repairing) {
        const ents = await this.wal.entries(id, first, last + 1);
        storage.append(ents.map((e) => ({ index: e.index, term: e.term, type: e.type as Entry['type'], data: e.data })));
      }
      storage.setHardState({ term: hs.term, vote: hs.vote, commit: Math.max(Math.min(hs.commit, storage.lastIndex()), base) });
    }
    const raft = new RaftNode(this.raftConfig(this.rngSeed ^ id, base), storage);
    const g = new Group(id, raft, storage, sm, confState);
    g.repairing = repairing;
    if (repairing) {
      const why = !opts.rebuild ? 'its WAL needs repair' : (opts.rebuildReason ?? (known ? 'a snapshot restore was cut short by a crash' : "this node's data dir was replaced"));
      this.log.warn(`PG replica held until it is rebuilt from its leader: ${why}`, { group: id, durableIndex: base });
    }
    this.groups.set(id, g);
    if (opts.campaign && !known) raft.campaign();
    this.touch(g);
    return g;
  }

  private raftConfig(seed: number, applied: number): Config {
    const cfg = defaultConfig(this.nodeId, new SeededRng(seed));
    cfg.electionTicks = this.opts.electionTicks ?? defaultElectionTicks;
    cfg.maxOutstandingReadies = this.opts.maxOutstandingReadies ?? defaultMaxOutstandingReadies;
    // Followers learn the commit index from the next append or heartbeat: an empty append to
    // each follower on every commit (and its acknowledgement) doubled the frames per write.
    cfg.eagerCommitNews = false;
    cfg.applied = applied;
    // Every Raft node started here is a new instance of this replica's log for its leader:
    // one retired and started again empty must not inherit what the old one acknowledged.
    cfg.logInstance = randomInt(1, maxLogInstance);
    return cfg;
  }

  /**
   * Stops group `id` here. `drainReadies`: its Readies under way finish first, so their
   * acknowledgements leave before anything this node says about the group later (a rebuild's
   * request for a repair point, which must follow every acknowledgement it asks the leader to
   * forget); a retirement does not wait for them.
   */
  async removeGroup(id: number, opts: { drainReadies?: boolean } = {}): Promise<void> {
    const g = this.groups.get(id);
    if (!g) return;
    g.removed = true;
    // A retired replica's acknowledgements still in its Readies would reach a leader that may
    // have added this node back since, and count for a log about to be dropped: dropped
    // instead (dropping a message is always safe).
    g.silenced = opts.drainReadies !== true;
    this.groups.delete(id);
    if (opts.drainReadies) await g.readyTail.catch(() => undefined);
    await g.applyChain;
    // A checkpoint of it under way would write into a store closed under it, or into the
    // directory its retirement is removing.
    await g.checkpointRunning?.catch(() => undefined);
    for (const w of g.waiters.values()) w.reject(new Unavailable(`group ${id} removed from this node`));
    g.waiters.clear();
    await g.sm.close();
  }

  /** Proposes a membership change of `groupId` (this node must lead it). */
  proposeConfChange(groupId: number, cc: ConfChange): void {
    const g = this.groups.get(groupId);
    if (!g || !g.isLeader) throw new NotLeader(`not the leader of group ${groupId}`);
    g.raft.proposeConfChange(cc);
    this.touch(g);
  }

  /** Raft messages from a peer (already fenced by the caller). */
  receive(from: number, msgs: { g: number; m: unknown }[]): void {
    // A step may judge the lease too (reads that waited for the leader's first commit start
    // inside it): on an up-to-date clock, as in readBarrier.
    this.tick();
    for (const { g, m } of msgs) {
      let group = this.groups.get(g);
      if (!group) {
        if (!this.opts.onUnknownGroup?.(g, m as Message)) continue;
        group = this.groups.get(g);
        if (!group) continue;
      }
      const msg = m as Message;
      if (typeof msg !== 'object' || msg === null || msg.to !== this.nodeId) continue;
      if (group.repairing) {
        // Only who leads matters now; the held Raft node hears nothing.
        if ((msg.type === 'app' || msg.type === 'heartbeat' || msg.type === 'snap') && msg.term >= group.term) void this.repair(group, msg.from);
        continue;
      }
      try {
        group.raft.step(msg);
      } catch (err) {
        this.log.warn('step failed', { group: g, type: msg.type, err });
      }
      if (group.waiters.size > 0 && group.sm.ackOnCommit) this.ackQuorumCommitted(group);
      this.touch(group);
    }
  }

  /**
   * Answers proposals the leader's quorum has committed without waiting for the next Ready.
   * Ready only hands out entries that are durable here, and a Ready waits for the previous
   * one's WAL write: tying acknowledgements to it makes every write wait for the leader's own
   * device write even when both followers have already made it durable on a quorum. An entry
   * a leader of term T proposed in T and counts as committed in T is durable on a quorum (its
   * own copy is counted only once durable, and leaders never rewrite their own entries), so
   * its proposer may be answered now; proposals of earlier terms wait for apply as before.
   */
  private ackQuorumCommitted(g: Group): void {
    if (g.raft.currentRole !== 'leader') return;
    const term = g.raft.currentTerm;
    const upTo = Math.min(g.raft.committed, g.sm.appliedIndex + maxAckAheadOfApply);
    if (upTo <= g.quorumAckedIndex) return;
    // Waiters are few (the requests in flight) and mostly in index order.
    for (const [i, w] of g.waiters) {
      if (i > upTo || w.term !== term) continue;
      g.waiters.delete(i);
      this.settle(w, i, term);
    }
    if (upTo > g.quorumAckedIndex) g.quorumAckedIndex = upTo;
  }

  /**
   * Proposes `data` in `group` on this node (which must lead it). Resolves with the state
   * machine's result once the entry is committed and applied here; rejects with TimedOut once
   * `timeoutMs` have passed without (checked every tick, so up to one tick late: a timer per
   * proposal cost more than the rest of its bookkeeping).
   */
  propose(groupId: number, data: Uint8Array, timeoutMs = Number.POSITIVE_INFINITY, what = 'proposal'): Promise<unknown> {
    return this.proposeIndexed(groupId, data, timeoutMs, what).settled;
  }

  /** propose(), also saying at which log index the entry went (0 when refused at once). */
  proposeIndexed(groupId: number, data: Uint8Array, timeoutMs = Number.POSITIVE_INFINITY, what = 'proposal'): { index: number; settled: Promise<unknown> } {
    const g = this.groups.get(groupId);
    if (!g) return { index: 0, settled: Promise.reject(new NotLeader(`group ${groupId} is not on this node`)) };
    if (!g.isLeader) return { index: 0, settled: Promise.reject(new NotLeader(`not the leader of group ${groupId}`, g.lead ? String(g.lead) : undefined)) };
    let ref;
    try {
      ref = g.raft.propose(data);
    } catch (err) {
      return { index: 0, settled: Promise.reject(err) };
    }
    this.metrics.proposals.inc();
    this.touch(g);
    const settled = new Promise((resolve, reject) => {
      const now = performance.now();
      g.waiters.set(ref.index, { term: ref.term, startedMs: now, deadlineMs: now + timeoutMs, what, resolve, reject });
    });
    return { index: ref.index, settled };
  }

  /**
   * Resolves when a linearizable read of `group` may be served from this node's state machine:
   * the leader confirms its leadership (lease or a heartbeat round, inside the core) and the
   * state machine has applied up to the read index.
   */
  readBarrier(groupId: number, timeoutMs = 3000): Promise<void> {
    const g = this.groups.get(groupId);
    if (!g) return Promise.reject(new NotLeader(`group ${groupId} is not on this node`));
    if (!g.isLeader) return Promise.reject(new NotLeader(`not the leader of group ${groupId}`, g.lead ? String(g.lead) : undefined));
    const ctx = `${this.nextReadCtx++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        g.reads.delete(ctx);
        reject(new TimedOut(`read index of group ${groupId} timed out`));
      }, timeoutMs);
      g.reads.set(ctx, { resolve, reject, timer });
      // The lease is judged on an up-to-date clock (the raft README's host contract).
      this.tick();
      try {
        g.raft.readIndex(ctx);
      } catch (err) {
        clearTimeout(timer);
        g.reads.delete(ctx);
        reject(err);
        return;
      }
      this.touch(g);
    });
  }

  /**
   * For how many ticks this node has led `g` (-1: it does not lead it), on an up-to-date clock.
   * Its Raft node clears every follower's recent activity once per `electionTicks` (check
   * quorum): a peer silent since this node's election shows inactive once one such round has
   * passed after the peer fell silent.
   */
  ticksLed(g: Group): number {
    this.tick();
    return g.leaderSinceTick < 0 || g.role !== 'leader' ? -1 : this.ticksDone - g.leaderSinceTick;
  }

  get electionTicks(): number {
    return this.opts.electionTicks ?? defaultElectionTicks;
  }

  /**
   * Ticks every group once per tick interval elapsed on the monotonic clock since the last
   * call, catching up after an event-loop stall: a timer that silently coalesced missed ticks
   * would let a leader's clock (and so its lease) lag behind its followers'.
   */
  private tick(): void {
    if (this.tickTimer === undefined) return; // not started: no clock yet
    const due = Math.floor((performance.now() - this.tickOriginMs) / this.tickMs);
    const n = due - this.ticksDone;
    if (n <= 0) return;
    this.ticksDone = due;
    const electionTicks = this.electionTicks;
    for (const g of this.groups.values()) {
      if (!g.repairing) for (let i = 0; i < n; i++) g.raft.tick();
      if (g.waiters.size === 0) continue;
      this.expireWaiters(g);
      if (g.leaderlessSinceTick >= 0 && due - g.leaderlessSinceTick >= electionTicks) {
        g.leaderlessSinceTick = -1;
        this.abandonWaiters(g, `group ${g.id}: this node stopped leading and has heard of no leader since, before the proposal committed; its outcome is unknown`);
      }
    }
    // Every group, every tick: also picks up what callers outside the host changed in a Raft
    // node (a leadership transfer), within one tick.
    this.scanAll = true;
    this.schedule();
  }

  /**
   * Answers the proposer of the entry at `index`, which committed in `entryTerm`: superseded
   * if another leader's entry took the index, else the state machine's result or refusal.
   */
  private settle(w: Waiter, index: number, entryTerm: number, result?: unknown, failure?: Error): void {
    if (w.term !== entryTerm) w.reject(new NotLeader(`proposal at ${index} was superseded`));
    else if (failure) w.reject(failure);
    else {
      this.metrics.commitLatency.observe((performance.now() - w.startedMs) / 1000);
      w.resolve(result);
    }
  }

  /** Answers TimedOut to proposers whose deadline has passed (the entry may still commit). */
  private expireWaiters(g: Group): void {
    const now = performance.now();
    for (const [i, w] of g.waiters) {
      if (w.deadlineMs > now) continue;
      g.waiters.delete(i);
      w.reject(new TimedOut(`${w.what} not committed within ${Math.round(now - w.startedMs)} ms`));
    }
  }

  private schedule(): void {
    if (this.stopped || this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => this.pump());
  }

  /**
   * Takes a Ready from every group that has one and is not still handling its previous one.
   * Each group then proceeds on its own (a slow group never holds up another), but all of
   * their WAL appends are issued in this one synchronous run, so they share one WAL batch.
   */
  private pump(): void {
    this.pumpScheduled = false;
    if (this.stopped) return;
    // Only groups something happened to since the last pump can have a Ready; asking each of
    // a node's groups on every pump cost more than the Readies themselves. Swapped, not
    // cleared: whatever this pump's handling touches lands in the other list, for the next one.
    const touched = this.touched;
    this.touched = this.touchedSpare;
    this.touchedSpare = touched;
    for (const g of touched) g.touched = false;
    const scan: Iterable<Group> = this.scanAll ? this.groups.values() : touched;
    this.scanAll = false;
    let started = 0;
    for (const g of scan) {
      if (g.removed || g.snapshotInstalling || g.repairing) continue;
      // The core bounds how many Readies a group has out (Config.maxOutstandingReadies).
      if (!g.raft.hasReady()) continue;
      started++;
      this.inFlight++;
      const rd = g.raft.ready();
      const handled = this.handleReady(g, g.raft, rd, g.readyTail);
      g.readyTail = handled
        // A failed WAL write leaves Raft's view ahead of the disk: stop rather than lie.
        .catch((err) => this.fail('ready handling failed', err, { group: g.id }))
        .finally(() => {
          this.inFlight--;
          this.touch(g);
        });
    }
    touched.length = 0;
    if (started > 0) {
      this.metrics.readyRounds.inc();
      this.metrics.walBatchRecords.observe(started);
    }
  }

  /** Something happened to `g` (a step, proposal, read, advance): ask it for a Ready soon. */
  private touch(g: Group): void {
    if (!g.touched) {
      g.touched = true;
      this.touched.push(g);
    }
    this.schedule();
  }

  /**
   * One group's Ready, in order of obligation (see raft/types.ts Ready). `before` settles once
   * the group's earlier Readies are handled: this one's messages may promise what they wrote.
   */
  private async handleReady(g: Group, raft: RaftNode, rd: Ready, before: Promise<void>): Promise<void> {
    // A snapshot replaces the state machine before later entries are appended (rare; the core
    // hands one out only when no other Ready is outstanding).
    if (rd.snapshot) await this.installSnapshot(g, rd.snapshot);
    const persists: Promise<void>[] = [];
    if (rd.entries.length > 0) {
      g.storage.append(rd.entries);
      for (const e of rd.entries) g.pendingBytes += e.data.byteLength;
      persists.push(this.wal.append(g.id, rd.entries));
    }
    if (rd.hardState) {
      g.storage.setHardState(rd.hardState);
      // A hard state whose term and vote are unchanged only moves the commit index, which
      // Raft relearns from its leader after a restart: not worth a WAL write on every commit.
      if (rd.mustSync) {
        const term = rd.hardState.term;
        persists.push(
          this.wal.saveHardState(g.id, rd.hardState).then(() => {
            if (term > g.durableTerm) g.durableTerm = term;
          }),
        );
      }
      g.term = rd.hardState.term;
      g.commit = rd.hardState.commit;
    }
    if (rd.softState) this.noteSoftState(g, rd.softState.role, rd.softState.lead);
    // A leader's appends and heartbeats may leave before its own append is durable, once its
    // term is (raft/early-send.ts). Everything else (votes, acknowledgements) promises what
    // this Ready and the ones before it persist, so it waits.
    const termDurable = g.durableTerm >= g.term;
    const later: Message[] = [];
    for (const m of rd.messages) {
      if (leavesBeforePersist(m, g.role, termDurable)) this.transport.send(String(m.to), g.id, m);
      else later.push(m);
    }
    // Committed entries are already durable here (the core hands out only stable ones) and on
    // a quorum: answer and apply them now rather than after this Ready's own WAL write, which
    // would add a whole device write to every acknowledgement while proposals keep arriving.
    if (rd.committedEntries.length > 0) {
      if (g.sm.ackOnCommit && g.waiters.size > 0) this.ackCommitted(g, rd.committedEntries);
      this.queueApply(g, rd.committedEntries);
    }
    for (const rs of rd.readStates) {
      const r = g.reads.get(rs.ctx);
      if (!r) continue;
      g.reads.delete(rs.ctx);
      clearTimeout(r.timer);
      if (g.sm.appliedIndex >= rs.index) r.resolve();
      else g.readsAwaitingApply.push({ index: rs.index, resolve: r.resolve });
    }
    if (persists.length > 0) {
      const t0 = process.hrtime.bigint();
      await Promise.all(persists);
      this.metrics.walFlushLatency.observe(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    await before;
    // A replica whose WAL found corruption in the middle of this group's log (acknowledged
    // entries may be gone) must not take part in elections until a snapshot repairs it: it
    // neither asks for votes nor grants them, so it can never help elect a leader that lacks
    // an entry it once acknowledged.
    const muted = this.wal.needsRepair(g.id);
    for (const m of g.silenced ? [] : later) {
      if (muted && isElectionMessage(m)) {
        this.metrics.electionMessagesMuted.inc();
        continue;
      }
      this.transport.send(String(m.to), g.id, m);
    }
    if (!g.removed && g.raft === raft) {
      // advance() may start reads that waited for this leader's first commit, and judge the
      // lease for them: on an up-to-date clock, as in receive() and readBarrier().
      this.tick();
      raft.advance(rd);
    }
  }

  private noteSoftState(g: Group, role: Role, lead: number): void {
    if (role === 'leader' && g.role !== 'leader') {
      g.leaderSinceTick = this.ticksDone;
      this.metrics.elections.inc();
      this.log.info('became leader', { group: g.id, term: g.term });
    }
    if (g.role === 'leader' && role !== 'leader') {
      g.leaderSinceTick = -1;
      for (const [ctx, r] of g.reads) {
        clearTimeout(r.timer);
        r.reject(new NotLeader(`lost leadership of group ${g.id}`));
        g.reads.delete(ctx);
      }
      // Its proposals may still commit under the next leader, and each proposer is answered
      // when its entry applies here. A transfer or a new election steps a leader down with no
      // leader known too, for the moment until the winner's first append; but one cut off from
      // its followers (check-quorum) never hears the winner, and its proposers would wait out
      // their whole deadline. tick() answers them once no leader has been heard of for an
      // election timeout (abandonWaiters).
      if (lead === 0) g.leaderlessSinceTick = this.ticksDone;
    }
    if (lead !== 0 || role === 'leader') g.leaderlessSinceTick = -1;
    g.role = role;
    g.noteLead(lead);
  }

  /**
   * Answers every proposer still waiting in `g` with Unavailable: the outcome is unknown (the
   * entry may yet commit under a leader this node cannot hear), and the caller retries
   * elsewhere with the same request id, so one that did commit is not applied twice.
   */
  private abandonWaiters(g: Group, why: string): void {
    if (g.waiters.size === 0) return;
    for (const w of g.waiters.values()) w.reject(new Unavailable(why));
    g.waiters.clear();
  }

  /**
   * Answers the proposers of committed entries (state machines with ackOnCommit). Only while
   * the apply chain keeps up: an entry further than maxAckAheadOfApply past the applied index
   * is answered after its apply, so clients cannot queue unbounded work (and memory) there.
   */
  private ackCommitted(g: Group, entries: Entry[]): void {
    const limit = g.sm.appliedIndex + maxAckAheadOfApply;
    for (const e of entries) {
      if (e.index > limit) break;
      const w = g.waiters.get(e.index);
      if (!w) continue;
      g.waiters.delete(e.index);
      this.settle(w, e.index, e.term);
    }
  }

  private queueApply(g: Group, entries: Entry[]): void {
    const fresh = entries.filter((e) => e.index > g.queuedApplyIndex);
    if (fresh.length === 0) return;
    g.queuedApplyIndex = fresh[fresh.length - 1].index;
    g.applyChain = g.applyChain.then(async () => {
      for (const e of fresh) {
        if (g.removed) return;
        let result: unknown;
        let failure: Error | undefined;
        // Conf changes are handled by the core's membership; our groups are static today.
        try {
          if (e.type !== 0 && g.sm.applyConfChange) g.sm.applyConfChange(decodeConfChange(e.data));
          result = await g.sm.apply(e.index, e.term, e.type === 0 ? e.data : new Uint8Array(0));
        } catch (err) {
          if (!(err instanceof RaftblockError) || stopsTheNode(err)) throw err;
          failure = err; // a command the state machine refused (bad request): answer the proposer
        }
        const w = g.waiters.get(e.index);
        if (w) {
          g.waiters.delete(e.index);
          this.settle(w, e.index, e.term, result, failure);
        }
        // Waiters below the applied index whose entries were replaced by a new leader's log.
        if (g.waiters.size > 0 && !g.isLeader) {
          for (const [idx, w2] of g.waiters) {
            if (idx <= e.index) {
              g.waiters.delete(idx);
              w2.reject(new NotLeader(`proposal at ${idx} lost with leadership`));
            }
          }
        }
        if (g.readsAwaitingApply.length > 0) {
          const applied = g.sm.appliedIndex;
          for (let i = g.readsAwaitingApply.length - 1; i >= 0; i--) {
            if (g.readsAwaitingApply[i].index <= applied) g.readsAwaitingApply.splice(i, 1)[0].resolve();
          }
        }
      }
    });
    g.applyChain.catch((err) => this.fail('apply failed', err, { group: g.id }));
  }

  private async installSnapshot(g: Group, snap: Snapshot): Promise<void> {
    // From here no checkpoint of the group starts (checkpointAll skips it); one under way is
    // waited for. It took the applied index when it started: finishing over the restore, it
    // would record that older index in the store's checkpoint after the restore recorded the
    // snapshot's (through the same temp file), and save the membership as of it over the one
    // prepareSnapshot keeps aside for a crash in the middle.
    g.snapshotInstalling = true;
    try {
      await g.checkpointRunning?.catch(() => undefined);
      await g.applyChain;
      await g.sm.prepareSnapshot?.(snap.metadata.index, snap.metadata.confState);
      let image = snap.data;
      if (image.byteLength === 0 && !g.sm.inlineSnapshots) {
        // Our PG snapshots carry no data in Raft: the image is pulled from the leader, as the
        // core knows it now (g.lead is updated later in this Ready: it may name the previous
        // one). A source that has not applied up to the snapshot refuses; so does one without
        // the group: the pull is retried, from whoever leads then, until one serves it (a
        // repair has its own retry, from the leader it was given).
        for (let attempt = 1; ; attempt++) {
          const from = g.repairing ? g.lead : g.raft.status().softState.lead || g.lead;
          try {
            if (from === 0) throw new Unavailable(`group ${g.id}: no known leader to pull a snapshot from`);
            if (this.opts.pullSnapshot) await this.opts.pullSnapshot(from, g.id, snap.metadata.index, snap.metadata.term);
            else image = await this.opts.fetchSnapshot(from, g.id, snap.metadata.index);
            break;
          } catch (err) {
            const code = err instanceof RaftblockError ? err.code : '';
            // SNAPSHOT_SOURCE_CHANGED: the source was restored or reopened between two chunks;
            // the pull starts over from the first chunk, whose index it checks again.
            if (g.repairing || g.removed || this.stopped || !(code === 'UNAVAILABLE' || code === 'TIMED_OUT' || code === 'NOT_LEADER' || code === 'SNAPSHOT_SOURCE_CHANGED')) throw err;
            if (attempt === 1 || attempt % 20 === 0) this.log.info('snapshot pull failed; retrying', { group: g.id, from, index: snap.metadata.index, attempt, err });
            await new Promise((r) => setTimeout(r, jitteredMs(Math.min(50 * attempt, 1000))));
          }
        }
      }
      // Pulled in chunks straight into the store (the puller logs its bytes); else restored here.
      const pulled = image.byteLength === 0 && !g.sm.inlineSnapshots && this.opts.pullSnapshot !== undefined;
      if (!pulled) await g.sm.restoreImage(image, snap.metadata.index, snap.metadata.term);
      // A state machine that tracks its group's membership takes it from the snapshot too.
      g.sm.applyConfChange?.({ changes: snap.metadata.confState.voters.map((nodeId) => ({ type: 'addVoter' as const, nodeId })) });
      g.storage.applySnapshot(snap);
      g.queuedApplyIndex = snap.metadata.index;
      await g.sm.saveConfState?.(snap.metadata.index, snap.metadata.confState);
      await this.wal.installSnapshot(g.id, { index: snap.metadata.index, term: snap.metadata.term });
      g.pendingBytes = 0;
      g.lastCheckpointMs = performance.now();
      this.metrics.snapshotsInstalled.inc();
      this.log.info('installed snapshot', { group: g.id, index: snap.metadata.index, ...(pulled ? { pulled: true } : { bytes: image.byteLength }) });
    } finally {
      g.snapshotInstalling = false;
    }
  }

  /**
   * Rebuilds a replica whose WAL needs repair from `leader`: asks it for a snapshot point at or
   * past everything this WAL still holds of the group and past the leader's commit index (so
   * every entry this replica ever helped commit is in it), drops the group's whole log here,
   * pulls the leader's image into the state machine (the chunked snapshot path), records the
   * snapshot in the WAL (which clears the repair flag), and only then starts a fresh Raft node
   * from it: from then on the replica acknowledges and votes like any follower. A crash
   * midway leaves the flag set (the damaged batch is still on disk and no snapshot record
   * follows it), so the replica is held again and the repair starts over.
   */
  private async repair(g: Group, leader: number): Promise<void> {
    if (!g.repairing || g.repairRunning || this.stopped || performance.now() < g.repairRetryAtMs) return;
    g.repairRunning = true;
    try {
      const atLeast = Math.max(this.wal.firstIndex(g.id) - 1, g.sm.durableIndex);
      const point = await this.opts.repairPoint!(leader, g.id, atLeast);
      assert(point.index >= atLeast, `repair point ${point.index} below ${atLeast}`);
      if (this.stopped || g.removed) return;
      const first = this.wal.firstIndex(g.id);
      if (this.wal.lastIndex(g.id) >= first) await this.wal.truncateSuffix(g.id, first);
      g.noteLead(leader);
      await this.installSnapshot(g, { metadata: { index: point.index, term: point.term, confState: point.confState }, data: new Uint8Array(0) });
      assert(!this.wal.needsRepair(g.id), 'snapshot installed, repair flag still set');
      // The hard state may have been in the damaged records: take the leader's term with a
      // vote for the leader (already elected in it), so no second vote in that term is given.
      const hs = this.wal.hardState(g.id);
      const hard = hs.term > point.leaderTerm ? { term: hs.term, vote: hs.vote, commit: point.index } : { term: point.leaderTerm, vote: leader, commit: point.index };
      await this.wal.saveHardState(g.id, hard);
      g.storage.setHardState(hard);
      g.durableTerm = hard.term;
      g.raft = new RaftNode(this.raftConfig(this.rngSeed ^ g.id ^ 0x5bd1e995, point.index), g.storage);
      g.confState = cloneConfState(point.confState);
      g.term = hard.term;
      g.commit = point.index;
      g.role = 'follower';
      g.repairing = false;
      this.metrics.replicasRepaired.inc();
      this.log.warn('PG replica repaired from its leader', { group: g.id, leader, index: point.index, term: point.term });
    } catch (err) {
      g.repairRetryAtMs = performance.now() + repairRetryMs;
      this.log.info('PG replica repair not done yet; retrying', { group: g.id, leader, err });
    } finally {
      g.repairRunning = false;
      this.touch(g);
    }
  }

  /**
   * Checkpoints the groups that need it (the timer's round): a group past its pending bytes,
   * entries or age limit; the groups holding the most pending bytes while the node-wide sum
   * is over its cap; every group with applied entries while the WAL holds too many segments.
   */
  async checkpointDue(): Promise<void> {
    if (this.checkpointing || this.stopped) return;
    const now = performance.now();
    const maxBytes = this.opts.checkpointPendingBytes ?? defaultCheckpointPendingBytes;
    const maxEntries = this.opts.checkpointPendingEntries ?? defaultCheckpointPendingEntries;
    const maxAgeMs = this.opts.checkpointMaxAgeMs ?? defaultCheckpointMaxAgeMs;
    // (A WAL kept in memory, as in tests, has no segments.)
    // Segments that checkpoints could free, not the ones merely waiting to be recycled: those
    // stay after a burst, and counting them kept every group checkpointing every scan.
    const walSegments = (this.wal.segmentsInUse as (() => number) | undefined)?.call(this.wal) ?? 0;
    const walFull = walSegments > (this.opts.checkpointMaxWalSegments ?? defaultCheckpointMaxWalSegments);
    const due = new Set<Group>();
    const rest: Group[] = [];
    let restBytes = 0;
    for (const g of this.groups.values()) {
      const applied = g.sm.appliedIndex - g.sm.durableIndex;
      // A leader that must send a member a snapshot covering its re-add (RaftNode.sendAppend)
      // waits for one: taken as soon as the group has applied that far.
      const wanted = g.raft.snapshotWantedIndex;
      if (wanted > g.storage.snapshot().metadata.index && g.sm.appliedIndex >= wanted) {
        due.add(g);
        continue;
      }
      if (applied <= 0 && g.pendingBytes <= maxBytes) continue;
      if (walFull || g.pendingBytes > maxBytes || applied > maxEntries || now - g.lastCheckpointMs >= maxAgeMs) due.add(g);
      else {
        rest.push(g);
        restBytes += g.pendingBytes;
      }
    }
    const nodeCap = this.opts.checkpointNodePendingBytes ?? defaultCheckpointNodePendingBytes;
    if (restBytes > nodeCap) {
      rest.sort((a, b) => b.pendingBytes - a.pendingBytes);
      for (const g of rest) {
        if (restBytes <= nodeCap / 2) break;
        due.add(g);
        restBytes -= g.pendingBytes;
      }
    }
    if (due.size > 0) await this.checkpointAll(false, due);
  }

  /**
   * Checkpoints every group (or those in `only`): state machine durable, then the WAL may
   * drop, then trim memory.
   */
  async checkpointAll(final = false, only?: ReadonlySet<Group>): Promise<void> {
    if (this.checkpointing || this.failed || (this.stopped && !final)) return;
    this.checkpointing = true;
    try {
      for (const g of [...this.groups.values()]) {
        if (this.failed) return;
        if (g.removed || g.snapshotInstalling || g.repairing) continue;
        if (only && !only.has(g)) continue;
        const run = this.checkpointGroup(g);
        g.checkpointRunning = run;
        try {
          await run;
        } catch (err) {
          // A failed sync is not retried (see stopsTheNode): the retry would succeed over data
          // that never reached the disk. Any other failure is this group's: the pass goes on.
          if (stopsTheNode(err)) this.fail('checkpoint failed', err, { group: g.id });
          else this.log.error('checkpoint failed', { group: g.id, err });
        } finally {
          g.checkpointRunning = undefined;
        }
      }
    } finally {
      this.checkpointing = false;
    }
  }

  /** One group's checkpoint: its state machine durable, then the WAL may drop, then memory trims. */
  private async checkpointGroup(g: Group): Promise<void> {
    const pendingAtStart = g.pendingBytes;
    const idx = await g.sm.checkpoint();
    g.pendingBytes = Math.max(0, g.pendingBytes - pendingAtStart);
    g.lastCheckpointMs = performance.now();
    if (idx <= 0 || g.removed) return;
    if (g.sm.saveConfState) await g.sm.saveConfState(idx, g.raft.confStateAt(idx));
    await this.wal.checkpoint(g.id, idx);
    const keep = this.opts.keepEntriesAfterCheckpoint ?? 2048;
    const snapIndex = g.storage.snapshot().metadata.index;
    const exact = g.sm.exactImage?.(idx);
    // An inline-snapshot machine without its exact image at idx cannot compact its log yet.
    if (g.sm.inlineSnapshots && !exact) return;
    if (idx > snapIndex && idx <= g.storage.lastIndex()) {
      const cs = g.raft.confStateAt(idx);
      g.storage.createSnapshot(idx, cs, exact ?? new Uint8Array(0));
      // Keep at most `keep` entries and `keepBytes` of them behind the checkpoint: slow
      // followers catch up from memory, slower ones get a snapshot.
      const keepBytes = this.opts.keepBytesAfterCheckpoint ?? defaultKeepBytesAfterCheckpoint;
      let compactTo = idx - keep;
      let bytes = 0;
      for (let i = idx; i > Math.max(compactTo, g.storage.firstIndex() - 1); i--) {
        bytes += g.storage.entries(i, i + 1, Infinity)[0].data.byteLength;
        if (bytes > keepBytes) {
          compactTo = i;
          break;
        }
      }
      if (compactTo > g.storage.firstIndex()) g.storage.compact(compactTo);
    }
  }

  /**
   * Stops the node for an error it cannot go on from without lying (a WAL write, an apply, a
   * checkpoint or a data file's write failed): logs it, then exits with code 70 (or hands the
   * error to onFatal). From then on no checkpoint starts, stop()'s last one included: the data
   * files may not hold what was applied, and a checkpoint would let the WAL drop the only good
   * copy. The restart replays the log from the last checkpoint.
   */
  fail(what: string, err: unknown, fields: Record<string, unknown> = {}): void {
    this.log.error(`${what}; stopping`, { ...fields, err });
    if (this.failed) return;
    this.failed = true;
    if (this.opts.onFatal) {
      this.opts.onFatal(err);
      return;
    }
    process.exitCode = 70;
    setImmediate(() => process.exit(70));
  }

  /** Stops ticking, lets in-flight work settle, checkpoints, closes the state machines. */
  async stop(): Promise<void> {
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.stopped = true;
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 5));
    // A repair restores its store outside any Ready: it ends (done, or refused) before the
    // stores close under it.
    while ([...this.groups.values()].some((g) => g.repairRunning)) await new Promise((r) => setTimeout(r, 5));
    for (const g of this.groups.values()) await g.applyChain.catch(() => undefined);
    while (this.checkpointing) await new Promise((r) => setTimeout(r, 5));
    await this.checkpointAll(true);
    this.checkpointing = true;
    for (const g of this.groups.values()) {
      for (const w of g.waiters.values()) w.reject(new Unavailable('node stopping'));
      await g.sm.close();
    }
  }
}
