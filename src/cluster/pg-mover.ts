/**
 * Rebalancing: moves each PG's Raft membership to the replica set the cluster map wants, and
 * starts, resumes and retires this node's PG replicas.
 *
 * The Raft configuration is the truth, the map is the goal. Nothing about a move is kept
 * outside Raft: every round (`moveIntervalMs`) the leader of each PG compares its
 * configuration with the map (pg-move-plan.ts decides the next step: hand over leadership,
 * add learners, or one joint change that promotes the caught-up learners and removes the
 * members the map no longer wants). A node restarted in the middle of a move resumes its
 * groups from their WAL and saved membership (pg-membership.ts), whatever the map says, and
 * the leader carries on from the configuration it finds.
 *
 * On this node:
 * - a PG of a new pool is bootstrapped with the map's replicas (every replica identically);
 * - a PG this node gains by a move is started empty, as a joiner, when its leader first
 *   contacts it (`onUnknownGroup`); the leader's snapshot (pulled in chunks) fills it;
 * - a PG replica this node holds (WAL or PG directory) is resumed even when the map no longer
 *   lists this node here: until the change removing it commits, it may be needed for a quorum;
 * - a PG replica is retired — group stopped, directory removed, the group's entries dropped
 *   from the WAL, a tombstone kept — only when the map does not want it here AND a
 *   configuration without it is committed (seen in this node's log, or reported by the
 *   group's current leader), so a new replica set already holds a quorum;
 * - a replica retired here and wanted again (a node marked out, then in) rejoins empty once
 *   the leader's snapshot is past what this node's WAL still remembers of the group.
 *
 * At most `maxMovesPerNode` PGs led by this node are being moved (learners or a joint
 * configuration) at once; handing over leadership is not counted.
 *
 * A learner is added only once its node can replay what it will be sent (storeOpsHold): the
 * leader's snapshot image and the log after it may hold store commands, or data, of a level
 * that node's build does not know (it would stop at them, at every restart). Until then the
 * move waits, warned of once and counted by raftblock_pg_moves_held_for_upgrade.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import { allMembers, isJoint } from '../raft/confchange.js';
import { cloneConfState, EntryType, type ConfState, type Entry, type RaftNode } from '../raft/index.js';
import type { Logger } from '../common/log.js';
import { InvalidArgument, NotLeader, PgQuorumAtRisk, Unavailable } from '../common/errors.js';
import { PgStore } from '../store/pg-store.js';
import { farOffsetsFromBytes, StoreOpsLevel, storeOpsLevel, storeOpsLevelOfCommand } from '../store/ops.js';
import { writeFileDurably } from '../common/durable-file.js';
import type { Wal } from '../wal/index.js';
import type { Group, GroupStateMachine, MultiRaftHost } from './host.js';
import { metadataGroupId, pgOfGroup, groupsOfNode, type ClusterMap, type NodeId, type Pool } from './map.js';
import { bootstrapMembership, joinerMembership, loadMembership, membershipAt, saveMembership, type SavedMembership } from './pg-membership.js';
import { confMatchesTarget, planMove } from './pg-move-plan.js';
import { judgeRebuild } from './pg-rebuild-check.js';
import type { ReplicaHolding } from './pg-reset-check.js';

export const maxMovesPerNode = 4;
export const moveIntervalMs = 300;
/** How often a replica the map no longer wants asks the group's leader whether it is out. */
export const retireCheckIntervalMs = 1000;
export const retiredFileName = 'retired-pgs.json';
/** How long a rebuild agreed to by a PG's leader counts its replica as down before it asks for a repair point. */
const rebuildAgreementMs = 30_000;

const rebuildAskKey = (g: number, node: NodeId): string => `${g}/${node}`;
/** How often a learner's node whose store command level is unknown is asked something (its answer's frame tells it). */
const storeOpsAskIntervalMs = 1000;
/**
 * How long a held move's verdict stands while its learners' nodes tell the same levels: a
 * judgement lists the PG's data files and reads its whole retained log, and an upgrade may
 * hold hundreds of PGs for many rounds. A node telling a new level is judged again at once.
 */
const storeOpsRejudgeMs = 2000;

export interface PgMoverDeps {
  nodeId: NodeId;
  dataDir: string;
  host: MultiRaftHost;
  wal: Wal;
  /** The node's open PG stores (the mover adds and removes entries). */
  stores: Map<number, PgStore>;
  map(): ClusterMap;
  /** Peers the transport is connected to now. */
  connectedNodes(): ReadonlySet<NodeId>;
  /** False while this node's map may be older than the cluster's (just restarted). */
  mapCurrent(): boolean;
  openStore(groupId: number, dir: string): Promise<PgStore>;
  /** A request to a peer node (the `pgConf` op is answered by `describe`). */
  request(peer: NodeId, op: string, args: unknown): Promise<unknown>;
  registry: Registry;
  log: Logger;
  stopping(): boolean;
  /** The store command level node `id` told (ops.ts StoreOpsLevel), undefined if not heard from since this node started. */
  storeOpsLevelOf(id: NodeId): number | undefined;
  /**
   * Why a PG needing store command level `needed` may not gain replicas on `nodes`
   * (StoreOpsLevels.refusal by levels heard since this node started: one telling a lower level,
   * or not heard from), undefined if it may.
   */
  storeOpsRefusal(nodes: readonly NodeId[], needed: number, what: string): string | undefined;
}

/** What a replica tells others about a group's configuration (the `pgConf` request). */
export interface PgConfReport {
  nodeId: NodeId;
  term: number;
  isLeader: boolean;
  /** The latest configuration in this replica's log. */
  latest: ConfState;
  /** The configuration as of this replica's commit index. */
  committed: ConfState;
}

/** The replicas the map wants for a PG group, or undefined if the map has no such PG. */
export function targetOf(map: ClusterMap, groupId: number): NodeId[] | undefined {
  if (groupId === metadataGroupId) return undefined;
  const { poolId, pgIndex } = pgOfGroup(groupId);
  return map.pools.find((p) => p.id === poolId)?.pgs[pgIndex]?.replicas;
}

/**
 * True when a PG's replica set is the one its pool was created with (so its replicas start it
 * from scratch, identically), false when placement moved it since (it is joined).
 */
function isOriginalPlacement(pool: Pool, pgIndex: number): boolean {
  const created = pool.createdEpoch ?? Math.min(...pool.pgs.map((p) => p.sinceEpoch));
  return pool.pgs[pgIndex].sinceEpoch <= created;
}

