/**
 * What each node's build can apply, and the gates a node keeps on it mid rolling upgrade.
 *
 * Every node tells its peers, on every frame (Frame.s), the level of store commands its build
 * applies (ops.ts StoreOpsLevel). A replica that meets a command above its level stops (and
 * again at every restart that replays it), so:
 * - a PG leader refuses (UPGRADE_REQUIRED) to propose a command some replica's node cannot
 *   apply, judged by the level each node last told (requireForRequest), and a shrink is
 *   refused before the map shrinks (requireDiscardEverywhere);
 * - every append leaving on a connection is cut before a command the far node's build cannot
 *   apply, judged by what that connection told (gateMessage, store-ops-gate.ts): a node rolled
 *   back is judged by its new life, not by the level the proposal gate remembered;
 * - a PG's snapshot image that may hold data past 256 TiB is not sent to a node that cannot
 *   hold it (requireImage).
 * The levels last told outlive this node's restart (peer-levels-file.ts).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { UpgradeRequired, Unavailable } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { ConfState, Message } from '../raft/types.js';
import { StoreOpsLevel, storeOpsLevelOfRange } from '../store/ops.js';
import { isPgRead, type PgRequest } from '../gateway/volume-backend.js';
import { metadataGroupId, pgOfGroup, type ClusterMap, type Volume } from './map.js';
import { PeerLevelsFile } from './peer-levels-file.js';
import { cutToStoreOpsLevel, HeldBackTally } from './store-ops-gate.js';

/** What of the transport the gates read: the levels peers told, and a way to hear one. */
export interface PeerLevelSource {
  /** The level node `id` last told, remembered across restarts; undefined if never heard from. */
  storeOpsLevelOf(id: string): number | undefined;
  /** The level node `id` told since this node started; undefined if it has not. */
  storeOpsLevelHeardOf(id: string): number | undefined;
  /** Asks node `id` something (its answer's frame tells its level); never rejects. */
  ping(id: string, timeoutMs: number): Promise<unknown>;
  /** Forgets node `id`'s level (it is out of the cluster); its next frame, if any, tells it again. */
  forgetStoreOpsLevel(id: string): void;
}

export interface StoreOpsLevelsDeps {
  selfId: number;
  /** The level this node's build applies (and tells), RAFTBLOCK_STORE_OPS_LEVEL aside. */
  ownLevel: number;
  dataDir: string;
  registry: Registry;
  log: Logger;
  map(): ClusterMap;
  /** The transport, once it exists. */
  peers(): PeerLevelSource | undefined;
  /** Whether PG `g`'s image may hold data past 256 TiB (undefined: not judged now). */
  imageMayReachFar(g: number): Promise<boolean | undefined>;
}

export class StoreOpsLevels {
  private readonly heldBackEntries: Counter;
  private readonly heldBackTally = new HeldBackTally();
  private readonly imagesHeldBack: Counter;
  private readonly file: PeerLevelsFile;

  constructor(private readonly d: StoreOpsLevelsDeps) {
    this.heldBackEntries = new Counter({
      name: 'raftblock_store_ops_held_back_entries_total',
      help: 'PG log entries held back from a replica whose node runs a build that cannot apply them (mid rolling upgrade), each counted once per replica; it stays behind until upgraded',
      registers: [d.registry],
    });
    this.imagesHeldBack = new Counter({
      name: 'raftblock_store_ops_held_back_images_total',
      help: 'PG snapshot images refused to a replica whose node runs a build that cannot hold data past 256 TiB (mid rolling upgrade)',
      registers: [d.registry],
    });
    this.levelGauge();
    this.file = new PeerLevelsFile(d.dataDir, (err) => d.log.warn("could not save the peers' store command levels (they are learned again after a restart)", { err }));
  }

  /** The levels peers told before this start, for the transport to begin with. */
  async remembered(): Promise<ReadonlyMap<string, number>> {
    const known = await this.file.load();
    if (known.problem !== undefined) this.d.log.warn("ignoring the peers' store command levels saved before (they are learned again from the peers)", { problem: known.problem });
    return known.levels;
  }

  /**
   * Peer `id` told a level other than the one last known of it (TransportOptions.onStoreOpsLevel).
   * Saved only for a node of the map: a removed node still talking, or one joining before the
   * map lists it, is not (followMap saves the latter's once the map lists it).
   */
  told(id: string, level: number): void {
    if (this.d.map().nodes.some((n) => String(n.id) === id)) this.file.note(id, level);
  }

  /** Resolves once every level told so far is saved. */
  settled(): Promise<void> {
    return this.file.settled();
  }

  /**
   * Keeps the peers' levels in step with `map`, the cluster's latest: what is kept of nodes it
   * no longer lists (removed) goes, in memory and in the file (one that still talks tells its
   * level again with its next frame, and that is not saved: told), with the held-back tally's
   * pairs of them and of groups gone; the level of each node it lists is saved (a node told it
   * before the map listed it). Only a map known to be the latest will do: an older one may
   * lack nodes added since, whose remembered levels the proposal gate needs while they are down.
   */
  followMap(map: ClusterMap): void {
    const members = new Set(map.nodes.map((n) => n.id));
    const peers = this.d.peers();
    for (const id of this.file.ids()) {
      if (members.has(Number(id))) continue;
      peers?.forgetStoreOpsLevel(id);
      this.file.forget(id);
      this.d.log.info('forgot the store command level of a node the map no longer lists', { nodeId: id });
    }
    for (const id of members) {
      const level = id === this.d.selfId ? undefined : peers?.storeOpsLevelOf(String(id));
      if (level !== undefined) this.file.note(String(id), level);
    }
    const pools = new Map(map.pools.map((p) => [p.id, p.pgCount]));
    this.heldBackTally.keepOnly({
      peer: (id) => members.has(id),
      group: (g) => {
        const { poolId, pgIndex } = pgOfGroup(g);
        return pgIndex < (pools.get(poolId) ?? 0);
      },
    });
  }

  /** (peer, group) pairs the held-back tally keeps (a test's view). */
  get heldBackPairs(): number {
    return this.heldBackTally.pairs;
  }

  /** The level node `id` last told (this node's own for itself); undefined if never heard from. */
  levelOf(id: number): number | undefined {
    return id === this.d.selfId ? this.d.ownLevel : this.d.peers()?.storeOpsLevelOf(String(id));
  }

  /**
   * The level node `id` told since this node started (this node's own for itself). A learner is
   * added by these: a level remembered from before may be stale, and a move can wait for the
   * node's first frame (the write path cannot).
   */
  levelHeardOf(id: number): number | undefined {
    return id === this.d.selfId ? this.d.ownLevel : this.d.peers()?.storeOpsLevelHeardOf(String(id));
  }

  /**
   * A PG's Raft message as it may leave on a connection whose far node told `peerLevel`
   * (TransportOptions.gateMessage): appends are cut before a command that node cannot apply.
   */
  gateMessage(group: number, msg: unknown, peerLevel: number): unknown {
    if (group === metadataGroupId) return msg;
    const m = msg as Message;
    const gated = cutToStoreOpsLevel(m, peerLevel);
    if (gated !== m && m.type === 'app' && gated.type === 'app') {
      const fresh = this.heldBackTally.count(group, m, gated);
      if (fresh > 0) this.heldBackEntries.inc(fresh);
    }
    return gated;
  }

  /**
   * Refuses (UPGRADE_REQUIRED) a command some replica of PG `groupId` could not apply: one whose
   * node tells a lower level would stop at it. The replicas are the map's and every member of
   * the group's latest configuration in `raft`'s log (one being added or removed too; read only
   * for such a command: it is a copy, and every request passes here); a node never heard from
   * counts as unknown, and refuses it too.
   */
  requireForRequest(groupId: number, raft: { confStateAt(index: number): ConfState }, req: PgRequest): void {
    const needed =
      req.k === 'discardFrom' ? StoreOpsLevel.DiscardFrom : isPgRead(req) ? StoreOpsLevel.Base : storeOpsLevelOfRange(req.o, req.k === 'write' ? req.d.byteLength : req.l);
    if (needed === StoreOpsLevel.Base) return;
    const latest = raft.confStateAt(Number.MAX_SAFE_INTEGER);
    const { poolId, pgIndex } = pgOfGroup(groupId);
    const mapReplicas = this.d.map().pools.find((p) => p.id === poolId)?.pgs[pgIndex]?.replicas ?? [];
    const members = new Set([...latest.voters, ...latest.votersOutgoing, ...latest.learners, ...latest.learnersNext, ...mapReplicas]);
    const what = req.k === 'discardFrom' ? 'a discard past the end of a shrunk volume' : 'a command past 256 TiB';
    const refusal = this.refusal(members, needed, what);
    if (refusal) throw new UpgradeRequired(`group ${groupId}: ${refusal}`);
  }