/** The PG was reset (map.ts resetPg) and placement has not moved it since: it starts over empty. */
function isResetPlacement(pool: Pool, pgIndex: number): boolean {
  const pg = pool.pgs[pgIndex];
  return pg.resetEpoch !== undefined && pg.resetEpoch === pg.sinceEpoch;
}

/**
 * True when a PG this node has no state for may have been held here before its data dir was
 * replaced (map.ts rebuiltAtEpoch): that replica's state was lost, a leader holds what it
 * acknowledged, and it must be rebuilt held (no vote, no acknowledgement until it has the
 * leader's image) rather than joined, since an empty joiner grants votes and could elect a
 * leader without an entry the lost replica had acknowledged. The map cannot tell a PG that
 * kept this node through a later move from one placed here since (a PG's sinceEpoch is its
 * replica list's, bumped by any change to it), so every such PG is held, which costs a new
 * one nothing (it pulls the leader's image either way); only a PG started afresh since the
 * replacement (a pool created, or the PG reset, after it) is bootstrapped as usual.
 */
function lostWithDataDir(map: ClusterMap, self: NodeId, pool: Pool, pgIndex: number): boolean {
  const rebuiltAt = map.nodes.find((n) => n.id === self)?.rebuiltAtEpoch;
  if (rebuiltAt === undefined) return false;
  const startedAfresh = isOriginalPlacement(pool, pgIndex) || isResetPlacement(pool, pgIndex);
  return !(startedAfresh && pool.pgs[pgIndex].sinceEpoch > rebuiltAt);
}

/** A committed, non-joint configuration that does not list `self` in any role. */
function isOut(cs: ConfState, self: NodeId): boolean {
  return !isJoint(cs) && cs.voters.length > 0 && !allMembers(cs).includes(self);
}

function sameConf(a: ConfState, b: ConfState): boolean {
  const eq = (x: number[], y: number[]): boolean => x.length === y.length && x.every((v, i) => v === y[i]);
  const s = (x: number[]): number[] => [...x].sort((p, q) => p - q);
  return eq(s(a.voters), s(b.voters)) && eq(s(a.votersOutgoing), s(b.votersOutgoing)) && eq(s(a.learners), s(b.learners)) && eq(s(a.learnersNext), s(b.learnersNext));
}

/** True while the latest configuration in a group's log (`latest`) is not committed yet. */
function confChangePending(raft: Pick<RaftNode, 'confStateAt' | 'committed'>, latest: ConfState): boolean {
  return !sameConf(raft.confStateAt(raft.committed), latest);
}

export class PgMover {
  private readonly d: PgMoverDeps;
  private readonly retired = new Set<number>();
  private retiredWrites: Promise<void> = Promise.resolve();
  private readonly starting = new Set<number>();
  /** Groups being retired, and those whose retirement stopped the group but did not finish. */
  private readonly retiring = new Set<number>();
  /** Retirements whose group stopped but whose later steps failed: retried by the rounds. */
  private readonly unfinishedRetirements = new Map<number, { proof: string; triedMs: number; failures: number; running: boolean }>();
  /** Groups led here seen away from their target (for the completed counter). */
  private readonly movingHere = new Set<number>();
  /** Groups led here found equal to the map, at which map epoch and leader term. */
  private readonly settled = new Map<number, { epoch: number; term: number }>();
  private readonly warned = new Set<string>();
  private readonly lastRetireCheckMs = new Map<number, number>();
  private readonly retireChecks = new Set<number>();
  /** Rebuild checks asked here (rebuildAskKey → when), agreed or not: see askedToRebuildLately. */
  private readonly rebuildsAsked = new Map<string, number>();
  /**
   * Rebuilds agreed to here (rebuildCheck), per group: node → when and in which term of this
   * leader, until it asks for its repair point.
   */
  private readonly rebuildsAgreed = new Map<number, Map<NodeId, { atMs: number; term: number }>>();
  /** Groups led here whose learners wait for their nodes' upgrade (storeOpsHold), and why: warned of once per reason. */
  private heldForUpgrade = new Map<number, string>();
  /** The last held verdict per group: when, for which learners at which levels (see storeOpsRejudgeMs). */
  private readonly heldVerdicts = new Map<number, { atMs: number; levels: string; reason: string }>();
  /** When a node of unknown store command level was last asked something (storeOpsHold). */
  private readonly storeOpsAsked = new Map<NodeId, number>();
  private timer: NodeJS.Timeout | undefined;
  private roundRunning = false;
  private readonly movingGauge: Gauge;
  private readonly heldGauge: Gauge;
  private readonly completed: Counter;
  private readonly retiredCount: Counter;
  private readonly joined: Counter;

  constructor(deps: PgMoverDeps) {
    this.d = deps;
    const registers = [deps.registry];
    this.movingGauge = new Gauge({ name: 'raftblock_pg_moves_in_progress', help: 'PGs led by this node whose Raft configuration differs from the map', registers });
    this.heldGauge = new Gauge({ name: 'raftblock_pg_moves_held_for_upgrade', help: 'PGs led by this node whose move waits for a new replica\'s node to apply a higher store command level', registers });
    this.completed = new Counter({ name: 'raftblock_pg_moves_completed_total', help: 'PG moves finished by a leader on this node (configuration equal to the map again)', registers });
    this.retiredCount = new Counter({ name: 'raftblock_pg_replicas_retired_total', help: 'PG replicas removed from this node after a committed move', registers });
    this.joined = new Counter({ name: 'raftblock_pg_replicas_joined_total', help: 'PG replicas started empty on this node to join a moved PG', registers });
  }

  private pgDir(groupId: number): string {
    return join(this.d.dataDir, 'pgs', String(groupId));
  }

  private warnOnce(key: string, msg: string, fields: Record<string, unknown>): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.d.log.warn(msg, fields);
  }

  /** Reads the tombstones of retired replicas. Call before the first reconcile. */
  async load(): Promise<void> {
    try {
      const ids = JSON.parse(await readFile(join(this.d.dataDir, retiredFileName), 'utf8')) as number[];
      for (const g of ids) this.retired.add(g);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    // A retirement interrupted after its tombstone: finish removing the directory, and the
    // group's entries from the WAL (retire() drops them last). Left there, they pin the WAL's
    // segments for good (a group that never runs never checkpoints), and a rejoin would find
    // them past its empty store.
    for (const g of this.retired) {
      await rm(this.pgDir(g), { recursive: true, force: true });
      await this.dropWalEntries(g);
    }
  }

  /** Drops a group's entries from the WAL, keeping its compaction point (a rejoin needs it). */
  private async dropWalEntries(g: number): Promise<void> {
    if (!this.d.wal.groupIds().includes(g)) return;
    const first = this.d.wal.firstIndex(g);
    if (this.d.wal.lastIndex(g) >= first) await this.d.wal.truncateSuffix(g, first);
  }

  start(): void {
    this.timer = setInterval(() => {
      if (this.roundRunning) return;
      this.roundRunning = true;
      this.round()
        .catch((err) => this.d.log.error('PG move round failed', { err }))
        .finally(() => {
          this.roundRunning = false;
        });
    }, moveIntervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  // -------------------------------------------------------------------------------------
  // Starting replicas

  /** Starts the PG replicas this node should run (serialised by the caller with map changes). */
  async reconcile(map: ClusterMap): Promise<void> {
    const running = (g: number): boolean => this.d.host.groups.has(g) || this.starting.has(g) || this.retiring.has(g);
    const known = new Set(this.d.wal.groupIds());
    for (const g of groupsOfNode(map, this.d.nodeId)) {
      const { poolId, pgIndex } = pgOfGroup(g);
      const pool = map.pools.find((p) => p.id === poolId)!;
      const replicas = pool.pgs[pgIndex].replicas;
      if (this.d.host.groups.get(g)?.repairing && !known.has(g) && isResetPlacement(pool, pgIndex)) {
        await this.guardStart(g, () => this.restartReset(g, replicas));
        continue;
      }
      if (running(g)) continue;
      // A replica retired here before and wanted again rejoins when its leader calls.
      if (this.retired.has(g)) continue;
      if (!known.has(g) && lostWithDataDir(map, this.d.nodeId, pool, pgIndex)) {
        await this.guardStart(g, () => this.rebuild(g));
      } else if (known.has(g) || (await loadMembership(this.pgDir(g))) !== undefined) {
        await this.guardStart(g, () => this.resume(g, replicas));
      } else if (isOriginalPlacement(pool, pgIndex) || isResetPlacement(pool, pgIndex)) {
        // The strongest placement draw campaigns first, so a new PG gets a leader at once.
        await this.guardStart(g, () => this.bootstrap(g, replicas, replicas[0] === this.d.nodeId));
      }
      // Else placement moved the PG here: its leader adds this node and onUnknownGroup starts it.
    }
    // Replicas held here that the map no longer lists: still members until their removal commits.
    for (const g of known) {
      if (g === metadataGroupId || running(g) || this.retired.has(g)) continue;
      await this.guardStart(g, () => this.resume(g, targetOf(map, g) ?? []));
    }
  }

  private async guardStart(g: number, fn: () => Promise<void>): Promise<void> {
    if (this.starting.has(g)) return;
    this.starting.add(g);
    try {
      await fn();
    } catch (err) {
      this.d.log.error('could not start a PG replica', { group: g, err });
    } finally {
      this.starting.delete(g);
    }
  }

  private async bootstrap(g: number, replicas: NodeId[], campaign: boolean): Promise<void> {
    const dir = this.pgDir(g);
    await mkdir(dir, { recursive: true });
    const m = bootstrapMembership(replicas);
    await saveMembership(dir, m);
    const store = await this.d.openStore(g, dir);
    await this.addGroup(g, store, m, m.confState, [...replicas], campaign);
  }

  /** Held for a rebuild no leader will ever serve: the PG was reset, so it starts over here. */
  private async restartReset(g: number, replicas: NodeId[]): Promise<void> {
    try {
      await this.d.host.removeGroup(g);
    } finally {
      // The group left the host even if its close failed: its store must not stay in the table.
      this.d.stores.delete(g);
    }
    await rm(this.pgDir(g), { recursive: true, force: true });
    await this.bootstrap(g, replicas, replicas[0] === this.d.nodeId);
    this.d.log.warn('a PG reset after the loss of every replica starts over empty here', { group: g });
  }

  /**
   * A replica this node held before its data dir was lost (it was replaced): started held,
   * and rebuilt from its leader's snapshot before it votes or acknowledges anything (host.ts
   * repair). Nothing is saved before that: a crash meanwhile starts the rebuild over.
   */
  private async rebuild(g: number): Promise<void> {
    const dir = this.pgDir(g);
    await mkdir(dir, { recursive: true });
    // Like a joiner's: no membership (nor bootstrap snapshot) until the leader's snapshot.
    const m = joinerMembership();
    const store = await this.d.openStore(g, dir);
    await this.addGroup(g, store, m, m.confState, [], false, true);
  }

  /** A replica with state on this node: its saved membership (advanced over the WAL) rules. */
  private async resume(g: number, legacyVoters: NodeId[], leader?: NodeId, rebuildReason?: string): Promise<void> {
    const dir = this.pgDir(g);
    await mkdir(dir, { recursive: true });
    let saved = await loadMembership(dir);
    if (saved && saved.index === 0 && this.d.wal.firstIndex(g) > 1) {
      // A rejoin that had not received its snapshot yet: it starts over when the leader calls.
      if (leader !== undefined) await this.rejoin(g, leader);
      return;
    }
    if (!saved) {
      // Written before memberships were saved: created with the map's replicas, never moved.
      saved = bootstrapMembership(legacyVoters);
      await saveMembership(dir, saved);
    }
    let store = await this.d.openStore(g, dir);
    let confLost = false;
    let installFinished = false;
    if (store.durableIndex > this.d.wal.lastIndex(g)) {
      // A snapshot install cut short after the store was restored, before the WAL was told.
      const pending = saved.pending;
      if (pending && pending.index === store.durableIndex) {
        // Finish it: the WAL starts at the image, with the membership kept aside for it.
        await this.d.wal.installSnapshot(g, { index: store.durableIndex, term: store.appliedTerm });
        saved = { index: pending.index, confState: pending.confState };
        await saveMembership(dir, saved);
        installFinished = true;
        this.d.log.warn('finished a PG snapshot install cut short by a crash', { group: g, index: store.durableIndex });
      } else if (saved.index === 0) {
        // A joiner's first snapshot (it has promised nothing yet): start it over, empty.
        await store.close();
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { recursive: true });
        await saveMembership(dir, saved);
        store = await this.d.openStore(g, dir);
        this.d.log.warn('a PG snapshot install was cut short on a new replica; starting it over', { group: g });
      } else {
        // Not expected (the membership is kept aside before the image is taken): rather than
        // guess a configuration, this replica stays down; its image is kept for an operator.
        await store.close();
        confLost = true;
      }
    }
    const cs = confLost ? undefined : await membershipAt(saved, this.d.wal, g, store.durableIndex);
    if (!cs) {
      // Never a guessed configuration: later changes applied to a wrong one could make this
      // replica believe it is a quorum on its own.
      if (!confLost) await store.close();
      this.warnOnce(`conf-lost-${g}`, 'PG replica not started: its membership at its durable index is unknown (needs repair)', { group: g, durable: store.durableIndex, saved: saved.index });
      return;
    }
    // A restore cut short between wiping the data files and recording the image's index: the
    // files hold part of an image under the older applied index, and replaying the log from
    // there would not bring back what the wipe removed (a leader whose log still reaches that
    // index sends entries, not a snapshot). Rebuilt from the leader, held until then. One cut
    // short after its index was recorded was finished above: the image is whole.
    let rebuild = false;
    if (store.holdsPartialImage) {
      if (installFinished) await store.clearRestoreMark();
      else {
        rebuild = true;
        if (rebuildReason === undefined) {
          rebuildReason = store.partialImageCause === 'rebuild' ? 'a rebuild asked for (pool repair) was cut short by a crash' : 'a snapshot restore was cut short by a crash';
          this.d.log.warn(`${rebuildReason}; the replica is rebuilt from its leader`, { group: g, durable: store.durableIndex });
        }
      }
    }
    await this.addGroup(g, store, saved, cs, saved.index === 1 ? [...saved.confState.voters] : [], false, rebuild, rebuildReason);
  }

  /** A replica placement moved here, started empty: the leader's snapshot fills it. */
  private async join(g: number): Promise<void> {
    const dir = this.pgDir(g);
    if (!this.d.wal.groupIds().includes(g)) await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const m = joinerMembership();
    await saveMembership(dir, m);
    const store = await this.d.openStore(g, dir);
    await this.addGroup(g, store, m, m.confState, [], false);
    this.joined.inc();
    this.d.log.info('joined a moved PG as a new replica', { group: g });
  }

  /**
   * A replica retired here and wanted again. The WAL still knows the group, compacted at
   * `base` (it cannot forget a group), and ignores entries at or below it: so the snapshot
   * this replica starts from must be at `base` or later, or the entries between would be
   * acknowledged without being durable. The leader is asked for one that new first.
   */
  private async rejoin(g: number, leader: NodeId): Promise<void> {
    const base = this.d.wal.firstIndex(g) - 1;
    if (base > 0) {
      const r = (await this.d.request(leader, 'pgCompact', { g, atLeast: base })) as { snapshotIndex: number };
      if (r.snapshotIndex < base) {
        this.d.log.info('rejoining a PG waits for a snapshot past this WAL\'s compaction point', { group: g, base, snapshotIndex: r.snapshotIndex, leader });
        return;
      }
    }
    const dir = this.pgDir(g);
    await rm(dir, { recursive: true, force: true });
    // Entries a retirement left (it crashed before dropping them) would follow the empty store.
    await this.dropWalEntries(g);
    await mkdir(dir, { recursive: true });
    const m = joinerMembership();
    // The joiner's membership first: a crash before the tombstone goes leaves it retired
    // (load() removes the directory), one after resumes it as a joiner.
    await saveMembership(dir, m);
    this.retired.delete(g);
    await this.saveRetired();
    const store = await this.d.openStore(g, dir);
    await this.addGroup(g, store, m, m.confState, [], false);
    this.joined.inc();
    this.d.log.info('rejoined a PG retired here before', { group: g, walBase: base });
  }

  /**
   * The `pgCompact` request, on a PG's leader: makes sure its Raft snapshot (what a new
   * replica starts from) is at `atLeast` or later, checkpointing the group if needed.
   */
  async compactFor(g: number, atLeast: number): Promise<{ snapshotIndex: number }> {
    const group = this.d.host.groups.get(g);
    if (!group) throw new Unavailable(`group ${g} is not on node ${this.d.nodeId}`);
    if (group.storage.snapshot().metadata.index < atLeast) await this.d.host.checkpointAll(false, new Set([group]));
    return { snapshotIndex: group.storage.snapshot().metadata.index };
  }

  /**
   * The `pgRebuildCheck` request, on a PG's leader: may `node`'s replica be rebuilt in place
   * now (pg-rebuild-check.ts)? Answers where the group stands, or refuses saying why.
   */
  rebuildCheck(g: number, node: NodeId): { leader: NodeId; term: number; commitIndex: number } {
    const group = this.d.host.groups.get(g);
    if (!group || !group.isLeader) throw new NotLeader(`node ${this.d.nodeId} does not lead group ${g}`);
    const askedAt = performance.now();
    for (const [key, at] of this.rebuildsAsked) if (askedAt - at >= rebuildAgreementMs) this.rebuildsAsked.delete(key);
    this.rebuildsAsked.set(rebuildAskKey(g, node), askedAt);
    // A rebuild the previous leader agreed to is unknown here. The replica drops an agreement
    // once it has seen a newer term, judged after its group has stopped (rebuildInPlace), so a
    // replica that answered this leader is never one that then stops for an older agreement.
    // A replica of an earlier build judged that only before stopping, and could answer this
    // leader as it stopped: waiting two check-quorum rounds lets such a replica show silent
    // (a margin for a cluster mid-upgrade, not a proof).
    const ticksLed = this.d.host.ticksLed(group);
    const settleTicks = 2 * this.d.host.electionTicks + 1;
    if (ticksLed < settleTicks) {
      const waitMs = (settleTicks - Math.max(0, ticksLed)) * this.d.host.tickMs;
      throw new Unavailable(
        `group ${g}: node ${this.d.nodeId} became its leader moments ago, and a rebuild its previous leader agreed to may be starting unseen; try again in ${waitMs} ms`,
      );
    }
    const st = group.raft.status();
    const now = performance.now();
    const term = st.hardState.term;
    const agreed = this.rebuildsAgreed.get(g) ?? new Map<NodeId, { atMs: number; term: number }>();
    // A replica that never asked (its node crashed, or gave up) counts again after a while.
    // One agreed in an earlier term of this leader's counts for nothing now: it has either
    // stopped before seeing a newer term, and answers nothing in this one (this term's
    // progress does not count it active), or seen one, and resumed as it was (rebuildInPlace).
    for (const [n, a] of agreed) if (now - a.atMs > rebuildAgreementMs || a.term !== term) agreed.delete(n);
    const verdict = judgeRebuild({
      leader: this.d.nodeId,
      node,
      rebuilding: new Set([...agreed.keys()].filter((n) => n !== node)),
      conf: st.confState,
      changePending: confChangePending(group.raft, st.confState),
      progress: st.progress ?? new Map(),
      connected: this.d.connectedNodes(),
      commitIndex: st.hardState.commit,
    });
    if (!verdict.ok) {
      const why = `group ${g}: ${verdict.reason}`;
      if (verdict.code === 'PG_QUORUM_AT_RISK') throw new PgQuorumAtRisk(why);
      throw verdict.code === 'NOT_A_VOTER' ? new InvalidArgument(why) : new Unavailable(why);
    }
    agreed.set(node, { atMs: now, term });
    this.rebuildsAgreed.set(g, agreed);
    return { leader: this.d.nodeId, term, commitIndex: st.hardState.commit };
  }

  /**
   * Whether `node` asked to rebuild its replica of `g` here lately (agreed or not): it is waiting
   * to stop, so leadership must not be handed to it (it would hand it straight back).
   */
  askedToRebuildLately(g: number, node: NodeId): boolean {
    const at = this.rebuildsAsked.get(rebuildAskKey(g, node));
    if (at === undefined) return false;
    if (performance.now() - at < rebuildAgreementMs) return true;
    this.rebuildsAsked.delete(rebuildAskKey(g, node));
    return false;
  }

  /**
   * A replica of `g` led here asked for its repair point: from now on the leader's progress
   * (its match forgotten) says it is not caught up, which rebuildCheck sees by itself.
   */
  repairPointServed(g: number, node: NodeId): void {
    const agreed = this.rebuildsAgreed.get(g);
    agreed?.delete(node);
    if (agreed?.size === 0) this.rebuildsAgreed.delete(g);
  }

  /**
   * Rebuilds this node's replica of `g` from the group's leader (`raftblock pool repair`), once
   * the leader has judged that the PG keeps a quorum meanwhile (rebuildCheck). The group stops
   * here (the Readies under way finish first, so their acknowledgements leave before anything
   * else), its store is marked durably as holding nothing to trust (a crash from then on
   * rebuilds it at the next start as well), and it resumes held: host.ts repair() asks the
   * leader for a snapshot point (the leader forgets what this replica acknowledged), drops the
   * group's log here and pulls the leader's image. Until then it acknowledges and votes nothing.
   *
   * `agreedTerm`, the term of the leader that agreed: a group that has seen a newer one by the
   * time it has stopped may have answered that term's leader, which knows nothing of the
   * agreement and counts this replica as active (it may agree to rebuild another replica on
   * that count). Such a replica is not rebuilt: it resumes as it was, its log intact, and the
   * call fails UNAVAILABLE so that the caller asks the new leader. Judged once the group has
   * stopped, when nothing it does can answer anyone any more, so no answer in a newer term
   * ever comes from a replica that then stops.
   */
  async rebuildInPlace(g: number, reason: string, agreedTerm: number): Promise<void> {
    const group = this.d.host.groups.get(g);
    if (this.starting.has(g) || this.retiring.has(g) || !group) {
      throw new Unavailable(`the replica of group ${g} on node ${this.d.nodeId} is being started or retired`);
    }
    this.starting.add(g);
    try {
      try {
        await this.d.host.removeGroup(g, { drainReadies: true });
      } finally {
        // The group left the host even if its close failed: its store must not stay in the
        // table (the next reconcile resumes the replica from what it holds).
        this.d.stores.delete(g);
        this.settled.delete(g);
      }
      const termAtStop = group.raft.currentTerm;
      if (termAtStop > agreedTerm) {
        await this.resume(g, targetOf(this.d.map(), g) ?? []);
        throw new Unavailable(`group ${g}: node ${this.d.nodeId} saw term ${termAtStop} before it stopped, after a leader agreed at term ${agreedTerm}; resumed as it was, to ask the new leader`);
      }
      await PgStore.markForRebuild(this.pgDir(g));
      await this.resume(g, targetOf(this.d.map(), g) ?? [], undefined, reason);
    } finally {
      this.starting.delete(g);
    }
  }

  /** Writes the tombstones (one write at a time: they share a temporary file). */
  private saveRetired(): Promise<void> {
    const write = (): Promise<void> => writeFileDurably(join(this.d.dataDir, retiredFileName), JSON.stringify([...this.retired].sort((a, b) => a - b)));
    const p = this.retiredWrites.then(write, write);
    this.retiredWrites = p.catch(() => undefined);
    return p;
  }

  private async addGroup(g: number, store: PgStore, saved: SavedMembership, durableConf: ConfState, voters: NodeId[], campaign: boolean, rebuild = false, rebuildReason?: string): Promise<void> {
    if (this.d.stopping()) {
      await store.close();
      return;
    }
    this.d.stores.set(g, store);
    await this.d.host.addGroup(g, voters, pgStateMachine(store, this.pgDir(g), saved, durableConf), { campaign, rebuild, rebuildReason });
  }

  /** Host callback: a message for a group this node does not run. Starts a joiner if wanted. */
  onUnknownGroup(g: number, from: NodeId): boolean {
    if (g === metadataGroupId || this.d.stopping() || this.starting.has(g) || this.retiring.has(g) || this.d.host.groups.has(g)) return false;
    const target = targetOf(this.d.map(), g);
    if (!target || !target.includes(this.d.nodeId)) return false;
    if (this.retired.has(g)) {
      void this.guardStart(g, () => this.rejoin(g, from));
      return false;
    }
    const { poolId, pgIndex } = pgOfGroup(g);
    const pool = this.d.map().pools.find((p) => p.id === poolId)!;
    // A peer may reach this node before its own reconcile has started a new pool's PG: it is
    // an original member then, bootstrapped like the others; only a moved PG is joined empty.
    const known = this.d.wal.groupIds().includes(g);
    const start = (): Promise<void> =>
      !known && lostWithDataDir(this.d.map(), this.d.nodeId, pool, pgIndex)
        ? this.rebuild(g)
        : known
          ? this.resume(g, target, from)
          : isOriginalPlacement(pool, pgIndex)
            ? this.bootstrap(g, target, false)
            : this.join(g);
    void this.guardStart(g, start);
    return false; // the leader resends
  }

  /**
   * Fencing help: a member of the group's configuration as this node knows it may send Raft
   * messages even when the map no longer lists it (it still counts until its removal
   * commits); and a node the map wants here accepts its group's first messages from anyone.
   */
  acceptsFrom(g: number, from: NodeId): boolean {
    const group = this.d.host.groups.get(g);
    const cs = group?.raft.confStateAt(Number.MAX_SAFE_INTEGER);
    if (cs && allMembers(cs).includes(from)) return true;
    // Not running yet, or a joiner that knows no configuration before its first snapshot.
    if (!cs || cs.voters.length === 0) {
      const target = targetOf(this.d.map(), g);
      return target !== undefined && target.includes(this.d.nodeId);
    }
    return false;
  }

  /**
   * What this node holds of PG group `g`, for a reset (pg-reset-check.ts): 'held' (started,
   * but waiting for a rebuild, with nothing in the WAL), 'none' (no state at all), or 'state' (a
   * log, a membership or a running replica: it may hold acknowledged data).
   */
  async replicaState(g: number): Promise<ReplicaHolding> {
    const group = this.d.host.groups.get(g);
    const logged = this.d.wal.groupIds().includes(g);
    if (group) return group.repairing && !logged ? 'held' : 'state';
    if (logged || this.starting.has(g) || (await loadMembership(this.pgDir(g))) !== undefined) return 'state';
    return 'none';
  }

  /** The `pgConf` request. */
  describe(g: number): PgConfReport {
    const group = this.d.host.groups.get(g);
    if (!group) throw new Unavailable(`group ${g} is not on node ${this.d.nodeId}`);
    const st = group.raft.status();
    return { nodeId: this.d.nodeId, term: st.hardState.term, isLeader: group.isLeader, latest: st.confState, committed: group.raft.confStateAt(group.raft.committed) };
  }

  // -------------------------------------------------------------------------------------
  // The moving round

  private async round(): Promise<void> {
    // A stale map would be a stale goal: a leader could move a PG back where it came from.
    if (this.d.stopping() || !this.d.mapCurrent()) return;
    const map = this.d.map();
    let moving = 0;
    let active = 0;
    const held = new Map<number, string>();
    const led: number[] = [];
    // A judgement below awaits the data files; the map may change meanwhile, and a stale map
    // would be a stale goal for every PG after it too.
    const mapStillCurrent = (): boolean => !this.d.stopping() && this.d.mapCurrent() && this.d.map().epoch === map.epoch;
    for (const g of this.d.host.groups.values()) {
      if (g.id === metadataGroupId || !g.isLeader) continue;
      // Only this mover changes a PG's configuration, through its leader: one found settled
      // at this map epoch and leader term stays settled (spares a status per group per round).
      const s = this.settled.get(g.id);
      if (s && s.epoch === map.epoch && s.term === g.raft.currentTerm) continue;
      const cs = g.raft.confStateAt(Number.MAX_SAFE_INTEGER);
      if (isJoint(cs) || cs.learners.length > 0 || cs.learnersNext.length > 0) active++;
      led.push(g.id);
    }
    const judged = new Set<number>();
    for (const id of led.sort((a, b) => a - b)) {
      if (!mapStillCurrent()) break;
      judged.add(id);
      const g = this.d.host.groups.get(id);
      const target = targetOf(map, id);
      if (!g || !g.isLeader || !target) continue;
      const st = g.raft.status();
      if (confMatchesTarget(st.confState, target)) {
        this.settled.set(id, { epoch: map.epoch, term: g.raft.currentTerm });
        if (this.movingHere.delete(id)) {
          this.completed.inc();
          this.d.log.info('PG move complete', { group: id, voters: st.confState.voters });
        }
        continue;
      }
      this.settled.delete(id);
      moving++;
      this.movingHere.add(id);
      const step = planMove({
        self: this.d.nodeId,
        conf: st.confState,
        changePending: confChangePending(g.raft, st.confState),
        target,
        progress: st.progress ?? new Map(),
        commitIndex: st.hardState.commit,
        lastIndex: st.lastIndex,
        askedToRebuild: new Set(st.confState.voters.filter((v) => this.askedToRebuildLately(id, v))),
      });
      try {
        switch (step.kind) {
          case 'transferLeader':
            if (st.leadTransferee === 0) {
              this.d.log.info('PG move: handing leadership to a wanted replica', { group: id, to: step.to, target });
              g.raft.transferLeader(step.to);
            }
            break;
          case 'addLearners': {
            const started = st.confState.learners.length > 0;
            const term = g.raft.currentTerm;
            // Judged first: a held move is not counted as one under way.
            const hold = await this.storeOpsHoldOrWhyNot(g, step.nodes);
            if (hold === 'later') {
              if (this.heldForUpgrade.has(id)) held.set(id, this.heldForUpgrade.get(id)!);
              break;
            }
            if (hold !== undefined) {
              held.set(id, hold);
              if (this.heldForUpgrade.get(id) !== hold) this.d.log.warn('PG move held: a new replica\'s node cannot apply what the PG holds', { group: id, learners: step.nodes, reason: hold });
              break;
            }
            if (!started && active >= maxMovesPerNode) break;
            // The judgement awaited the data files: proposed only if nothing moved meanwhile (the
            // map, this group, its leadership and term, its configuration).
            if (!mapStillCurrent() || this.d.host.groups.get(id) !== g || !g.isLeader || g.raft.currentTerm !== term) break;
            if (!sameConf(g.raft.confStateAt(Number.MAX_SAFE_INTEGER), st.confState)) break;
            if (!started) active++;
            this.d.host.proposeConfChange(id, { changes: step.nodes.map((nodeId) => ({ type: 'addLearner' as const, nodeId })) });
            this.d.log.info('PG move: adding learners', { group: id, learners: step.nodes, voters: st.confState.voters, target });
            break;
          }
          case 'swap':
            this.d.host.proposeConfChange(id, { changes: step.changes });
            this.d.log.info('PG move: joint change', { group: id, changes: step.changes, voters: st.confState.voters, target });
            break;
          default:
            break;
        }
      } catch (err) {
        this.d.log.debug('PG move step not taken', { group: id, step: step.kind, err });
      }
    }
    this.movingGauge.set(moving);
    // A round cut short (the map changed) keeps what it did not judge as it was, and leaves
    // the retirements to the next round's map.
    const cutShort = !mapStillCurrent();
    for (const [id, reason] of this.heldForUpgrade) if (!judged.has(id) && !held.has(id) && this.d.host.groups.get(id)?.isLeader) held.set(id, reason);
    for (const id of this.heldForUpgrade.keys()) {
      if (!held.has(id)) this.d.log.info('PG move no longer held for an upgrade', { group: id });
    }
    this.heldForUpgrade = held;
    for (const id of this.heldVerdicts.keys()) if (!held.has(id)) this.heldVerdicts.delete(id);
    this.heldGauge.set(held.size);
    if (!cutShort) await this.retireRemoved(map);
  }

  /**
   * storeOpsHold, with a held verdict reused while it is young and the learners' nodes tell
   * the same levels (storeOpsRejudgeMs), and a judgement that failed (an I/O error listing the
   * files, a log entry this build cannot read) taken as a hold that says so: the move must not
   * go on unjudged, and the operator must hear why it waits.
   */
  private async storeOpsHoldOrWhyNot(g: Group, nodes: readonly NodeId[]): Promise<string | undefined | 'later'> {
    const levels = nodes.map((n) => `${n}:${this.d.storeOpsLevelOf(n) ?? '?'}`).join(',');
    const last = this.heldVerdicts.get(g.id);
    const now = performance.now();
    if (last && last.levels === levels && now - last.atMs < storeOpsRejudgeMs) return last.reason;
    let hold: string | undefined | 'later';
    try {
      hold = await this.storeOpsHold(g, nodes);
    } catch (err) {
      // A store closing under the judgement (its group retired or stopping) is judged again
      // next round, quietly; anything else (an I/O error, an entry this build cannot read)
      // holds the move and says why.
      if (err instanceof Unavailable) return 'later';
      hold = `the store command level it needs of node ${nodes.join(', ')} could not be judged: ${(err as Error).message}`;
    }
    if (hold === undefined || hold === 'later') this.heldVerdicts.delete(g.id);
    else this.heldVerdicts.set(g.id, { atMs: now, levels, reason: hold });
    return hold;
  }

  /**
   * Why learners on `nodes` may not join group `g` yet: undefined if they may, 'later' if
   * it could not be judged this round. A new replica is sent the leader's snapshot image,
   * then the log entries after it; a node whose build does not know a command there stops at
   * it (and again at every restart that replays it), and one that cannot reach past 256 TiB
   * cannot hold an image reaching there. The proposal's gate (StoreOpsLevels.requireForRequest)
   * covers only what is proposed once the learner is in the configuration, so what the PG
   * holds already is judged here (whatPgHolds): the level of every command in the log (from
   * the first entry the leader still holds, further back than the snapshot: it may say more
   * than needed, never less), and FarOffsets if the data files may reach 256 TiB.
   */
  private async storeOpsHold(g: Group, nodes: readonly NodeId[]): Promise<string | undefined | 'later'> {
    // Nodes at this build's level apply whatever this build proposed: nothing to read.
    if (nodes.every((n) => (this.d.storeOpsLevelOf(n) ?? 0) >= storeOpsLevel)) return undefined;
    this.askUnheard(nodes);
    const held = await this.whatPgHolds(g);
    if (held === undefined) return 'later';
    const { farData, entries } = held;
    let needed: number = farData ? StoreOpsLevel.FarOffsets : StoreOpsLevel.Base;
    let neededBy = farData ? 'its data files reach past 256 TiB' : '';
    // Headers only, and nothing awaited from here to the proposal: no entry slips in between.
    for (const e of entries) {
      if (e.type !== EntryType.Normal) continue;
      const level = storeOpsLevelOfCommand(e.data);
      if (level > needed) {
        needed = level;
        neededBy = level === StoreOpsLevel.DiscardFrom ? 'its log holds a discard past the end of a shrunk volume' : 'its log holds a command past 256 TiB';
        if (needed >= storeOpsLevel) break;
      }
    }
    if (needed === StoreOpsLevel.Base) return undefined;
    return this.d.storeOpsRefusal(nodes, needed, `adding a replica of group ${g.id} (${neededBy})`);
  }

  /**
   * Whether PG `g`'s image may hold data past 256 TiB (undefined: not judged now; ask again):
   * its data files may reach there, or its log holds a write there (the data of entries applied
   * since the last checkpoint may still be in the write-behind, out of the files' sight; the log
   * keeps every entry after that checkpoint).
   */
  async imageMayReachFar(g: number): Promise<boolean | undefined> {
    const group = this.d.host.groups.get(g);
    if (!group) return undefined;
    const held = await this.whatPgHolds(group);
    if (held === undefined) return undefined;
    return held.farData || held.entries.some((e) => e.type === EntryType.Normal && storeOpsLevelOfCommand(e.data) === StoreOpsLevel.FarOffsets);
  }

  /**
   * What PG `g` holds, for judging which build can hold it (storeOpsHold, imageMayReachFar):
   * whether its data files may reach past 256 TiB, and every log entry the leader still holds
   * (headers only). Between them they see every command ever applied: the log is compacted only
   * up to a checkpoint, which wrote the data of the entries it drops to the files. Undefined
   * when not judged now: no store, or the log compacted while the files were listed (an entry
   * dropped meanwhile may have written its data after the listing).
   */
  private async whatPgHolds(g: Group): Promise<{ farData: boolean; entries: readonly Entry[] } | undefined> {
    const store = this.d.stores.get(g.id);
    if (!store) return undefined;
    const firstIndex = g.raft.log.firstIndex();
    const farData = await store.filesMayReach(farOffsetsFromBytes);
    if (g.raft.log.firstIndex() !== firstIndex) return undefined;
    const entries = g.raft.log.slice(firstIndex, g.raft.lastIndex + 1, Number.POSITIVE_INFINITY);
    return entries === undefined ? undefined : { farData, entries };
  }

  /**
   * Asks something of each node in `nodes` not heard from since this node started (at most
   * once a storeOpsAskIntervalMs): the answer's frame tells its store command level. A node
   * the map just placed PGs on may share no group with this one, and so never send it a frame.
   */
  private askUnheard(nodes: readonly NodeId[]): void {
    const now = performance.now();
    for (const n of nodes) {
      if (this.d.storeOpsLevelOf(n) !== undefined || now - (this.storeOpsAsked.get(n) ?? -Infinity) < storeOpsAskIntervalMs) continue;
      this.storeOpsAsked.set(n, now);
      this.d.request(n, 'ping', {}).catch(() => undefined);
    }
  }

  /** Why the move of group `g`, led here, waits for an upgrade (storeOpsHold), if it does: for status. */
  moveHeldReason(g: number): string | undefined {
    return this.heldForUpgrade.get(g);
  }

  /** Replicas the map no longer wants here whose removal has committed are retired. */
  private async retireRemoved(map: ClusterMap): Promise<void> {
    const now = performance.now();
    await this.finishRetirements(now);
    for (const g of [...this.d.host.groups.values()]) {
      if (g.id === metadataGroupId || this.retiring.has(g.id)) continue;
      const target = targetOf(map, g.id);
      if (!target || target.includes(this.d.nodeId)) continue;
      if (isOut(g.raft.confStateAt(g.raft.committed), this.d.nodeId)) {
        await this.retire(g.id, 'local');
      } else if (!this.retireChecks.has(g.id) && now - (this.lastRetireCheckMs.get(g.id) ?? 0) >= retireCheckIntervalMs) {
        // Asked in the background: a peer that does not answer must not hold up the moves.
        this.lastRetireCheckMs.set(g.id, now);
        this.retireChecks.add(g.id);
        void this.askLeaders(g.id, target, g.raft.status().hardState.term).finally(() => this.retireChecks.delete(g.id));
      }
    }
  }

  /** Retires `g` if the group's current leader reports a committed configuration without us. */
  private async askLeaders(g: number, target: readonly NodeId[], myTerm: number): Promise<void> {
    const answers = await Promise.allSettled(target.map((p) => this.d.request(p, 'pgConf', { g }) as Promise<PgConfReport>));
    for (const a of answers) {
      if (a.status !== 'fulfilled') continue;
      const r = a.value;
      // Only a leader at least as new as anything this replica has seen has every committed
      // entry (leader completeness), so its committed configuration is current.
      if (r.isLeader && r.term >= myTerm && sameConf(r.latest, r.committed) && isOut(r.committed, this.d.nodeId)) {
        await this.retire(g, `leader ${r.nodeId} term ${r.term}`);
        return;
      }
    }
  }

  private async retire(g: number, proof: string): Promise<void> {
    const group = this.d.host.groups.get(g);
    if (this.retiring.has(g) || !group) return;
    // The map may have changed while a leader was asked: only a replica it does not want goes.
    const target = targetOf(this.d.map(), g);
    if (!target || target.includes(this.d.nodeId)) return;
    // Nor one whose own log has it removed and then a member again: the leader added it back
    // since its proof (this node's map is behind) and it may have acknowledged entries as that
    // member; it goes on as one. (A replica cut off before its removal reached it still lists
    // itself in its own latest configuration: that one goes, on the leader's proof.)
    if (group.raft.memberAgainAfterRemoval(this.d.nodeId)) {
      this.d.log.info('not retiring a PG replica its log has added back since its removal', { group: g, proof });
      return;
    }
    this.retiring.add(g);
    this.retired.add(g);
    try {
      // Stopped before anything is awaited: from the check above on, it acknowledges nothing.
      await this.d.host.removeGroup(g);
    } catch (err) {
      // The group left the host before its close failed (removeGroup drops it first): it runs
      // no more, and its data is about to go, so the retirement goes on.
      this.d.log.warn('a retired PG replica stopped with an error; its retirement goes on', { group: g, err });
    }
    // Out of the node's table as soon as the group no longer runs, whatever fails next: a
    // closed store left there would be handed to reads, snapshot pulls and digests, and held
    // against a later resume or rejoin until the node restarts.
    this.d.stores.delete(g);
    this.settled.delete(g);
    this.lastRetireCheckMs.delete(g);
    this.unfinishedRetirements.set(g, { proof, triedMs: 0, failures: 0, running: false });
    await this.finishRetirement(g);
  }

  /**
   * The steps of a retirement after its group stopped: tombstone (a crash after it finishes
   * the removal at the next start, one before it resumes the replica, still whole), directory,
   * WAL entries. Each may be repeated, so one that fails is tried again by the next rounds
   * (finishRetirements) rather than left to the next start: until then the group's WAL entries
   * pin every segment from theirs on (a group that never runs never checkpoints), and a node
   * can run for months. The group stays in `retiring` meanwhile, so nothing resumes, rejoins
   * or rebuilds it over the half-removed directory.
   */
  private async finishRetirement(g: number): Promise<void> {
    const r = this.unfinishedRetirements.get(g);
    // Once at a time: a round's retry may come while the first attempt (a large directory's
    // removal) still runs, and the WAL drop and the count must happen once.
    if (!r || r.running) return;
    r.running = true;
    r.triedMs = performance.now();
    try {
      await this.saveRetired();
      await rm(this.pgDir(g), { recursive: true, force: true });
      // Let the WAL recycle the segments holding this group's entries. Dropped rather than
      // checkpointed: the WAL's compaction point stays as low as it was, which a rejoin needs.
      await this.dropWalEntries(g);
    } catch (err) {
      r.failures++;
      // Logged once as an error, then quietly: it is retried every retireCheckIntervalMs.
      if (r.failures === 1) this.d.log.error('could not finish retiring a PG replica; retrying', { group: g, proof: r.proof, err });
      else this.d.log.debug('retrying a PG replica\'s retirement failed again', { group: g, failures: r.failures, err });
      return;
    } finally {
      r.running = false;
    }
    this.unfinishedRetirements.delete(g);
    this.retiring.delete(g);
    this.retiredCount.inc();
    this.d.log.info('retired a PG replica after its removal committed', { group: g, proof: r.proof, failedAttempts: r.failures });
  }

  /** Tries again the retirements whose steps after the group's stop failed (one round at a time). */
  private async finishRetirements(nowMs: number): Promise<void> {
    for (const [g, r] of [...this.unfinishedRetirements]) {
      if (this.d.stopping()) return;
      if (nowMs - r.triedMs >= retireCheckIntervalMs) await this.finishRetirement(g);
    }
  }
}

/**
 * A PG store as a Raft group's state machine, with its membership saved beside it (`saved`
 * is what membership.json holds now; `durableConf` the membership at the store's durable index).
 */
export function pgStateMachine(store: PgStore, dir: string, saved: SavedMembership, durableConf: ConfState): GroupStateMachine {
  let durableConfState = cloneConfState(durableConf);
  // What membership.json holds: a save that would write the same is skipped.
  let file: SavedMembership = { index: saved.index, confState: cloneConfState(saved.confState), pending: saved.pending };
  return {
    get appliedIndex() {
      return store.appliedIndex;
    },
    get durableIndex() {
      return store.durableIndex;
    },
    get appliedTerm() {
      return store.appliedTerm;
    },
    // A PG's apply refuses nothing (its only errors are fatal) and returns nothing.
    ackOnCommit: true,
    skip: (index, term) => store.skip(index, term),
    apply: (index, term, data) => store.apply(index, term, data),
    checkpoint: () => store.checkpoint(),
    snapshotImage: () => store.snapshotImage(),
    restoreImage: (image, index, term) => store.restoreImage(image, index, term),
    get durableConfState() {
      return durableConfState;
    },
    prepareSnapshot: async (index, cs) => {
      const next = { index: file.index, confState: file.confState, pending: { index, confState: cloneConfState(cs) } };
      await saveMembership(dir, next);
      file = next;
    },
    saveConfState: async (index, cs) => {
      durableConfState = cloneConfState(cs);
      if (!file.pending && sameConf(cs, file.confState)) return;
      const next = { index, confState: cloneConfState(cs) };
      await saveMembership(dir, next);
      file = next;
    },
    close: () => store.close(),
  };
}