  /**
   * Refuses (UNAVAILABLE, which a puller retries) to send PG `g`'s image to node `to` while its
   * build cannot hold data past 256 TiB and this store's files may reach there: an image is no
   * command the send-time gate can cut, and a replica held back there (rolled back mid-upgrade)
   * is sent one once the leader's log no longer reaches back to it. It stays behind until its
   * node is upgraded. `to`'s level is the one its request's own frame told.
   */
  async requireImage(g: number, to: number): Promise<void> {
    const level = this.levelOf(to) ?? StoreOpsLevel.Base;
    if (level >= StoreOpsLevel.FarOffsets) return;
    const far = await this.d.imageMayReachFar(g);
    if (far === false) return;
    if (far === undefined) throw new Unavailable(`group ${g}: whether its image reaches past 256 TiB, which node ${to} (level ${level}) cannot hold, could not be judged now; ask again`);
    this.imagesHeldBack.inc();
    throw new Unavailable(`group ${g}: node ${to} runs a build that applies store commands up to level ${level}, and this PG's image may hold data past 256 TiB: upgrade node ${to}; it pulls the image then`);
  }

  /**
   * Refuses a shrink of `v` (UPGRADE_REQUIRED) before the map shrinks, while a replica of its
   * pool runs a build that cannot apply the discard (requireForRequest would refuse each PG's).
   */
  async requireDiscardEverywhere(v: Volume, pingTimeoutMs: number): Promise<void> {
    const pool = this.d.map().pools.find((p) => p.name === v.pool);
    const replicas = new Set<number>();
    for (const pg of pool?.pgs ?? []) for (const id of pg.replicas) replicas.add(id);
    // A replica's node not heard from since this one started (its remembered level may be
    // stale, or it may share no group with this node and so never send a frame): ping it (its
    // answer's frame tells its level). One that does not answer is judged by what is remembered.
    const peers = this.d.peers();
    const unheard = [...replicas].filter((id) => this.levelHeardOf(id) === undefined);
    if (peers) await Promise.all(unheard.map((id) => peers.ping(String(id), pingTimeoutMs)));
    const refusal = this.refusal(replicas, StoreOpsLevel.DiscardFrom, `shrinking volume ${v.name} (a discard on every replica)`);
    if (refusal) throw new UpgradeRequired(`${refusal}; the volume is unchanged`);
  }

  /**
   * Why `needed` may not be proposed to replicas on `nodes` (undefined: it may): a node whose
   * frames tell a lower level, or one never heard from (its build unknown). `after` ends the
   * advice (what follows the upgrade). With `heardSinceStart`, levels remembered from before this
   * node started do not count (levelHeardOf).
   */
  refusal(nodes: Iterable<number>, needed: number, what: string, opts: { after?: string; heardSinceStart?: boolean } = {}): string | undefined {
    const behind: number[] = [];
    const why: string[] = [];
    const unheard = opts.heardSinceStart ? `has not been heard from since node ${this.d.selfId} started` : `has never been heard from by node ${this.d.selfId}`;
    for (const id of [...nodes].sort((a, b) => a - b)) {
      const level = opts.heardSinceStart ? this.levelHeardOf(id) : this.levelOf(id);
      if (level !== undefined && level >= needed) continue;
      behind.push(id);
      why.push(level === undefined ? `node ${id} ${unheard} (its build is unknown)` : `node ${id} runs a build that applies store commands up to level ${level}`);
    }
    const after = opts.after ?? 'then retry';
    if (behind.length === 0) return undefined;
    return `${why.join('; ')}, and ${what} needs level ${needed}: upgrade (or start) node ${behind.join(', ')}, ${after}`;
  }

  /** At scrape time: the level each peer last told this node. */
  private levelGauge(): void {
    const levels = this;
    new Gauge({
      name: 'raftblock_peer_store_ops_level',
      help: 'The store command level each peer node last told this one (the commands its build applies), remembered across restarts; absent: never heard from',
      labelNames: ['peer'],
      registers: [this.d.registry],
      collect(this: Gauge) {
        this.reset();
        for (const n of levels.d.map().nodes) {
          if (n.id === levels.d.selfId) continue;
          const level = levels.levelOf(n.id);
          if (level !== undefined) this.set({ peer: String(n.id) }, level);
        }
      },
    });
  }
}
