/**
 * One storage node: the WAL, the peer transport, the Multi-Raft host with group 0 (when this
 * node runs it) and the PG replicas the map gives it, the extent stores, the NBD gateway for
 * every volume, and the HTTP server (metrics, health, admin API).
 *
 * Joining: a `bootstrap` node founds the cluster (group 0 with itself as the only voter) and
 * registers itself in the map; any other node asks a seed to register it (`join`), which the
 * seed forwards to group 0's leader. Every frame carries its sender's map epoch; a node that
 * sees a newer one fetches the map from that peer. PG replicas are created from the map.
 *
 * Cluster identity: the founding node makes up the cluster id and group 0 puts it in the map;
 * every node keeps it in node.json as soon as it knows it, a joining node from its seed's
 * answer to the join, before it takes part in anything. The transport refuses peers of
 * another cluster (transport.ts). A node.json from before ids has none: such a node takes any
 * peer until it learns the id from the map, which group 0's leader gives one (ensureClusterId).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { RequestIdSource } from '../common/request-id.js';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import { formatHostPort, parseHostPort, type HostPort } from '../common/address.js';
import { InvalidArgument, MetaQuorumAtRisk, NodeAlive, NodeHoldsReplicas, NodeRemoved, NotFound, NotLeader, OutOfRange, PgQuorumAtRisk, RaftblockError, OutcomeUnknown, RepairRefused, RetryWindowPassed, StaleEpoch, TimedOut, Unavailable } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import { openBlockIo } from '../io/select.js';
import type { BlockIo } from '../io/types.js';
import { createRegistry } from '../metrics/server.js';
import { defaultNbdMemoryBudgetBytes, NbdServer, type NbdExport } from '../nbd/server.js';
import type { PskKeys } from '../nbd/tls-psk.js';
import { Wal } from '../wal/index.js';
import { PgStore, ScratchPool, type ImageChunk } from '../store/pg-store.js';
import { writeFileDurably } from '../common/durable-file.js';
import { raftblockVersion } from '../common/version.js';
import { jitteredMs } from '../common/backoff.js';
import { inLanes } from '../common/lanes.js';
import { encodeDiscardFrom, encodeRange, encodeWrite, OpKind, storeOpsLevel } from '../store/ops.js';
import { abandonCause, checkPgRequest, HoleScanOver, isPgRead, makeGatewayMetrics, nextRequestId, VolumeBackend, type GatewayMetrics, type PgClient, type PgMutation, type PgRequest } from '../gateway/volume-backend.js';
import { maxPieceBytes, pgsOfRange } from '../gateway/split.js';
import { defaultCheckpointMaxWalSegments, defaultElectionTicks, defaultTickMs, MultiRaftHost, type Group, type RepairPoint } from './host.js';
import { PgMover, targetOf } from './pg-mover.js';
import { isReplicaHolding, pgResetRefusal, type HoldingAnswer } from './pg-reset-check.js';
import { digestReplica } from './pg-digest.js';
import { LeaderAffinity, mayHandOver } from './leader-affinity.js';
import { mostCaughtUpSuccessor } from './successor.js';
import { defaultDownOut } from './down-out.js';
import { DownOutRunner, downOutProbeTimeoutMs } from './down-out-runner.js';
import { RemoteLeaderWatch } from './remote-leader-watch.js';
import { openMetaGroup, type MetaStore } from './meta-store.js';
import { decodeMap, describeHeldPgs, encodeCommand, encodeMap, emptyMap, isClusterId, isIncarnation, volumeWithId, findPg, maxPgsPerPool, metaCommandIdFromFields, pgGroupId, metaCommandIdFields, metadataGroupId, pgOfGroup, metaCommandKey, removeNodeRefusal, type ClusterMap, type MapCommand, type MetaCommandId, type NodeAddresses, type Volume } from './map.js';
import { checkMetaRemoval, DomainIndex, isHealthyMember, metaVotersWanted, planMetaGroup, sameConfState, spreadOf, widensInPlaceOfAVoter } from './meta-group-plan.js';
import { allMembers, isJoint } from '../raft/confchange.js';
import { isAnsweredError, maxQueuedBytesPerConnection, Transport } from './transport.js';
import type { ClusterKey } from './peer-auth.js';
import { isWellFormedMessage } from './raft-message-check.js';
import { StoreOpsLevels } from './store-ops-levels.js';
import { groupArg, imageCursorArg, imageIdArg, indexArg, mapCommandArg, nodeIdArg, pgGroupArg, snapshotIndexArg, type PeerRequestOp } from './peer-request-args.js';
import { startAdminHttp, type AdminHttp } from './http.js';
import type { HttpTls } from './http-tls.js';
import type { GroupDigest, GroupRole, GroupStatus, NodeStatus, RebuildReplicaResponse, RemoveNodeResponse, ReplaceNodeResponse } from './admin-client.js';

export interface NodeOptions {
  id: number;
  dataDir: string;
  peer: HostPort;
  nbd: HostPort;
  http: HostPort;
  labels: Record<string, string>;
  bootstrap: boolean;
  /** Seed peer addresses (HOST:PORT) to join through. */
  join: string[];
  /** The peer address others dial, when `peer` binds a wildcard (0.0.0.0:11000). */
  advertisePeer?: string;
  /** Override for tests (ms per Raft tick). */
  tickMs?: number;
  /**
   * The store command level this node tells its peers (ops.ts storeOpsLevel, the default):
   * tests of a rolling upgrade tell a lower one to stand for a node of an earlier build, whose
   * PG stores then stop at a command above it, as that build's would.
   */
  storeOpsLevel?: number;
  ioBackend?: 'uring' | 'fs' | 'auto';
  /** PG leadership moves toward the gateway that sends a PG most of its requests (default on). */
  leaderFollowsIo?: boolean;
  /**
   * As group 0's leader: marks out a node unreachable this long, and in again once it answers
   * (down-out.ts); 0 disables marking out. Default 10 minutes.
   */
  downOutIntervalMs?: number;
  /** Peers must prove this key on every connection (peer-auth.ts); absent: none is asked. */
  clusterKey?: ClusterKey;
  /** Keys peers may prove besides clusterKey (a key rotation under way). */
  clusterKeysAlsoAccepted?: readonly ClusterKey[];
  /** Peer connections run TLS keyed by clusterKey (peer-tls.ts); needs clusterKey. */
  peerTls?: boolean;
  /** NBD clients must upgrade to TLS and prove one of these keys (nbd/tls-psk.ts). */
  nbdTlsPsk?: PskKeys;
  /** The admin API's bearer token (admin-token.ts); absent: the API is open. */
  adminToken?: string;
  /** The HTTP port serves HTTPS with this certificate (http-tls.ts); absent: plain HTTP. */
  httpTls?: HttpTls;
  /** Open NBD connections at most (NbdServerOptions.maxConnections). */
  nbdMaxConnections?: number;
  /** An NBD client must finish its handshake within this (default defaultNbdHandshakeLimitMs). */
  nbdHandshakeLimitMs?: number;
  /** The NBD server's memory budget (NbdServerOptions.memoryBudgetBytes). */
  nbdMemoryBudgetBytes?: number;
  /**
   * Fault injection: start() waits this long with its peer port open before it opens the
   * groups it holds, as a loaded machine may (tests set it through RAFTBLOCK_START_HOLD_MS).
   */
  startHoldMs?: number;
}

/**
 * What a peer connection may queue for writing before it is taken for a peer that does not read
 * (Transport maxQueuedBytes): the transport's default leaves room for the forwarded writes of
 * the default NBD memory budget, which may all be on their way to one leader; a larger budget
 * adds what it holds beyond that, or a gateway forwarding its clients' writes to one slow
 * leader would have the connection closed under them.
 */
export function peerQueueLimitBytes(nbdMemoryBudgetBytes = defaultNbdMemoryBudgetBytes): number {
  return maxQueuedBytesPerConnection + Math.max(0, nbdMemoryBudgetBytes - defaultNbdMemoryBudgetBytes);
}

const requestTimeoutMs = 4000;
/** A replica asked whom it follows answers at once, or is skipped for the next one. */
const leaderProbeTimeoutMs = 500;
/** Data per streamed snapshot chunk (one frame). */
const snapshotChunkBytes = 8 * 1024 * 1024;
/** Voters of the metadata group (group 0) once enough nodes have registered. */
const ioDeadlineMs = 30000;
/** How long an admin command waits for reachable nodes to learn the map it changed. */
const spreadMapTimeoutMs = 1000;
/** How long `node remove` keeps trying (leader changes, a group-0 change in flight) before it gives up. */
const removeNodeDeadlineMs = 20000;
/** How long `pool repair` retries a leader handover and the leader's check before it gives up. */
const rebuildCheckDeadlineMs = 8000;
/**
 * How long a node keeps retrying a map command (volume and pool changes, joins) across group-0
 * leader changes before it answers Unavailable. An admin client waits longer
 * (defaultAdminTimeoutMs), so it gets this answer rather than its own timeout.
 */
export const metaCommandDeadlineMs = 10_000;
/** How long group 0's leader waits for the removal of a voter from group 0 to commit. */
const metaChangeCommitTimeoutMs = 5000;
/**
 * A group-0 learner not caught up this long after it joined is passed over for another node
 * (its replica may be held for repair): the map is small, and a healthy node fetches it in
 * seconds even through a snapshot.
 */
const metaLearnerCatchUpLimitMs = 60_000;
/**
 * How long group 0's leader waits for each node's answer when it asks every node (askNodes): the
 * PG configurations naming a node to remove, what it holds of a PG to reset.
 */
const groupsListingTimeoutMs = 3000;
/** How long a node that learns it was removed keeps its transport open for answers in flight. */
const removedGraceMs = 2000;

/** Resolves after `ms`, or at once when `signal` is aborted. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

export class StorageNode implements PgClient {
  readonly id: number;
  readonly registry: Registry;
  private readonly opts: NodeOptions;
  private readonly log: Logger;
  private io!: BlockIo;
  private wal!: Wal;
  private transport!: Transport;
  private host!: MultiRaftHost;
  private pgMover!: PgMover;
  private scratch!: ScratchPool;
  private meta: MetaStore | undefined;
  private cachedMap: ClusterMap = emptyMap();
  private readonly stores = new Map<number, PgStore>();
  private readonly exports = new Map<string, NbdExport>();
  private nbd!: NbdServer;
  private httpServer!: AdminHttp;
  private gatewayMetrics!: GatewayMetrics;
  private readonly leaderCache = new Map<number, number>();
  /** Per PG: the highest log index a mutation's answer gave here, with the PG's resetEpoch then. */
  private readonly pgLogIndexSeen = new Map<number, { index: number; resetEpoch: number }>();
  private reconciling: Promise<void> = Promise.resolve();
  private fetchingMapFrom = new Set<string>();
  private registered = false;
  /** The map epoch at which this node's registration was accepted. */
  private registeredEpoch = 0;
  /** This node was removed from the cluster map (see onRemoved): it takes part in nothing. */
  private removed = false;
  private metaTimer: NodeJS.Timeout | undefined;
  private affinityTimer: NodeJS.Timeout | undefined;
  private readonly affinity = new LeaderAffinity();
  /** `pool repair` answers by idempotency key (rebuildReplica), the latest few. */
  private readonly rebuildAnswers = new Map<number, RebuildReplicaResponse>();
  private downOut!: DownOutRunner;
  /** Leaders of PGs this node has no replica of, watched while pieces wait on them. */
  private readonly remoteLeaders: RemoteLeaderWatch;
  private leaderHandovers!: Counter;
  private stopping = false;
  addresses!: NodeAddresses;
  private readonly startedMs = performance.now();
  /** This node's cluster id, '' until known (see checkIdentity); saved in node.json. */
  private clusterId = '';
  /** This data dir's incarnation (node.json; see NodeInfo.incarnation). */
  private incarnation = '';
  /** Incarnations of the map's nodes by id, for the transport's check of every frame. */
  private incarnations: { epoch: number; byId: Map<string, string> } = { epoch: -1, byId: new Map() };
  /** A new node that learns its cluster id from its join answer and takes part in nothing before. */
  private awaitingJoin = false;
  /** A setClusterId proposal of this node (as group 0's leader) is in flight. */
  private proposingClusterId = false;

  constructor(opts: NodeOptions) {
    // The map refuses any other id, and a node refused registration only asks again.
    nodeIdArg(opts.id, 'node');
    if (!opts.bootstrap && opts.join.length === 0) throw new InvalidArgument('a node needs --bootstrap or --join SEEDS');
    this.opts = opts;
    this.id = opts.id;
    this.log = createLogger('node', { node: opts.id });
    this.registry = createRegistry();
    this.fencedMessages = new Counter({ name: 'raftblock_transport_fenced_messages_total', help: 'Raft messages dropped: sender not a replica of the group in this map', registers: [this.registry] });
    this.leaderHandovers = new Counter({ name: 'raftblock_pg_leader_handovers_total', help: 'PG leaderships handed to the node whose gateway sent most of their requests', registers: [this.registry] });
    this.malformedMessages = new Counter({ name: 'raftblock_transport_malformed_messages_total', help: 'Raft messages dropped: malformed, or not from the node that sent the frame', registers: [this.registry] });
    this.storeOps = new StoreOpsLevels({
      selfId: this.id,
      ownLevel: this.storeOpsLevel,
      dataDir: opts.dataDir,
      registry: this.registry,
      log: this.log,
      map: () => this.map(),
      peers: () => this.transport,
      imageMayReachFar: (g) => this.pgMover.imageMayReachFar(g),
    });
    this.metaVoterGauge();
    this.downOut = new DownOutRunner(
      { ...defaultDownOut, intervalMs: opts.downOutIntervalMs ?? defaultDownOut.intervalMs },
      {
        self: this.id,
        leading: () => this.leadsAppliedMetaGroup(),
        map: () => this.map(),
        probe: (id, timeoutMs) => this.transport.ping(String(id), timeoutMs),
        reachedBy: (id) => this.nodesReaching(id),
        propose: (cmd) => this.proposeMeta(cmd),
        log: this.log,
        registry: this.registry,
        nowMs: () => performance.now(),
      },
    );
    // Replicas elect a new leader within about an election timeout of losing the old one: ask
    // them from half of it on, four times per election timeout.
    const electionTimeoutMs = defaultElectionTicks * (opts.tickMs ?? defaultTickMs);
    this.remoteLeaders = new RemoteLeaderWatch((group, peer) => this.probeLeader(group, peer), {
      probeAfterMs: electionTimeoutMs / 2,
      probeIntervalMs: electionTimeoutMs / 4,
    });
  }

  map(): ClusterMap {
    const m = this.meta?.map;
    return m && m.epoch >= this.cachedMap.epoch ? m : this.cachedMap;
  }

  get epoch(): number {
    return this.map().epoch;
  }

  /**
   * On group 0's leader, at scrape time: its voters and the distinct zones, racks and hosts
   * they sit in, so an alert can say when the map would not outlive the loss of a zone
   * (`raftblock_meta_voter_domains{level="zone"} < 3`). Other nodes report nothing.
   */
  private metaVoterGauge(): void {
    const node = this;
    new Gauge({
      name: 'raftblock_meta_voter_domains',
      help: 'On the metadata group leader: its voters (level="voters"), and the distinct zones, racks and hosts they sit in',
      labelNames: ['level'],
      registers: [this.registry],
      collect(this: Gauge) {
        this.reset();
        const g = node.host?.groups.get(metadataGroupId);
        if (!g || !g.isLeader) return;
        const voters = g.raft.status().confState.voters;
        const [zones, racks, hosts] = spreadOf(new DomainIndex(node.map().nodes), voters);
        this.set({ level: 'voters' }, voters.length);
        this.set({ level: 'zone' }, zones);
        this.set({ level: 'rack' }, racks);
        this.set({ level: 'host' }, hosts);
      },
    });
  }

  /** A new HTTPS certificate (the files re-read); only for a node serving HTTPS already. */
  setHttpTls(tls: HttpTls): void {
    if (!this.httpServer) throw new Error('the HTTP server is not running');
    this.httpServer.setTls(tls);
  }

  /** New keys for NBD clients' TLS (the PSK file re-read); see NbdServer.setTlsPsk. */
  setTlsPsk(keys: PskKeys): void {
    this.nbd.setTlsPsk(keys);
  }

  async start(): Promise<void> {
    const dir = this.opts.dataDir;
    await mkdir(dir, { recursive: true });
    await this.checkIdentity();
    this.io = await openBlockIo({ probeDir: dir, backend: this.opts.ioBackend ?? 'auto' });
    // A failed write-behind flush stops the node at once, as a failed apply does: the store
    // would only refuse its next apply or checkpoint, which an idle PG may not make for a long
    // time, while its blocks live only in memory and the node-wide dirty cap is off.
    this.scratch = new ScratchPool(this.io, { onFailure: (err) => this.host.fail('write-behind flush failed', err) });
    // Under steady writes the host keeps about checkpointMaxWalSegments in use; as many idle
    // ones are kept, so sustained writes recycle segments instead of zero-filling new ones,
    // and only what a lagging checkpoint piled up beyond that is removed.
    this.wal = await Wal.open({
      dir: join(dir, 'wal'),
      io: this.io,
      maxBatchBytes: 4 * 1024 * 1024,
      maxBatchesInFlight: 4,
      cacheBytes: 8 * 1024 * 1024,
      idleSegmentsKept: defaultCheckpointMaxWalSegments,
      logger: createLogger('wal', { node: this.id }),
    });
    if (this.wal.recovery.cut || this.wal.recovery.corruption) this.log.warn('wal recovery', { report: this.wal.recovery });
    await this.loadCachedMap();
    await this.checkMapCluster(this.cachedMap, 'map-cache.bin');

    const knownLevels = await this.storeOps.remembered();
    this.transport = new Transport({
      nodeId: String(this.id),
      listen: this.opts.peer,
      advertise: this.opts.advertisePeer,
      epoch: () => this.epoch,
      registry: this.registry,
      clusterId: this.clusterId,
      awaitingJoin: this.awaitingJoin,
      incarnation: this.incarnation,
      storeOpsLevel: this.storeOpsLevel,
      gateMessage: (group, msg, peerLevel) => this.storeOps.gateMessage(group, msg, peerLevel),
      knownStoreOpsLevels: knownLevels,
      onStoreOpsLevel: (id, level) => this.storeOps.told(id, level),
      incarnationOf: (id) => this.incarnationOf(id),
      clusterKey: this.opts.clusterKey,
      clusterKeysAlsoAccepted: this.opts.clusterKeysAlsoAccepted,
      peerTls: this.opts.peerTls,
      maxQueuedBytes: peerQueueLimitBytes(this.opts.nbdMemoryBudgetBytes),
      handlers: {
        onMessages: (from, epoch, msgs) => this.host?.receive(Number(from), this.fenceMessages(Number(from), epoch, msgs)),
        onRequest: (from, epoch, op, args, joining) => this.serve(from, epoch, op, args, joining),
        onPeerEpoch: (from, epoch) => {
          // A new node learns its map (and cluster) from its join answer only.
          if (this.awaitingJoin) return;
          if (epoch > this.epoch) void this.fetchMapFrom(from);
          // A peer with the same map (an older one says nothing about the cluster's).
          else if (epoch === this.epoch) this.mapCaughtUp = true;
        },
      },
    });
    const peerBound = await this.transport.start();
    this.host = new MultiRaftHost({
      nodeId: this.id,
      wal: this.wal,
      transport: this.transport,
      registry: this.registry,
      tickMs: this.opts.tickMs,
      fetchSnapshot: async (from, group, atLeast) => (await this.transport.request(String(from), 'snapshot', { g: group, atLeast }, 60000)) as Uint8Array,
      pullSnapshot: async (from, group, index, term) => {
        const store = this.stores.get(group);
        if (!store) throw new Unavailable(`group ${group} is not on this node`);
        // The first chunk carries the snapshot's index: a source that has not applied up to it
        // refuses (its image would miss acknowledged writes). Every later one names the image
        // the first came from (`img`, which a source of an earlier version ignores): a source
        // restored or reopened since refuses, and the host pulls again from the first chunk.
        const bytes = await store.pullImage(
          async (c, image) => (await this.transport.request(String(from), 'snapshotChunk', c === null ? { g: group, c: null, atLeast: index } : { g: group, c, img: image }, 60000)) as ImageChunk,
          index,
          term,
        );
        this.log.info('pulled a PG image', { group, from, index, bytes });
      },
      repairPoint: async (from, group, atLeast) => (await this.transport.request(String(from), 'pgRepairPoint', { g: group, atLeast }, 30000)) as RepairPoint,
      onUnknownGroup: (group, msg) => {
        // Peers reach this node as soon as its transport listens, before start() has opened
        // the groups it holds (group 0 from its WAL, the retired PGs' tombstones): acting on
        // their messages then opened group 0 twice (one start failed on the duplicate) or
        // could resume a PG retired here. They are dropped until then; the leader resends.
        if (!this.holdingsOpened) return false;
        // Group 0's leader made this node a member: start it empty; a snapshot brings it up.
        if (group === metadataGroupId) void this.joinMetaGroup();
        else return this.pgMover.onUnknownGroup(group, msg.from);
        return false;
      },
    });
    this.pgMover = new PgMover({
      nodeId: this.id,
      dataDir: dir,
      host: this.host,
      wal: this.wal,
      stores: this.stores,
      map: () => this.map(),
      mapCurrent: () => this.mapCaughtUp,
      connectedNodes: () => this.connectedNodes(),
      openStore: async (g, pgDir) => {
        const store = await PgStore.open(this.io, this.scratch, pgDir, g);
        // A node told a lower level stands for an earlier build: it stops where that build would.
        if (this.storeOpsLevel < storeOpsLevel) store.applyOnlyUpToLevel(this.storeOpsLevel);
        // Before the group replays its log: writes to volumes deleted meanwhile change nothing.
        await this.dropDeletedVolumes(store, this.map());
        return store;
      },
      request: (peer, op, args) => this.transport.request(String(peer), op, args, requestTimeoutMs),
      registry: this.registry,
      log: createLogger('pg-mover', { node: this.id }),
      stopping: () => this.stopping,
      storeOpsLevelOf: (id) => this.storeOps.levelHeardOf(id),
      storeOpsRefusal: (nodes, needed, what) => this.storeOps.refusal(nodes, needed, what, { after: 'the move goes on by itself once it does', heardSinceStart: true }),
    });
    if (this.opts.startHoldMs) await new Promise((resolve) => setTimeout(resolve, this.opts.startHoldMs));
    await this.pgMover.load();

    this.gatewayMetrics = makeGatewayMetrics(this.registry);
    this.nbd = new NbdServer({ exports: this.exports, registry: this.registry, logger: createLogger('nbd', { node: this.id }), tlsPsk: this.opts.nbdTlsPsk, maxConnections: this.opts.nbdMaxConnections, handshakeLimitMs: this.opts.nbdHandshakeLimitMs, memoryBudgetBytes: this.opts.nbdMemoryBudgetBytes });
    const nbdBound = await this.nbd.listen(this.opts.nbd);
    this.httpServer = await startAdminHttp(this.opts.http, this.registry, this, { adminToken: this.opts.adminToken, tls: this.opts.httpTls });
    this.addresses = { peer: this.opts.advertisePeer ?? formatHostPort(peerBound), nbd: formatHostPort(nbdBound), http: formatHostPort(this.httpServer.address) };

    const hostsMeta = this.opts.bootstrap || this.wal.groupIds().includes(metadataGroupId);
    if (hostsMeta) {
      const opened = await this.openMeta();
      if (opened) {
        await this.checkMapCluster(opened.meta.map, 'meta/map.bin');
        this.meta = opened.meta;
        await this.host.addGroup(metadataGroupId, opened.voters, opened.meta, { campaign: this.opts.bootstrap });
      }
    }
    this.holdingsOpened = true;
    for (const n of this.map().nodes) if (n.id !== this.id) this.transport.setPeerAddress(String(n.id), n.addresses.peer);
    this.host.start();
    this.pgMover.start();
    this.metaTimer = setInterval(() => {
      this.maintainMetaGroup();
      void this.downOut.round();
    }, 1000);
    if (this.opts.leaderFollowsIo !== false) this.affinityTimer = setInterval(() => this.followIo(), 1000);
    this.onMap(this.map());
    await this.reconciling;
    void this.register();
    this.log.info('node started', { addresses: this.addresses, bootstrap: this.opts.bootstrap, io: this.io.kind, clusterId: this.clusterId || undefined });
  }

  /**
   * node.json: `{"id": N, "clusterId": ..., "incarnation": ...}`. A new data dir gets one at
   * once: a bootstrapping node founds a cluster and makes up its id; a joining node writes
   * `null` (it learns the id from its join answer, and takes part in nothing before). A
   * node.json without the field was written before cluster ids: the node learns the id from
   * the map (onMap). The incarnation is made up once per data dir (one written before
   * incarnations gets one now) and never changes: it tells this data dir from another under
   * the same id.
   */
  private async checkIdentity(): Promise<void> {
    const path = join(this.opts.dataDir, 'node.json');
    let saved: { id: number; clusterId?: unknown; removed?: unknown; incarnation?: unknown } | undefined;
    try {
      saved = JSON.parse(await readFile(path, 'utf8')) as { id: number; clusterId?: unknown; removed?: unknown; incarnation?: unknown };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (saved !== undefined && saved.id !== this.id) throw new InvalidArgument(`data dir ${this.opts.dataDir} belongs to node ${saved.id}, not ${this.id}`);
    if (saved?.removed === true) {
      throw new NodeRemoved(
        `data dir ${this.opts.dataDir}: node ${this.id} was removed from cluster ${String(saved.clusterId)}; this data dir cannot join again: start node ${this.id} with an empty data dir to rejoin`,
      );
    }
    if (saved !== undefined && saved.clusterId !== undefined && saved.clusterId !== null && !isClusterId(saved.clusterId)) {
      throw new InvalidArgument(`${path}: bad cluster id ${JSON.stringify(saved.clusterId)}`);
    }
    if (saved?.incarnation !== undefined && !isIncarnation(saved.incarnation)) throw new InvalidArgument(`${path}: bad incarnation ${JSON.stringify(saved.incarnation)}`);
    const madeIncarnation = !isIncarnation(saved?.incarnation);
    this.incarnation = isIncarnation(saved?.incarnation) ? saved.incarnation : randomBytes(8).toString('hex');
    if (isClusterId(saved?.clusterId)) {
      this.clusterId = saved.clusterId;
      if (madeIncarnation) await this.saveIdentity(this.clusterId);
    } else if (saved === undefined || saved.clusterId === null) {
      // A new node (or one whose join never got its answer).
      if (this.opts.bootstrap) this.clusterId = randomUUID();
      else this.awaitingJoin = true;
      await this.saveIdentity(this.clusterId || null);
      if (this.clusterId) this.log.info('founding a new cluster', { clusterId: this.clusterId });
    } else if (madeIncarnation) await this.saveIdentity(undefined);
  }

  /** `clusterId` undefined: a node.json from before cluster ids, which keeps having none. */
  private async saveIdentity(clusterId: string | null | undefined, removed = false): Promise<void> {
    const identity = { id: this.id, clusterId, incarnation: this.incarnation, ...(removed ? { removed } : {}) };
    await writeFileDurably(join(this.opts.dataDir, 'node.json'), JSON.stringify(identity) + '\n');
  }

  /** The incarnation the map records for node `id` (undefined: none, or not in the map). */
  private incarnationOf(id: string): string | undefined {
    const map = this.map();
    if (this.incarnations.epoch !== map.epoch) {
      const byId = new Map<string, string>();
      for (const n of map.nodes) if (n.incarnation !== undefined) byId.set(String(n.id), n.incarnation);
      this.incarnations = { epoch: map.epoch, byId };
    }
    return this.incarnations.byId.get(id);
  }

  /** A map stored in this data dir must be of this node's cluster. */
  private async checkMapCluster(map: ClusterMap, what: string): Promise<void> {
    const theirs = map.clusterId;
    if (theirs === undefined || theirs === this.clusterId) return;
    if (this.clusterId !== '') throw new InvalidArgument(`data dir ${this.opts.dataDir}: ${what} is a map of cluster ${theirs}, but node.json says cluster ${this.clusterId}`);
    if (!this.awaitingJoin) await this.learnClusterId(theirs, what);
  }

  /**
   * Takes `id` as this node's cluster id: saved in node.json first, then enforced by the
   * transport. An id that differs from the one known is refused (an error: it never changes).
   * One at a time, so node.json never names an id the node did not take.
   */
  private learnClusterId(id: string, source: string): Promise<void> {
    const next = this.learningClusterId.then(() => this.learnClusterIdNow(id, source));
    this.learningClusterId = next.catch(() => undefined);
    return next;
  }

  private learningClusterId: Promise<void> = Promise.resolve();

  private async learnClusterIdNow(id: string, source: string): Promise<void> {
    if (id === this.clusterId) return;
    if (this.clusterId !== '') throw new InvalidArgument(`${source} names cluster ${id}, but node ${this.id} belongs to cluster ${this.clusterId}`);
    await this.saveIdentity(id);
    this.clusterId = id;
    this.awaitingJoin = false;
    this.transport?.setClusterId(id);
    this.log.info('learned the cluster id', { clusterId: id, from: source });
  }

  /**
   * On group 0's leader, a map without a cluster id (a new cluster, or one from before ids)
   * gets this node's id, or a new one if this node has none either; nodes adopt it from the
   * map. Applying setClusterId refuses a second, different id, so two leaders that both
   * propose one leave the map with the first.
   */
  private ensureClusterId(): void {
    const g = this.host.groups.get(metadataGroupId);
    if (!g || !g.isLeader || !this.meta || this.meta.map.clusterId !== undefined || this.proposingClusterId || this.stopping) return;
    const id = this.clusterId || randomUUID();
    this.proposingClusterId = true;
    this.host
      .propose(metadataGroupId, encodeCommand({ type: 'setClusterId', id }))
      .then(
        () => this.log.info('the cluster map has its cluster id', { clusterId: this.meta?.map.clusterId }),
        (err) => this.log.debug('setClusterId not applied', { err }),
      )
      .finally(() => (this.proposingClusterId = false));
  }

  private async loadCachedMap(): Promise<void> {
    try {
      this.cachedMap = decodeMap(await readFile(join(this.opts.dataDir, 'map-cache.bin')));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn('ignoring unreadable map cache', { err });
    }
  }

  /** Adopts a map learned from a peer if it is newer. */
  private adoptMap(map: ClusterMap): void {
    if (map.epoch <= this.epoch) return;
    this.cachedMap = map;
    void writeFile(join(this.opts.dataDir, 'map-cache.bin'), encodeMap(map)).catch(() => undefined);
    this.onMap(map);
  }

  private async fetchMapFrom(peer: string): Promise<void> {
    if (this.fetchingMapFrom.has(peer)) return;
    this.fetchingMapFrom.add(peer);
    try {
      const r = (await this.transport.request(peer, 'getMap', {}, requestTimeoutMs)) as { map: Uint8Array };
      this.adoptMap(decodeMap(r.map));
      this.mapCaughtUp = true;
    } catch (err) {
      this.log.debug('map fetch failed', { peer, err });
    } finally {
      this.fetchingMapFrom.delete(peer);
    }
  }

  /** A new map (applied in group 0 here, or fetched): peers, PG replicas, exports. */
  private onMap(map: ClusterMap): void {
    if (this.stopping || this.removed) return;
    const current = this.map();
    // Epochs only grow and only removeNode takes a node out: a registered node missing from a
    // map newer than its registration was removed.
    if (this.registered && current.epoch > this.registeredEpoch && !current.nodes.some((n) => n.id === this.id)) {
      void this.onRemoved(`map epoch ${current.epoch} does not list node ${this.id}`);
      return;
    }
    if (map.clusterId !== undefined && map.clusterId !== this.clusterId && !this.awaitingJoin) {
      void this.learnClusterId(map.clusterId, `map epoch ${map.epoch}`).catch((err) => this.log.error('map of another cluster', { err }));
    }
    for (const n of map.nodes) if (n.id !== this.id) this.transport.setPeerAddress(String(n.id), n.addresses.peer);
    if (this.meta && map === this.meta.map) {
      void writeFile(join(this.opts.dataDir, 'map-cache.bin'), encodeMap(map)).catch(() => undefined);
    }
    // A newer map fetched from a peer while start() runs starts no replica before start() has
    // opened what it holds (see onUnknownGroup); start() reconciles once it has.
    if (!this.holdingsOpened) return;
    this.reconciling = this.reconciling.then(() => this.reconcile()).catch((err) => this.log.error('reconcile failed', { err }));
  }

  private async reconcile(): Promise<void> {
    const map = this.map();
    // PG replicas: new pools' PGs, replicas held here (resumed from their own membership), and
    // moves (see pg-mover.ts).
    await this.pgMover.reconcile(map);
    for (const v of map.volumes) {
      // A name deleted and created again between two maps seen here is a new volume: new export.
      const current = this.exports.get(v.name)?.backend;
      if (!(current instanceof VolumeBackend) || current.volumeId !== v.id) {
        this.exports.set(v.name, { backend: new VolumeBackend(this, v, this.gatewayMetrics), description: `raftblock volume ${v.name}` });
      }
    }
    for (const name of [...this.exports.keys()]) if (!map.volumes.some((v) => v.name === name)) this.exports.delete(name);
    for (const store of this.stores.values()) await this.dropDeletedVolumes(store, map);
    // Only a map known to be the cluster's latest (a cached one may lack nodes added since).
    if (this.mapCaughtUp) this.storeOps.followMap(map);
  }

  /**
   * Deletes, on this node's replicas, the data of every volume the map no longer has (see
   * PgStore.dropVolume for why each replica may do it when its own map shows the delete).
   * Volume ids are never reused, so an id below nextVolumeId that is not in the map was
   * deleted; a restarted node finds here what was deleted while it was away.
   */
  private async dropDeletedVolumes(store: PgStore, map: ClusterMap): Promise<void> {
    if (map.volumes.length === map.nextVolumeId - 1) return;
    const live = new Set(map.volumes.map((v) => v.id));
    for (let id = 1; id < map.nextVolumeId; id++) {
      if (live.has(id)) continue;
      try {
        if (await store.dropVolume(id)) this.log.info('dropped the data of a deleted volume', { group: store.groupId, volume: id });
      } catch (err) {
        this.log.warn('could not drop a deleted volume', { group: store.groupId, volume: id, err });
      }
    }
  }

  private joiningMeta = false;
  /** start() has opened group 0 (if held here) and loaded the PG tombstones: see onUnknownGroup, onMap. */
  private holdingsOpened = false;
  /**
   * This node's map is known to be as new as the cluster's (registered through group 0, or a
   * peer's epoch seen no newer, or a newer map fetched). Until then a restarted node, whose
   * cached map may predate deletes and moves, neither routes nor serves I/O.
   */
  private mapCaughtUp = false;
  private readonly fencedMessages: Counter;
  private readonly malformedMessages: Counter;
  private readonly storeOps: StoreOpsLevels;

  private async joinMetaGroup(): Promise<void> {
    if (this.meta || this.joiningMeta || this.stopping) return;
    this.joiningMeta = true;
    try {
      const opened = await this.openMeta();
      if (!opened) return;
      await this.host.addGroup(metadataGroupId, opened.voters, opened.meta);
      this.meta = opened.meta;
      this.log.info('joined the metadata group', { voters: opened.voters, index: opened.meta.durableIndex });
    } catch (err) {
      this.log.error('could not start the metadata group', { err });
    } finally {
      this.joiningMeta = false;
    }
  }

  /** Set once this node's group 0 replica is held out (see openMetaGroup): warned once. */
  private metaHeld = false;

  /**
   * When this leader first saw each group-0 learner (performance.now()): one not caught up
   * `metaLearnerCatchUpLimitMs` later is passed over (meta-group-plan.ts stalledLearners). A
   * new leader starts the clocks over.
   */
  private readonly metaLearnerSinceMs = new Map<number, number>();

  /** Group 0's state machine and starting voters, as far as the WAL vouches for map.bin (meta-store.ts). */
  private async openMeta(): Promise<{ meta: MetaStore; voters: number[] } | undefined> {
    const opened = await openMetaGroup(join(this.opts.dataDir, 'meta'), this.id, this.wal, this.opts.bootstrap, (m) => this.onMap(m));
    if (opened.meta === undefined) {
      if (!this.metaHeld) this.log.error('metadata group replica not started: it needs repair', { reason: opened.reason });
      this.metaHeld = true;
      return undefined;
    }
    if (opened.discardedIndex !== undefined) {
      this.log.warn('a metadata group snapshot install was cut short before the WAL recorded it; starting the group over empty', { imageIndex: opened.discardedIndex });
    }
    return opened;
  }

  /**
   * On group 0's leader: keeps `metaVotersWanted` voters on nodes the map has `in`, spread
   * over fault domains — grows the group as nodes register, replaces a voter marked out or
   * gone from the map (the replacement joins first, then the voter leaves), and moves a voter
   * to a node that spreads the group wider — one membership change at a time, never at the
   * cost of the quorum (meta-group-plan.ts decides).
   */
  private maintainMetaGroup(): void {
    const g = this.host.groups.get(metadataGroupId);
    if (!g || !g.isLeader || this.stopping || this.removed) {
      // Not leading: if this node leads again later, the learners' clocks start over.
      this.metaLearnerSinceMs.clear();
      return;
    }
    this.ensureClusterId();
    // Judged on a map that has every committed entry applied: a new leader still applying
    // would take a voter registered after its map for a node gone from the map.
    if (!this.leadsAppliedMetaGroup()) return;
    const st = g.raft.status();
    const map = this.map();
    // Connections are made on demand, and a node that shares no PG with this leader may have
    // none: while group 0 wants voters, or its voters could spread wider, dial the nodes that
    // could become one, so that a live one shows as connected (the plan takes only connected
    // nodes).
    const votersWanted = metaVotersWanted(map.nodes.filter((n) => n.state === 'in').length);
    const inVoters = st.confState.voters.filter((v) => map.nodes.some((n) => n.id === v && n.state === 'in'));
    const domains = new DomainIndex(map.nodes);
    for (const n of map.nodes) {
      if (n.id === this.id || n.state !== 'in' || st.confState.voters.includes(n.id) || this.transport.isConnected(String(n.id))) continue;
      if (inVoters.length < votersWanted || widensInPlaceOfAVoter(domains, inVoters, n.id)) this.transport.connect(String(n.id));
    }
    const connected = this.connectedNodes();
    const progress = st.progress ?? new Map();
    const stalledLearners = this.stalledMetaLearners(st.confState.learners, { self: this.id, connected, progress, commitIndex: st.hardState.commit });
    const step = planMetaGroup({
      self: this.id,
      conf: st.confState,
      changePending: confUncommitted(g.raft, st.confState),
      nodes: map.nodes,
      connected,
      progress,
      commitIndex: st.hardState.commit,
      votersWanted,
      stalledLearners,
    });
    try {
      switch (step.kind) {
        case 'addLearners':
          this.host.proposeConfChange(metadataGroupId, { changes: step.nodeIds.map((nodeId) => ({ type: 'addLearner' as const, nodeId })) });
          this.log.info('adding metadata learners (voters once caught up)', { nodeIds: step.nodeIds, voters: st.confState.voters });
          break;
        case 'addVoters':
          this.host.proposeConfChange(metadataGroupId, { changes: step.nodeIds.map((nodeId) => ({ type: 'addVoter' as const, nodeId })) });
          this.log.info('adding metadata voters', { nodeIds: step.nodeIds, voters: st.confState.voters, from: 'caught-up learners' });
          break;
        case 'removeLearner':
          this.host.proposeConfChange(metadataGroupId, { changes: [{ type: 'removeNode', nodeId: step.nodeId }] });
          this.log.info('removing a metadata learner no longer wanted', { nodeId: step.nodeId, learners: st.confState.learners });
          break;
        case 'removeVoter':
          this.host.proposeConfChange(metadataGroupId, { changes: [{ type: 'removeNode', nodeId: step.nodeId }] });
          this.log.info('removing a metadata voter that is out or gone from the map, crowds a fault domain, or is one of two', { nodeId: step.nodeId, voters: st.confState.voters });
          break;
        case 'transferLeader':
          if (st.leadTransferee === 0) {
            this.log.info('handing the metadata group leadership to a voter that stays', { to: step.to });
            g.raft.transferLeader(step.to);
          }
          break;
        case 'wait':
          this.log.debug('metadata membership: waiting', { reason: step.reason });
          break;
        default:
          break;
      }
    } catch (err) {
      this.log.debug('metadata membership change not proposed', { err });
    }
  }

  /** Group 0's learners not caught up within metaLearnerCatchUpLimitMs of this leader first seeing them. */
  private stalledMetaLearners(learners: readonly number[], health: Parameters<typeof isHealthyMember>[0]): Set<number> {
    const now = performance.now();
    for (const id of [...this.metaLearnerSinceMs.keys()]) if (!learners.includes(id)) this.metaLearnerSinceMs.delete(id);
    const stalled = new Set<number>();
    for (const id of learners) {
      const since = this.metaLearnerSinceMs.get(id) ?? now;
      this.metaLearnerSinceMs.set(id, since);
      if (now - since > metaLearnerCatchUpLimitMs && !isHealthyMember(health, id)) stalled.add(id);
    }
    if (stalled.size > 0) this.log.debug('metadata learners stalled', { nodeIds: [...stalled] });
    return stalled;
  }

  /** The other nodes of the map that reach node `id` (each asked to ping it). */
  private async nodesReaching(id: number): Promise<number[]> {
    const askers = this.map().nodes.filter((n) => n.id !== id && n.id !== this.id);
    const reached = await Promise.all(
      askers.map((n) =>
        this.transport.request(String(n.id), 'pingNode', { id }, 2 * downOutProbeTimeoutMs).then(
          (r) => (r as { answered?: unknown } | undefined)?.answered === true,
          () => false, // unreachable, or a node from before pingNode: no opinion
        ),
      ),
    );
    return askers.filter((_, i) => reached[i]).map((n) => n.id);
  }

  /** This node leads group 0 and its map has every committed entry of it applied. */
  private leadsAppliedMetaGroup(): boolean {
    const g = this.host?.groups.get(metadataGroupId);
    return g !== undefined && g.isLeader && !this.stopping && !this.removed && this.meta !== undefined && this.meta.appliedIndex >= g.raft.committed;
  }

  /** Registers this node in the map (addNode), retrying until group 0 accepts it. */
  private async register(): Promise<void> {
    // A node whose stored map lists it was a member: if the map no longer has it, it was
    // removed, and group 0 refuses it (NODE_REMOVED) instead of adding its old data dir again.
    const member = this.clusterId !== '' && this.map().nodes.some((n) => n.id === this.id);
    const cmd: MapCommand = { type: 'addNode', id: this.id, addresses: this.addresses, labels: this.opts.labels, incarnation: this.incarnation, ...(member ? { member } : {}) };
    let attempt = 0;
    let refused = '';
    while (!this.stopping && !this.registered && !this.removed) {
      try {
        if (this.meta) {
          // A founding node names its cluster in the map first (else the leader does within a second).
          if (this.clusterId && this.map().clusterId === undefined) await this.proposeMeta({ type: 'setClusterId', id: this.clusterId });
          await this.proposeMeta(cmd);
        } else {
          const seed = this.opts.join[attempt % this.opts.join.length];
          const r = (await this.transport.requestAddress(seed, 'join', { cmd }, requestTimeoutMs)) as { map: Uint8Array; clusterId?: string };
          const map = decodeMap(r.map);
          const clusterId = isClusterId(r.clusterId) ? r.clusterId : map.clusterId;
          // Its cluster's nodes refuse one without the id: keep asking until the seed knows it.
          if (clusterId === undefined) throw new Unavailable(`seed ${seed} does not know its cluster id yet`);
          await this.learnClusterId(clusterId, `the join answer of seed ${seed}`);
          this.adoptMap(map);
        }
        this.registeredEpoch = this.epoch;
        this.registered = true;
        this.mapCaughtUp = true;
        this.log.info('registered in the cluster map', { epoch: this.epoch });
      } catch (err) {
        attempt++;
        if ((err as RaftblockError).code === 'NODE_REMOVED') {
          await this.onRemoved((err as Error).message);
          return;
        }
        // Refused for good until an operator acts (this node's id is a member elsewhere): said once.
        if ((err as RaftblockError).code === 'ALREADY_EXISTS' && refused !== (err as Error).message) {
          refused = (err as Error).message;
          this.log.error('registration refused', { err });
        } else this.log.debug('registration not yet accepted', { err });
        await sleep(jitteredMs(Math.min(100 * attempt, 1000)));
      }
    }
  }

  get isRegistered(): boolean {
    return this.registered;
  }

  /**
   * This node was removed from the cluster map (`raftblock node remove`), seen in a map newer
   * than its registration or in group 0's answer to it. It stops taking part: no more NBD
   * exports (a request in flight fails), no PG moves, no group-0 upkeep, and its transport is
   * closed, so its frames neither reach nor are served by the cluster; the HTTP server stays
   * up (/healthz says why). node.json remembers it: this data dir never starts again (a node
   * with an empty data dir may join with this id).
   */
  private async onRemoved(why: string): Promise<void> {
    if (this.removed || this.stopping) return;
    this.removed = true;
    this.log.error('this node was removed from the cluster map: it serves nothing and takes part in nothing; stop it (to rejoin as this id, start it with an empty data dir)', {
      why,
      epoch: this.epoch,
    });
    this.exports.clear();
    if (this.metaTimer) clearInterval(this.metaTimer);
    if (this.affinityTimer) clearInterval(this.affinityTimer);
    this.metaTimer = undefined;
    this.affinityTimer = undefined;
    this.pgMover.stop();
    await this.saveIdentity(this.clusterId || null, true).catch((err) => this.log.error('could not record the removal in node.json', { err }));
    // A moment for the answers already on their way (the `node remove` asked through this very
    // node is answered by group 0's leader after it told this node).
    await sleep(removedGraceMs);
    if (!this.stopping) await this.transport.close().catch((err) => this.log.warn('transport close', { err }));
  }

  /**
   * `raftblock node remove ID` (admin API): decided on group 0's leader (forwarded there),
   * retried across leader changes and group-0 changes in flight. See removeNodeAsLeader.
   */
  async removeNode(id: number, cid?: MetaCommandId): Promise<RemoveNodeResponse> {
    nodeIdArg(id, 'node remove');
    return this.atMetaLeader('removeNode', { id }, (c) => this.removeNodeAsLeader(id, c), cid);
  }

  /**
   * `raftblock node replace ID` (admin API): decided on group 0's leader like a removal. See
   * replaceNodeAsLeader.
   */
  async replaceNode(id: number, cid?: MetaCommandId): Promise<ReplaceNodeResponse> {
    nodeIdArg(id, 'node replace');
    return this.atMetaLeader('replaceNode', { id }, (c) => this.replaceNodeAsLeader(id, c), cid);
  }

  /**
   * `raftblock pool repair` (admin API, on the node holding the replica): rebuilds this node's
   * replica of PG group `groupId` from the PG's leader, for a replica whose bytes differ from
   * its peers' (`pool verify`). A replica that leads hands the leadership to a caught-up voter
   * first; the leader then judges that the other voters keep a quorum while this one is held
   * (pg-rebuild-check.ts), else PG_QUORUM_AT_RISK. Answers once the replica is held and its
   * rebuild has started (the caller watches `needsRepair` in /v1/status go). A repeat with the
   * same idempotency key is answered as the first was; one while the rebuild runs says so.
   */
  async rebuildReplica(groupId: number, sources?: readonly number[], cid?: MetaCommandId): Promise<RebuildReplicaResponse> {
    if (!Number.isSafeInteger(groupId) || groupId < 0) throw new InvalidArgument(`bad group id ${groupId}`);
    if (groupId === metadataGroupId) {
      throw new InvalidArgument('group 0 (the cluster map) is not rebuilt replica by replica: mark its node out and in again, or replace the node');
    }
    const key = cid === undefined ? undefined : metaCommandKey(cid);
    const answered = key === undefined ? undefined : this.rebuildAnswers.get(key);
    if (answered) return answered;
    // Plus the wait of a leader elected moments ago before it agrees to any rebuild (two
    // check-quorum rounds, pg-mover.ts rebuildCheck), whatever the tick.
    const deadline = Date.now() + rebuildCheckDeadlineMs + (2 * this.host.electionTicks + 1) * this.host.tickMs;
    let lastWhy = '';
    for (let attempt = 1; ; attempt++) {
      const g = this.host.groups.get(groupId);
      if (!g) throw new NotFound(`node ${this.id} runs no replica of group ${groupId}`);
      if (g.repairing) return { groupId, nodeId: this.id, leader: g.lead, commitIndex: g.commit, underWay: true };
      try {
        if (g.isLeader) {
          this.handOverForRebuild(g, sources);
          throw new Unavailable(`node ${this.id} leads group ${groupId}: handing the leadership over first`);
        }
        if (!g.lead) throw new Unavailable(`group ${groupId} has no leader now`);
        // The rebuild copies the leader: never one whose copy the caller found odd.
        if (sources && !sources.includes(g.lead)) {
          throw new RepairRefused(`group ${groupId}: its leader, node ${g.lead}, does not hold the copy the majority holds (nodes ${sources.join(',')}): repair node ${g.lead} first`);
        }
        const check = (await this.transport.request(String(g.lead), 'pgRebuildCheck', { g: groupId }, requestTimeoutMs)) as { leader: number; term: number; commitIndex: number };
        if (this.host.groups.get(groupId) !== g || g.isLeader) throw new Unavailable(`group ${groupId} changed on node ${this.id} meanwhile`);
        // A newer term here: the leader that agreed was replaced meanwhile, and its successor
        // knows nothing of the agreement. Ask the successor (the next attempt) instead. The Raft
        // node's own term, not the host's copy, which lags it while a Ready is being handled.
        const term = g.raft.currentTerm;
        if (term > check.term) throw new Unavailable(`group ${groupId}: node ${check.leader} agreed at term ${check.term}, and node ${this.id} has seen term ${term} since`);
        await this.pgMover.rebuildInPlace(groupId, 'an operator asked for it (pool repair)', check.term);
        const answer: RebuildReplicaResponse = { groupId, nodeId: this.id, leader: check.leader, commitIndex: check.commitIndex };
        if (key !== undefined) {
          this.rebuildAnswers.set(key, answer);
          if (this.rebuildAnswers.size > 64) this.rebuildAnswers.delete(this.rebuildAnswers.keys().next().value!);
        }
        return answer;
      } catch (err) {
        // Retried for a while: leadership moving, and a check-quorum round that has just
        // cleared the leader's view of who is active, settle within an election timeout.
        const code = (err as RaftblockError).code;
        if (!['NOT_LEADER', 'UNAVAILABLE', 'TIMED_OUT', 'PG_QUORUM_AT_RISK'].includes(code) || Date.now() > deadline) throw err;
        const why = (err as Error).message;
        if (why !== lastWhy) this.log.info('replica rebuild not agreed yet; asking again', { group: groupId, attempt, err: why });
        lastWhy = why;
        await sleep(jitteredMs(Math.min(100 * attempt, 500)));
      }
    }
  }

  /** This node leads `g` and its replica is to be rebuilt: hands over to the most caught-up voter (of `sources`, if given). */
  private handOverForRebuild(g: Group, sources?: readonly number[]): void {
    const st = g.raft.status();
    if (st.leadTransferee !== 0) return;
    const best = mostCaughtUpSuccessor({
      self: this.id,
      voters: st.confState.voters,
      progress: st.progress ?? new Map(),
      eligible: (v) => (sources === undefined || sources.includes(v)) && this.transport.isConnected(String(v)),
    });
    if (best === 0) throw new PgQuorumAtRisk(`group ${g.id}: node ${this.id} leads it and no other voter is connected and replicating to take over`);
    this.log.info('handing PG leadership over before rebuilding this replica', { group: g.id, to: best });
    g.raft.transferLeader(best);
  }

  /**
   * `raftblock pool reset-pg POOL N` (admin API): decided on group 0's leader like a removal.
   * See resetPgAsLeader.
   */
  async resetPg(pool: string, pg: number, cid?: MetaCommandId): Promise<unknown> {
    return this.atMetaLeader('resetPg', { pool, pg }, (c) => this.resetPgAsLeader(pool, pg, c), cid);
  }

  /**
   * On group 0's leader. The map's rule (every replica's node replaced since the PG was placed
   * there) is not enough on its own: a replaced node may have been rebuilt from a replica that
   * was lost after, and a move that had not finished leaves members the map no longer names,
   * which may hold the data and even lead the PG. So every node of the map is asked what it
   * holds of the PG, and the reset is refused (PG_NOT_LOST) unless none holds more than a
   * replica held for a rebuild with an empty log, and (PG_LOSS_UNCONFIRMED) while a node that
   * may hold it does not answer (pg-reset-check.ts). A repeat of a reset that was applied is
   * answered as the first was (its replicas hold the new PG now).
   */
  private async resetPgAsLeader(poolName: string, pg: number, cid: MetaCommandId): Promise<unknown> {
    this.metaLeaderGroup();
    if (!this.answeredBefore(cid)) {
      const map = this.map();
      const { pool } = findPg(map, poolName, pg);
      const g = pgGroupId(pool.id, pg);
      // Every node of the map, reachable or not (see pg-reset-check.ts for who may be silent).
      const asked = await this.askNodes(map.nodes.map((n) => n.id), 'pgReplicaState', { g }, () => this.pgMover.replicaState(g));
      const answers = new Map<number, HoldingAnswer>();
      for (const [id, a] of asked) {
        if ('error' in a) answers.set(id, { unanswered: describeError(a.error) });
        else answers.set(id, isReplicaHolding(a.answer) ? { holding: a.answer } : { unanswered: `it answered ${JSON.stringify(a.answer)}` });
      }
      const refusal = pgResetRefusal(map, pool, pg, answers);
      if (refusal) throw refusal;
    }
    const r = (await this.proposeMeta({ type: 'resetPg', pool: poolName, pg }, cid)) as { epoch: number };
    await this.spreadMap(r.epoch);
    this.log.warn('a PG whose every replica was lost starts over empty', { pool: poolName, pg, epoch: r.epoch });
    return r;
  }

  /**
   * Runs a node command on group 0's leader: here if this node leads it, else forwarded. Every
   * attempt carries one map command id (`cid`: the client's, from its Idempotency-Key, else
   * made here), so an attempt whose answer was lost (its
   * leader changed, its connection dropped) is answered on retry from what group 0 remembers
   * of it (see answeredBefore), not refused because the node is gone already.
   */
  private async atMetaLeader<T>(
    op: 'removeNode' | 'replaceNode' | 'resetPg',
    args: Record<string, unknown>,
    asLeader: (cid: MetaCommandId) => Promise<T>,
    cid = StorageNode.nextMetaCommandId(),
  ): Promise<T> {
    const deadline = Date.now() + removeNodeDeadlineMs;
    let attempt = 0;
    for (;;) {
      try {
        if (this.removed) throw new NodeRemoved(`node ${this.id} was removed from the cluster map; ask another node`);
        const g = this.host.groups.get(metadataGroupId);
        if (g && g.isLeader) return await asLeader(cid);
        const target = this.metaTarget(attempt);
        if (!target || target === this.id) throw new Unavailable('group 0 has no leader yet');
        return (await this.transport.request(String(target), op, { ...args, ...metaCommandIdFields(cid) }, removeNodeDeadlineMs)) as T;
      } catch (err) {
        const code = (err as RaftblockError).code;
        if (!['NOT_LEADER', 'UNAVAILABLE', 'TIMED_OUT'].includes(code) || Date.now() > deadline) throw err;
        attempt++;
        await sleep(jitteredMs(Math.min(50 * attempt, 500)));
      }
    }
  }

  /**
   * On group 0's leader. The node's data dir was lost: it must not be reachable (a live node
   * is never replaced: NODE_ALIVE); a member of group 0 leaves group 0 first (as in a
   * removal), since group 0 has no rebuild path (the plan adds a voter back once the new data
   * dir registers); then the map forgets its incarnation (replaceNode), so the next data dir
   * to register under the id is taken, and rebuilds every replica the id held from its leader.
   * (`id` is checked by both callers, as for removeNodeAsLeader.)
   */
  private async replaceNodeAsLeader(id: number, cid: MetaCommandId = StorageNode.nextMetaCommandId()): Promise<ReplaceNodeResponse> {
    this.metaLeaderGroup();
    const done = this.answeredBefore(cid);
    if (done) return { epoch: done.epoch, metaVoterRemoved: false, nodeId: id };
    if (!this.map().nodes.some((n) => n.id === id)) throw new NotFound(`node ${id} is not in the map`);
    if (id === this.id || this.transport.isConnected(String(id))) {
      throw new NodeAlive(`node ${id} is running and reachable: only a node whose data dir was lost is replaced (stop it first; to take it out for good, use node remove)`);
    }
    const r = await this.leaveMetaThenPropose(id, { type: 'replaceNode', id }, cid);
    this.log.warn('a node is being replaced: the next data dir to register under its id rebuilds its replicas', { nodeId: id, ...r });
    return { ...r, nodeId: id };
  }

  /** Group 0's replica here, which must lead it (else NotLeader, naming the leader if known). */
  private metaLeaderGroup(): Group {
    const g = this.host.groups.get(metadataGroupId);
    if (!g || !g.isLeader || !this.meta) throw new NotLeader(`node ${this.id} does not lead the metadata group`, g?.lead ? String(g.lead) : undefined);
    return g;
  }

  /**
   * The answer group 0 gave the map command `cid` if it applied it already (an earlier
   * attempt of this command committed, and its answer was lost), its refusal thrown; else
   * undefined. Asked before the map's own checks: the map and the remembered answers change
   * in the same apply, so a command whose effect the map shows has its answer here (while it
   * is among the last ids remembered), and one not applied yet is proposed again under its id.
   */
  private answeredBefore(cid: MetaCommandId): { epoch: number } | undefined {
    return this.meta?.answerOf(cid);
  }

  /** Takes node `id` out of group 0 if it is a member there, then runs `cmd` and spreads the map. */
  private async leaveMetaThenPropose(id: number, cmd: MapCommand, cid: MetaCommandId): Promise<{ epoch: number; metaVoterRemoved: boolean }> {
    const metaVoterRemoved = latestConfNames(this.metaLeaderGroup(), id);
    if (metaVoterRemoved) await this.removeMetaMember(id);
    const { epoch } = (await this.proposeMeta(cmd, cid)) as { epoch: number };
    await this.spreadMap(epoch);
    return { epoch, metaVoterRemoved };
  }

  /**
   * On group 0's leader. The node must be `out` and listed by no PG of the map (the same rule
   * the map's apply enforces: removeNodeRefusal), and no PG's Raft configuration may name it
   * as far as this leader can tell (every node it reaches lists its groups' configurations).
   * A member of group 0 leaves group 0 first, by one configuration change, refused if that
   * would leave group 0 without a quorum (MetaQuorumAtRisk); a leader to be removed hands its
   * leadership over first. Then the map command. A node removed already: NOT_FOUND. (`id` is
   * checked by both callers, with nodeIdArg.)
   */
  private async removeNodeAsLeader(id: number, cid: MetaCommandId = StorageNode.nextMetaCommandId()): Promise<RemoveNodeResponse> {
    this.metaLeaderGroup();
    // A retry whose first attempt removed it: that attempt's answer (it left group 0 then too,
    // if it was a member, which the answer does not record).
    const done = this.answeredBefore(cid);
    if (done) return { epoch: done.epoch, metaVoterRemoved: false, nodeId: id };
    const refusal = removeNodeRefusal(this.map(), id);
    if (refusal) throw refusal;
    const held = await this.groupsNamingEverywhere(id);
    if (held.length > 0) throw new NodeHoldsReplicas(describeHeldPgs(id, held.map((x) => this.pgName(x)), 'in their Raft configuration'), held);
    const r = await this.leaveMetaThenPropose(id, { type: 'removeNode', id }, cid);
    this.log.info('removed a node from the cluster map', { nodeId: id, ...r });
    // The removed node is in the map no more, so spreadMap skips it: tell it (best effort; a
    // node that does not hear it learns at its next start, when group 0 refuses it).
    if (this.transport.isConnected(String(id))) {
      await this.transport.request(String(id), 'mapAtLeast', { e: r.epoch }, spreadMapTimeoutMs).catch((err) => this.log.debug('removed node not told', { nodeId: id, err }));
    }
    return { ...r, nodeId: id };
  }

  /** `default/3` for a PG group id (the pool's name in this node's map). */
  private pgName(groupId: number): string {
    const { poolId, pgIndex } = pgOfGroup(groupId);
    const pool = this.map().pools.find((p) => p.id === poolId);
    return `${pool?.name ?? `pool ${poolId}`}/${pgIndex}`;
  }

  /** The PG groups run here whose latest Raft configuration names `id` (in any role). */
  private groupsNaming(id: number): number[] {
    const out: number[] = [];
    for (const g of this.host.groups.values()) {
      if (g.id !== metadataGroupId && latestConfNames(g, id)) out.push(g.id);
    }
    return out;
  }

  /**
   * groupsNaming on this node and on every node of the map it reaches, merged. A node still
   * connected that does not answer fails the whole listing (UNAVAILABLE, which the caller
   * retries): its silence is no evidence that none of its groups names `id`. One that is gone
   * (dead, partitioned away) is skipped: it leads nothing that can commit without the others.
   */
  private async groupsNamingEverywhere(id: number): Promise<number[]> {
    const asked = await this.askNodes([this.id, ...this.connectedNodes()], 'groupsNaming', { id }, () => this.groupsNaming(id));
    const silent: number[] = [];
    const groups = new Set<number>();
    for (const [peer, a] of asked) {
      if ('error' in a) {
        this.log.debug('a node did not list its PG configurations', { nodeId: peer, err: a.error });
        if (peer !== id && this.transport.isConnected(String(peer))) silent.push(peer);
      } else if (Array.isArray(a.answer)) {
        for (const x of a.answer as unknown[]) if (Number.isSafeInteger(x)) groups.add(x as number);
      }
    }
    if (silent.length > 0) throw new Unavailable(`node ${silent.join(', ')} did not list its PG configurations in time`);
    return [...groups].sort((a, b) => a - b);
  }

  /**
   * Asks each of `nodes` the peer request `op` at once (a dead node costs one timeout, not one
   * per node); this node, if among them, answers through `local` instead. Each node's answer,
   * or the error its request failed with (unreachable, timed out, refused).
   */
  private async askNodes(nodes: readonly number[], op: string, args: Record<string, unknown>, local: () => unknown): Promise<Map<number, { answer: unknown } | { error: unknown }>> {
    const settled = await Promise.allSettled(nodes.map(async (id) => (id === this.id ? local() : this.transport.request(String(id), op, args, groupsListingTimeoutMs))));
    const out = new Map<number, { answer: unknown } | { error: unknown }>();
    nodes.forEach((id, i) => {
      const s = settled[i];
      out.set(id, s.status === 'fulfilled' ? { answer: s.value } : { error: s.reason as unknown });
    });
    return out;
  }

  /** Removes `id` from group 0's configuration (this node leads it) and waits until that commits. */
  private async removeMetaMember(id: number): Promise<void> {
    const g = this.host.groups.get(metadataGroupId);
    if (!g || !g.isLeader) throw new NotLeader(`node ${this.id} does not lead the metadata group`, g?.lead ? String(g.lead) : undefined);
    const st = g.raft.status();
    if (isJoint(st.confState) || confUncommitted(g.raft, st.confState)) {
      throw new Unavailable('a metadata group membership change is in flight; retrying');
    }
    const check = checkMetaRemoval(
      {
        self: this.id,
        conf: st.confState,
        changePending: false,
        connected: this.connectedNodes(),
        progress: st.progress ?? new Map(),
        commitIndex: st.hardState.commit,
        // A leader elected moments ago (as by the handover below, on the node asked before)
        // judges by an incomplete view: its verdict is retried, not answered.
        leaderAge: { ticksLed: this.host.ticksLed(g), electionTicks: this.host.electionTicks },
      },
      id,
    );
    if (!check.ok) {
      if (check.transferTo === undefined) throw check.settled ? new MetaQuorumAtRisk(check.reason) : new Unavailable(`${check.reason}: retrying`);
      this.log.info('handing the metadata group leadership over before leaving it', { to: check.transferTo });
      if (st.leadTransferee === 0) g.raft.transferLeader(check.transferTo);
      throw new Unavailable(check.reason);
    }
    this.host.proposeConfChange(metadataGroupId, { changes: [{ type: 'removeNode', nodeId: id }] });
    this.log.info('removing a metadata group member', { nodeId: id, voters: st.confState.voters });
    const deadline = Date.now() + metaChangeCommitTimeoutMs;
    while (allMembers(g.raft.confStateAt(g.raft.committed)).includes(id)) {
      if (!g.isLeader) throw new NotLeader(`node ${this.id} lost the metadata group leadership`, g.lead ? String(g.lead) : undefined);
      if (Date.now() > deadline) throw new TimedOut(`removing node ${id} from the metadata group did not commit within ${metaChangeCommitTimeoutMs} ms`);
      await sleep(20);
    }
  }

  /** The map's nodes this node's transport is connected to now. */
  private connectedNodes(): Set<number> {
    return new Set(this.map().nodes.filter((n) => n.id !== this.id && this.transport.isConnected(String(n.id))).map((n) => n.id));
  }

  /** This process's map command ids (see common/request-id.ts). */
  private static readonly metaCommandIds = new RequestIdSource();

  /** A new id for a map command started on this node (see MetaCommandId). */
  private static nextMetaCommandId(): MetaCommandId {
    return StorageNode.metaCommandIds.next();
  }

  /**
   * Runs a map command in group 0: here if this node leads it, else at its leader. Every
   * attempt carries the same id (`id`: made here, unless a peer forwarding the command gave
   * one), so group 0 applies the command once however many attempts commit, and answers a
   * retry whose first attempt committed (its answer lost) with that attempt's answer.
   */
  async proposeMeta(cmd: MapCommand, id: MetaCommandId = StorageNode.nextMetaCommandId()): Promise<unknown> {
    const deadline = Date.now() + metaCommandDeadlineMs;
    let attempt = 0;
    for (;;) {
      try {
        const g = this.host.groups.get(metadataGroupId);
        if (g && g.isLeader) return await this.host.propose(metadataGroupId, encodeCommand(cmd, id));
        const target = this.metaTarget(attempt);
        if (!target || target === this.id) throw new Unavailable('group 0 has no leader yet');
        return await this.transport.request(String(target), 'meta', { cmd, ...metaCommandIdFields(id) }, requestTimeoutMs);
      } catch (err) {
        const code = (err as RaftblockError).code;
        if (!['NOT_LEADER', 'UNAVAILABLE', 'TIMED_OUT'].includes(code) || Date.now() > deadline) throw err;
        attempt++;
        await sleep(jitteredMs(Math.min(20 * attempt, 300)));
      }
    }
  }

  /**
   * Where to send a group-0 command: the leader this node's group-0 replica knows of, if this
   * node is a member (a replica that group 0 replaced hears from no leader any more: the one it
   * knew may be long gone); else a node that may run group 0, in id order (the group grows in
   * id order), each of which forwards further.
   */
  private metaTarget(attempt: number): number | undefined {
    const g = this.host.groups.get(metadataGroupId);
    if (g && g.lead && this.metaGroupNames(this.id)) return g.lead;
    const candidates = this.map().nodes.filter((n) => n.id !== this.id);
    return candidates.length ? candidates[attempt % candidates.length].id : undefined;
  }

  // ---------------------------------------------------------------------------------------
  // Requests from peers

  private async serve(from: string, epoch: number, op: string, args: unknown, joining = false): Promise<unknown> {
    // A joining node's id is only a claim (and it has no map to give).
    if (epoch > this.epoch && !joining) void this.fetchMapFrom(from);
    const a = (args ?? {}) as Record<string, unknown>;
    const known = op as PeerRequestOp;
    switch (known) {
      case 'io': {
        const g = pgGroupArg(a.g, op);
        const q = checkPgRequest(a.q);
        if (!this.mapCaughtUp) throw new Unavailable(`node ${this.id} is catching up with the cluster map`);
        this.fence(g, epoch);
        this.affinity.note(g, Number(from));
        return this.serveLocal(g, q, epoch);
      }
      case 'lead': {
        // Advisory, for gateways without a replica (RemoteLeaderWatch): whom this replica follows.
        const g = pgGroupArg(a.g, op);
        return { lead: this.host.groups.get(g)?.lead ?? 0 };
      }
      case 'join': {
        // Open to a node that has no cluster id yet (transport.ts): registering itself is all it may do.
        const cmd = a.cmd as MapCommand | undefined;
        if (cmd?.type !== 'addNode') throw new InvalidArgument('join: the command must be addNode');
        // Such a node cannot take over a member's id (the map refuses other addresses for it);
        // a member that has the cluster id re-registers, possibly from new addresses.
        const { newNode: _claimed, member, ...rest } = cmd;
        // Under the id the joining node fixed, if it sent one (else one is made here).
        await this.proposeMeta(joining ? { ...rest, newNode: true } : { ...rest, ...(member === true ? { member } : {}) }, metaCommandIdFromFields(a));
        // The joining node's cluster id comes from here: this node's own, which its transport enforces.
        return { map: encodeMap(this.map()), clusterId: this.clusterId || undefined };
      }
      case 'meta':
        this.fenceNonMember(from, epoch, op);
        // The id its sender fixed (a peer from before ids sends none: one is made here).
        return this.proposeMeta(mapCommandArg(a.cmd, op), metaCommandIdFromFields(a));
      case 'removeNode':
        this.fenceNonMember(from, epoch, op);
        return this.removeNodeAsLeader(nodeIdArg(a.id, op), metaCommandIdFromFields(a));
      case 'replaceNode':
        this.fenceNonMember(from, epoch, op);
        return this.replaceNodeAsLeader(nodeIdArg(a.id, op), metaCommandIdFromFields(a));
      case 'resetPg':
        this.fenceNonMember(from, epoch, op);
        if (typeof a.pool !== 'string') throw new InvalidArgument('resetPg: the pool must be a name');
        return this.resetPgAsLeader(a.pool, indexArg(a.pg, 'resetPg: bad PG index'), metaCommandIdFromFields(a) ?? StorageNode.nextMetaCommandId());
      case 'pgReplicaState':
        return this.pgMover.replicaState(pgGroupArg(a.g, op));
      case 'groupsNaming':
        return this.groupsNaming(nodeIdArg(a.id, op));
      case 'pgConf':
        return this.pgMover.describe(pgGroupArg(a.g, op));
      case 'pgCompact': {
        const g = pgGroupArg(a.g, op);
        return this.pgMover.compactFor(g, indexArg(a.atLeast, 'pgCompact: bad index'));
      }
      case 'pgRebuildCheck': {
        // Asked by a replica about to be rebuilt (rebuildReplica): the asking node is the one.
        return this.pgMover.rebuildCheck(pgGroupArg(a.g, op), Number(from));
      }
      case 'pgRepairPoint': {
        // A replica whose WAL needs repair rebuilds from this leader's snapshot (host.ts repair).
        const g = pgGroupArg(a.g, op);
        const askedIndex = indexArg(a.atLeast, 'pgRepairPoint: bad index');
        const group = this.host.groups.get(g);
        if (!group || !group.isLeader) throw new NotLeader(`node ${this.id} does not lead group ${g}`);
        // The asking replica is about to drop its log: what it acknowledged must stop counting
        // before the point is chosen, or an entry it acknowledged could commit later (when this
        // leader's own append becomes durable) on this leader's copy alone. Its acknowledgements
        // travel on this same connection ahead of this request, so all of them are counted
        // (and reflected in the commit index below) or forgotten.
        group.raft.forgetMatch(Number(from));
        this.pgMover.repairPointServed(g, Number(from));
        // Still the leader, confirmed by a quorum (or its lease), before its term is handed
        // out: the asking replica takes this term (its own may be lost with its log), and a
        // deposed leader's older one would let it help that leader commit in a term a newer
        // leader has already committed other entries after.
        const leaderTerm = group.term;
        await this.host.readBarrier(g);
        const atLeast = Math.max(askedIndex, group.commit, group.raft.committed);
        await this.pgMover.compactFor(g, atLeast);
        const md = group.storage.snapshot().metadata;
        if (md.index < atLeast) throw new Unavailable(`group ${g}: snapshot at ${md.index}, not yet at ${atLeast}`);
        if (!group.isLeader || group.term !== leaderTerm) throw new NotLeader(`node ${this.id} no longer leads group ${g} in term ${leaderTerm}`);
        const point: RepairPoint = { index: md.index, term: md.term, confState: md.confState, leaderTerm };
        return point;
      }
      case 'ping':
        // Whether this node runs: asked by group 0's leader (down-out-runner.ts) and by a
        // peer's transport keeping a quiet connection alive.
        return {};
      case 'pingNode': {
        // Group 0's leader, about to mark a node out, asks whether this node reaches it.
        const id = nodeIdArg(a.id, op);
        this.fenceNonMember(from, epoch, op);
        return { answered: id === this.id || (this.map().nodes.some((n) => n.id === id) && (await this.transport.ping(String(id), downOutProbeTimeoutMs))) };
      }
      case 'getMap':
        return { map: encodeMap(this.map()) };
      case 'mapAtLeast': {
        // The sender is about to discard data past a volume's end (see discardPastEnd).
        const e = indexArg(a.e, 'mapAtLeast: bad epoch');
        for (let i = 0; i < 50 && this.epoch < e && !this.stopping; i++) {
          await this.fetchMapFrom(from);
          if (this.epoch < e) await sleep(40);
        }
        return { epoch: this.epoch };
      }
      case 'snapshotChunk': {
        const g = pgGroupArg(a.g, op);
        const store = this.stores.get(g);
        if (!store) throw new Unavailable(`group ${g} is not on this node`);
        const cursor = imageCursorArg(a.c);
        if (cursor === null) await this.storeOps.requireImage(g, Number(from));
        // The first chunk is refused unless this store has applied up to the snapshot's index,
        // a later one unless this store still holds the state the first was read from.
        return store.imageChunk(cursor, snapshotChunkBytes, snapshotIndexArg(a.atLeast), imageIdArg(a.img));
      }
      case 'snapshot': {
        const g = groupArg(a.g, op);
        const store = this.stores.get(g);
        if (store) {
          await this.storeOps.requireImage(g, Number(from));
          return store.snapshotImage(snapshotIndexArg(a.atLeast));
        }
        if (g === metadataGroupId && this.meta) return this.meta.snapshotImage();
        throw new Unavailable(`group ${g} is not on this node`);
      }
      default: {
        // Reached only by an op not in peerRequestOps: `known` is `never` here while every
        // listed op has its case.
        const unlisted: never = known;
        throw new InvalidArgument(`unknown request ${String(unlisted)}`);
      }
    }
  }

  /**
   * Fencing of Raft messages: a malformed message, or one whose `from` is not the frame's
   * sender, is dropped (raft-message-check.ts); so is a PG message from a node that is not one
   * of the PG's replicas in this node's map (a removed or misplaced member). Group 0's membership lives in
   * its own log, and a sender with a newer map is given the benefit of the doubt until this
   * node has fetched it (Raft resends).
   */
  private fenceMessages(from: number, epoch: number, msgs: { g: number; m: unknown }[]): { g: number; m: unknown }[] {
    const newerMap = epoch > this.epoch;
    const map = this.map();
    let out: { g: number; m: unknown }[] | undefined;
    let malformed = 0;
    for (let i = 0; i < msgs.length; i++) {
      const g = msgs[i].g;
      // Malformed input (or a node speaking for another) never reaches the core.
      let ok = Number.isSafeInteger(g) && (g === metadataGroupId || g >= maxPgsPerPool) && isWellFormedMessage(msgs[i].m, from, this.id);
      if (!ok) malformed++;
      else if (g === metadataGroupId && !newerMap) {
        // Group 0's membership lives in its own log, but its members are nodes of the map: a
        // removed node (out of the map, and out of group 0's configuration as known here) is
        // heard no more, nor does it make a node start a group-0 replica.
        ok = map.nodes.some((n) => n.id === from) || this.metaGroupNames(from);
      } else if (g !== metadataGroupId && !newerMap) {
        const { poolId, pgIndex } = pgOfGroup(g);
        const replicas = map.pools.find((p) => p.id === poolId)?.pgs[pgIndex]?.replicas;
        // A member of a moving PG's configuration still counts until its removal commits.
        ok = replicas === undefined || replicas.includes(from) || this.pgMover.acceptsFrom(g, from);
      }
      if (!ok && out === undefined) out = msgs.slice(0, i);
      else if (ok && out !== undefined) out.push(msgs[i]);
    }
    if (out !== undefined) {
      if (malformed > 0) this.malformedMessages.inc(malformed);
      if (msgs.length - out.length > malformed) this.fencedMessages.inc(msgs.length - out.length - malformed);
    }
    return out ?? msgs;
  }

  /**
   * Refuses a map change from a node that this node's map does not list, unless its map is
   * newer (it may have just joined): a removed node changes nothing. (A removed node's gateway
   * stops by itself, see onRemoved; forwarded I/O is fenced by epoch and volume, not by sender.)
   */
  private fenceNonMember(from: string, epoch: number, op: string): void {
    if (epoch > this.epoch) return;
    const id = Number(from);
    if (!this.map().nodes.some((n) => n.id === id)) throw new NodeRemoved(`${op} from node ${from} refused: it is not in the cluster map (epoch ${this.epoch})`);
  }

  /** Whether group 0's latest configuration on this node names `id`. */
  private metaGroupNames(id: number): boolean {
    const g = this.host.groups.get(metadataGroupId);
    return g !== undefined && latestConfNames(g, id);
  }

  /** Refuses a forwarded request routed with a map older than this PG's replica set. */
  private fence(groupId: number, epoch: number): void {
    if (epoch >= this.epoch) return;
    const { poolId, pgIndex } = pgOfGroup(groupId);
    const pool = this.map().pools.find((p) => p.id === poolId);
    const since = pool?.pgs[pgIndex]?.sinceEpoch ?? 0;
    if (since > epoch) throw new StaleEpoch(`group ${groupId} moved at epoch ${since}; request routed at epoch ${epoch}`);
  }

  /**
   * Fencing by volume: a request must name a volume of this node's map and stay inside it. A
   * deleted volume is refused (every replica is dropping its data, and a write must not bring
   * it back): STALE_EPOCH to a sender with an older map, so that it learns the delete, else
   * NOT_FOUND. A volume newer than this node's map waits until the map arrives (STALE_EPOCH,
   * retried). A range past the end is OUT_OF_RANGE (the volume shrank), or UNAVAILABLE, retried,
   * while the sender's map is newer (it may have grown).
   */
  private fenceVolume(req: PgRequest, senderEpoch: number): void {
    const map = this.map();
    const v = volumeWithId(map, req.v);
    if (v) {
      if (req.k === 'discardFrom' || (req.k === 'trim' && req.pastEnd === true)) {
        // A shrink's discard (or a trim past the end from a node of the build before discards,
        // mid rolling upgrade; see PgRequest): served only with the map that shrank the volume
        // (whose leader then refuses writes there), and never inside the volume (it grew meanwhile).
        if (map.epoch < senderEpoch) throw new Unavailable(`node ${this.id} is fetching map epoch ${senderEpoch} before discarding past the end of volume ${v.name}`);
        if (req.o < v.sizeBytes) throw new InvalidArgument(`discard at ${req.o} is inside volume ${v.name} (${v.sizeBytes} bytes at epoch ${map.epoch})`);
        return;
      }
      const length = req.k === 'write' ? req.d.byteLength : req.l;
      if (req.o + length > v.sizeBytes) {
        // The sender's newer map may have grown the volume: retried once this node has it (serve fetches it).
        if (senderEpoch > map.epoch) throw new Unavailable(`node ${this.id} is fetching map epoch ${senderEpoch}: volume ${v.name} is ${v.sizeBytes} bytes at epoch ${map.epoch}`);
        throw new OutOfRange(`range ${req.o}+${length} beyond volume ${v.name} (${v.sizeBytes} bytes at epoch ${map.epoch})`);
      }
      return;
    }
    if (req.v >= map.nextVolumeId) throw new StaleEpoch(`volume ${req.v} is newer than the map of node ${this.id} (epoch ${map.epoch})`);
    if (senderEpoch < map.epoch) throw new StaleEpoch(`volume ${req.v} was deleted by epoch ${map.epoch}; request routed at epoch ${senderEpoch}`);
    throw new NotFound(`volume ${req.v} was deleted`);
  }

  /** This node's store command level (ops.ts StoreOpsLevel), as its frames tell its peers. */
  private get storeOpsLevel(): number {
    return this.opts.storeOpsLevel ?? storeOpsLevel;
  }

  /** Serves a PG request on this node, which must lead the PG. */
  private async serveLocal(groupId: number, req: PgRequest, senderEpoch = this.epoch): Promise<unknown> {
    const store = this.stores.get(groupId);
    const g = this.host.groups.get(groupId);
    if (!store || !g) throw new NotLeader(`group ${groupId} is not on node ${this.id}`);
    this.fenceVolume(req, senderEpoch);
    if (!g.isLeader) throw new NotLeader(`node ${this.id} does not lead group ${groupId}`, g.lead ? String(g.lead) : undefined);
    this.storeOps.requireForRequest(groupId, g.raft, req);
    switch (req.k) {
      case 'write':
        return this.proposeMutation(groupId, store, req, encodeWrite(req.v, req.o, req.d, { session: req.s, seq: req.q }), 'write');
      case 'trim': {
        // A shrink's trim from a node of the build before discards names no request id: one is
        // given here, so that a replay after an image install skips it as it skips the writes
        // after it (ops.ts, discard-from, says why a keyless one cut them).
        const id = req.pastEnd === true && req.s === 0 && req.q === 0 ? nextRequestId() : { s: req.s, q: req.q };
        return this.proposeMutation(groupId, store, req, encodeRange(OpKind.Trim, req.v, req.o, req.l, { session: id.s, seq: id.q }), 'trim');
      }
      case 'zero':
        return this.proposeMutation(groupId, store, req, encodeRange(OpKind.Zero, req.v, req.o, req.l, { session: req.s, seq: req.q }), 'zero');
      case 'zeroNoHole':
        return this.proposeMutation(groupId, store, req, encodeRange(OpKind.ZeroNoHole, req.v, req.o, req.l, { session: req.s, seq: req.q }), 'zero');
      case 'discardFrom':
        // Fenced above: only past the volume's end, with a map at least the sender's.
        return this.proposeMutation(groupId, store, req, encodeDiscardFrom(req.v, req.o, { session: req.s, seq: req.q }), 'discard');
      case 'read': {
        if (req.l > maxPieceBytes) throw new InvalidArgument(`read piece of ${req.l} bytes`);
        await this.host.readBarrier(groupId);
        const out = Buffer.allocUnsafe(req.l);
        await store.read(req.v, req.o, req.l, out);
        return out;
      }
      case 'status':
        await this.host.readBarrier(groupId);
        return store.blockStatus(req.v, req.o, req.l);
      case 'nextData':
        // As fresh as a block status: a write completed before the request began is seen.
        await this.host.readBarrier(groupId);
        return store.nextData(req.v, req.o, req.l);
      default:
        throw new InvalidArgument('unknown PG request');
    }
  }

  /**
   * Proposes a PG mutation on this leader; answers its entry's log index once committed. A
   * retry (`nb` set) is refused unless the PG's dedupe window is sure to recognise its first
   * attempt if that applied, even after every entry now ahead of it in the log applies: the
   * judgement and the proposal happen in one synchronous step, so no entry slips in between.
   */
  private async proposeMutation(groupId: number, store: PgStore, req: PgMutation, data: Uint8Array, what: string): Promise<number> {
    const group = this.host.groups.get(groupId);
    if (req.nb !== undefined && group && !store.coversRetry(req.nb, group.raft.lastIndex)) {
      throw new RetryWindowPassed(
        `group ${groupId}: a retried request first sent at log index ${req.nb} may have applied and left the dedupe window ` +
          `(applied ${store.appliedIndex}, log ${group.raft.lastIndex}); applying it again could undo later writes`,
      );
    }
    const { index, settled } = this.host.proposeIndexed(groupId, data, requestTimeoutMs, what);
    // Refused before it reached the log (index 0): nothing to deduplicate, the error as it is.
    if (index === 0) return settled.then(() => index);
    try {
      await settled;
    } catch (err) {
      // In the log, not known committed: a retry must be deduplicated against this entry.
      const e = err as RaftblockError & { leaderHint?: string };
      throw new OutcomeUnknown(`group ${groupId}: ${what} at log index ${index}: ${e.message}`, e.leaderHint ?? (group?.lead ? String(group.lead) : undefined), { cause: err });
    }
    return index;
  }

  /**
   * PgClient: routes a piece to its PG's leader, retrying until it succeeds, the deadline
   * passes, or `signal` says its NBD client is gone (an attempt in flight then still ends on
   * its own; no new one starts).
   */
  async call(groupId: number, splitReplicas: number[], req: PgRequest, signal?: AbortSignal): Promise<unknown> {
    let replicas = splitReplicas;
    const deadline = Date.now() + ioDeadlineMs;
    let attempt = 0;
    if (this.removed) throw new NodeRemoved(`node ${this.id} was removed from the cluster map: it serves no I/O`);
    while (!this.mapCaughtUp) {
      if (Date.now() > deadline || this.stopping) throw new Unavailable(`node ${this.id} has not caught up with the cluster map`);
      this.giveUpIfGone(signal);
      await sleep(20, signal);
    }
    let target = this.leaderGuess(groupId, replicas);
    const mutation = !isPgRead(req);
    let sent: PgRequest = req;
    for (;;) {
      // An index of the PG's log known before this attempt leaves (see PgRequest's `nb`).
      const knownBefore = mutation ? this.knownLogIndex(groupId) : 0;
      try {
        if (target === this.id) this.affinity.note(groupId, this.id);
        const r = target === this.id ? await this.serveLocal(groupId, sent) : await this.forward(target, groupId, sent, replicas);
        this.leaderCache.set(groupId, target);
        if (mutation && typeof r === 'number') this.notePgLogIndex(groupId, r);
        return r;
      } catch (err) {
        const e = err as RaftblockError & { leaderHint?: string };
        // The first attempt that may be in the PG's log fixes the index every retry carries:
        // a refusal before proposing (answered, any code but OUTCOME_UNKNOWN) put nothing there;
        // an unknown outcome, or no answer at all from a peer, may have.
        if (mutation && !('nb' in sent && sent.nb !== undefined) && (e.code === 'OUTCOME_UNKNOWN' || (target !== this.id && !isAnsweredError(err)))) {
          sent = { ...(req as PgMutation), nb: knownBefore };
        }
        const retriable = ['NOT_LEADER', 'OUTCOME_UNKNOWN', 'UNAVAILABLE', 'TIMED_OUT', 'STALE_EPOCH', 'PROTOCOL_ERROR'].includes(e.code);
        if (!retriable || Date.now() > deadline || this.stopping) throw err instanceof RaftblockError ? err : new Unavailable(String(err));
        this.giveUpIfGone(signal);
        attempt++;
        this.gatewayMetrics.retries.inc();
        // The PG may have moved since the request was split: route by the map as it is now.
        replicas = targetOf(this.map(), groupId) ?? replicas;
        const hint = (e.code === 'NOT_LEADER' || e.code === 'OUTCOME_UNKNOWN') && e.leaderHint ? Number(e.leaderHint) : 0;
        // A hint may name a replica the map has moved the PG away from, still leading it until
        // the move completes; any member of the cluster is worth asking.
        if (hint && hint !== target && this.map().nodes.some((n) => n.id === hint)) {
          target = hint;
          continue;
        }
        if (e.code === 'STALE_EPOCH') {
          await this.fetchMapFrom(String(target));
          const map = this.map();
          if (req.v < map.nextVolumeId && !map.volumes.some((v) => v.id === req.v)) throw new NotFound(`volume ${req.v} was deleted`);
          replicas = targetOf(map, groupId) ?? replicas;
        }
        const idx = replicas.indexOf(target);
        const local = this.host.groups.get(groupId);
        target = local && local.lead ? local.lead : replicas[(idx + 1) % replicas.length];
        this.leaderCache.delete(groupId);
        await sleep(jitteredMs(Math.min(10 * 2 ** Math.min(attempt, 6), 300)), signal);
        // Woken by the abort: no further attempt.
        this.giveUpIfGone(signal);
      }
    }
  }

  /**
   * A lower bound of where the PG's log will put this node's next proposal: the highest index
   * a mutation's answer gave (see proposeMutation) or this node's replica has seen committed.
   * Every later entry of the PG comes after either, since each leader's log holds every
   * committed entry.
   */
  private knownLogIndex(groupId: number): number {
    const seen = this.pgLogIndexSeen.get(groupId);
    // A reset PG starts a new log: indexes seen before mean nothing there.
    const seenIndex = seen !== undefined && seen.resetEpoch === this.pgResetEpoch(groupId) ? seen.index : 0;
    return Math.max(seenIndex, this.host.groups.get(groupId)?.raft.committed ?? 0);
  }

  private notePgLogIndex(groupId: number, index: number): void {
    const resetEpoch = this.pgResetEpoch(groupId);
    const seen = this.pgLogIndexSeen.get(groupId);
    if (seen === undefined || seen.resetEpoch !== resetEpoch) this.pgLogIndexSeen.set(groupId, { index, resetEpoch });
    else if (index > seen.index) seen.index = index;
  }

  private pgResetEpoch(groupId: number): number {
    const { poolId, pgIndex } = pgOfGroup(groupId);
    return this.map().pools.find((p) => p.id === poolId)?.pgs[pgIndex]?.resetEpoch ?? 0;
  }

  /**
   * Sends a piece to the PG leader on node `target`. Abandoned when the group's leader is seen
   * to change (the target may be cut off, or frozen, and never answer): by this node's replica
   * of the group, or, on a node without one, by the group's other replicas when asked
   * (RemoteLeaderWatch). The caller retries at the new leader, and the request id keeps a
   * write that did land from applying twice.
   */
  private forward(target: number, groupId: number, req: PgRequest, replicas: readonly number[]): Promise<unknown> {
    const local = this.host.groups.get(groupId);
    const args = { g: groupId, q: req };
    if (local) {
      return this.transport.request(String(target), 'io', args, requestTimeoutMs, local.leadChanged, () => new NotLeader(`group ${groupId}: its leader changed while a request to node ${target} was in flight`));
    }
    const ticket = this.remoteLeaders.watch(groupId, target, replicas);
    const replaced = (): Error => {
      this.gatewayMetrics.leaderProbeRedirects.inc();
      return new NotLeader(`group ${groupId}: its replicas follow node ${ticket.replacedBy} now; node ${target} has not answered`, String(ticket.replacedBy));
    };
    const answer = this.transport.request(String(target), 'io', args, requestTimeoutMs, ticket.signal, replaced);
    answer.then(ticket.release, ticket.release);
    return answer;
  }

  /** The node `peer` follows as leader of `group` (0: none known there). */
  private async probeLeader(group: number, peer: number): Promise<number> {
    const r = (await this.transport.request(String(peer), 'lead', { g: group }, leaderProbeTimeoutMs)) as { lead?: unknown } | undefined;
    const lead = r?.lead;
    return typeof lead === 'number' && Number.isSafeInteger(lead) && lead >= 0 ? lead : 0;
  }

  /** Ends an affinity round: hands PGs to the node whose gateway sends them their I/O. */
  private followIo(): void {
    if (this.stopping || !this.mapCaughtUp) return;
    const map = this.map();
    for (const h of this.affinity.round(performance.now(), this.id, (group, to) => this.mayHandOver(group, to, map))) {
      const g = this.host.groups.get(h.group);
      if (!g) continue;
      this.log.info('PG leadership follows its I/O', { group: h.group, to: h.to });
      this.leaderHandovers.inc();
      g.raft.transferLeader(h.to);
    }
  }

  /** A PG this node leads, whose voter `to` may take the leadership (leader-affinity.ts mayHandOver). */
  private mayHandOver(group: number, to: number, map: ClusterMap): boolean {
    const g = this.host.groups.get(group);
    if (!g || !g.isLeader || group === metadataGroupId) return false;
    const { poolId, pgIndex } = pgOfGroup(group);
    const pg = map.pools.find((p) => p.id === poolId)?.pgs[pgIndex];
    if (!pg) return false;
    const st = g.raft.status();
    return mayHandOver({
      to,
      wanted: pg.replicas,
      conf: st.confState,
      leadTransferee: st.leadTransferee,
      progress: st.progress ?? new Map(),
      lastIndex: st.lastIndex,
      askedToRebuild: this.pgMover.askedToRebuildLately(group, to),
      connected: this.transport.isConnected(String(to)),
    });
  }

  private giveUpIfGone(signal: AbortSignal | undefined): void {
    if (!signal?.aborted) return;
    const cause = abandonCause(signal);
    this.gatewayMetrics.abandoned.inc({ cause });
    throw cause === 'scan_over' ? (signal.reason as HoleScanOver) : new Unavailable('the NBD client disconnected: request abandoned');
  }

  private leaderGuess(groupId: number, replicas: number[]): number {
    const local = this.host.groups.get(groupId);
    if (local && local.lead) return local.lead;
    return this.leaderCache.get(groupId) ?? replicas[0];
  }

  // ---------------------------------------------------------------------------------------
  // Volume resize (admin API)

  /**
   * Resizes a volume. A shrink discards [new size, old size) on every replica through the PG
   * logs (one discard-from command per PG), so that growing the volume again reads zeros there. The map
   * shrinks first (from then on no up-to-date leader accepts a write there), and remembers the
   * range (`discardToBytes`) until the discard is done: a discard cut short (a PG without a
   * leader, this node stopped) is finished by running the command again, and the volume cannot
   * grow before (the map refuses it; this handler finishes a pending discard before a grow).
   */
  async resizeVolume(name: string, sizeBytes: number, allowShrink: boolean, cid?: MetaCommandId): Promise<{ epoch: number; volume: Volume }> {
    const before = this.map().volumes.find((v) => v.name === name);
    if (before && allowShrink && sizeBytes < before.sizeBytes) await this.storeOps.requireDiscardEverywhere(before, requestTimeoutMs);
    if (before && (before.discardToBytes ?? 0) > before.sizeBytes && sizeBytes >= before.sizeBytes) await this.discardWithAdvice(before);
    const r = (await this.proposeMeta({ type: 'resizeVolume', name, sizeBytes, allowShrink }, cid)) as { epoch: number; volume: Volume };
    if ((r.volume.discardToBytes ?? 0) > r.volume.sizeBytes) return this.discardWithAdvice(r.volume);
    return r;
  }

  private async discardWithAdvice(v: Volume): Promise<{ epoch: number; volume: Volume }> {
    try {
      return await this.discardPastEnd(v);
    } catch (err) {
      if ((err as RaftblockError).code === 'NOT_FOUND') throw err;
      throw new Unavailable(
        `volume ${v.name} is ${v.sizeBytes} bytes, but discarding its old data up to ${v.discardToBytes} bytes did not finish on every replica ` +
          `(${(err as Error).message}); run the same resize command again to finish it (nothing is lost by repeating it)`,
      );
    }
  }

  /** Max discard commands (one per PG) in flight for one shrink. */
  private static readonly discardConcurrency = 16;

  /** Every reachable node holds a map of at least `epoch` (throws Unavailable otherwise). */
  private async mapAtLeastEverywhere(epoch: number, timeoutMs: number): Promise<void> {
    await Promise.all(
      this.map()
        .nodes.filter((n) => n.id !== this.id && this.transport.isConnected(String(n.id)))
        .map(async (n) => {
          const r = (await this.transport.request(String(n.id), 'mapAtLeast', { e: epoch }, timeoutMs)) as { epoch: number };
          if (r.epoch < epoch) throw new Unavailable(`node ${n.id} still has map epoch ${r.epoch}, not ${epoch}`);
        }),
    );
  }

  /** AdminSource: best effort, a stalled or cut-off node must not hold up an admin command. */
  async spreadMap(epoch: number): Promise<void> {
    await this.mapAtLeastEverywhere(epoch, spreadMapTimeoutMs).catch((err) => this.log.debug('map not yet everywhere', { epoch, err }));
  }

  /**
   * Discards [sizeBytes, discardToBytes) of `v`, through each PG's leader and log, then clears
   * the range in the map: ONE command per PG that may hold an extent of the range (every PG of
   * the pool for a large one), making every byte of the volume at or past the new end that the
   * PG holds a hole (ops.ts DiscardFrom), so its cost is the PG count, not the range's extents
   * (a 1 PiB volume shrunk to 1 GiB has 2^28 extents of 4 MiB). Each carries a request id, as
   * a client's mutation does (ops.ts says why).
   */
  private async discardPastEnd(v: Volume): Promise<{ epoch: number; volume: Volume }> {
    const from = v.sizeBytes;
    const to = v.discardToBytes ?? from;
    const map = this.map();
    // Every reachable node learns the map that shrank the volume before anything is trimmed:
    // a replica still holding an older map could otherwise become a PG leader and accept a
    // write past the new end, from a gateway with an older map too, after the trim.
    await this.mapAtLeastEverywhere(map.epoch, requestTimeoutMs);
    const pgs = pgsOfRange(map, v, from, to);
    await Promise.all(inLanes(pgs, StorageNode.discardConcurrency, (pg) => this.call(pg.groupId, pg.replicas, { k: 'discardFrom', v: v.id, o: from, ...nextRequestId() })));
    this.log.info('discarded the data past the end of a shrunk volume', { volume: v.name, from, to, pgs: pgs.length });
    return (await this.proposeMeta({ type: 'volumeDiscarded', name: v.name, sizeBytes: from, discardToBytes: to })) as { epoch: number; volume: Volume };
  }

  // ---------------------------------------------------------------------------------------
  // Status (admin API)

  status(): NodeStatus {
    const groups: GroupStatus[] = [...this.host.groups.values()]
      .map((g) => {
        const latest = g.raft.confStateAt(Number.MAX_SAFE_INTEGER);
        const conf = configurationOf(latest);
        const pending = isJoint(latest) || (g.id === metadataGroupId && confUncommittedIfKnown(g.raft, latest));
        return {
          groupId: g.id,
          // A replica catching up during a move says so.
          role: (conf.learners?.includes(this.id) ? 'learner' : g.role) as GroupRole,
          term: g.term,
          leader: g.lead,
          commitIndex: g.commit,
          appliedIndex: g.sm.appliedIndex,
          lastIndex: g.storage.lastIndex(),
          ...conf,
          configurationPending: pending || undefined,
          needsRepair: this.wal.needsRepair(g.id) || g.repairing || undefined,
          moveHeld: g.isLeader ? this.pgMover.moveHeldReason(g.id) : undefined,
        };
      })
      .sort((x, y) => x.groupId - y.groupId);
    if (this.metaHeld && !this.host.groups.has(metadataGroupId)) {
      // A group-0 replica held out (openMetaGroup: it needs repair) runs nothing, but its
      // node still answers: say so, so that status names it instead of calling it unreachable.
      groups.unshift({ groupId: metadataGroupId, role: 'follower', term: 0, leader: 0, commitIndex: 0, appliedIndex: 0, lastIndex: 0, voters: [], needsRepair: true });
    }
    return {
      nodeId: this.id,
      clusterId: this.clusterId || undefined,
      epoch: this.epoch,
      uptimeMs: Math.round(performance.now() - this.startedMs),
      version: raftblockVersion,
      storeOpsLevel: this.storeOpsLevel,
      groups,
    };
  }

  /** A checksum of the blocks this replica holds that are not all zeros (pg-digest.ts). */
  async groupDigest(groupId: number): Promise<GroupDigest> {
    const store = this.stores.get(groupId);
    if (!store) throw new NotFound(`group ${groupId} is not on node ${this.id}`);
    return digestReplica(store, this.map(), groupId, this.id);
  }

  health(): string | null {
    if (this.stopping) return 'stopping';
    if (this.removed) return 'removed from the cluster map';
    if (!this.registered) return 'not registered in the cluster map yet';
    return null;
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.metaTimer) clearInterval(this.metaTimer);
    if (this.affinityTimer) clearInterval(this.affinityTimer);
    this.remoteLeaders.stop();
    this.pgMover?.stop();
    this.log.info('stopping');
    await this.nbd.close().catch((err) => this.log.warn('nbd close', { err }));
    await this.host.stop();
    await this.transport.close();
    await this.storeOps.settled();
    await this.httpServer.close();
    await this.wal.close();
    await this.io.close();
    this.log.info('stopped');
  }
}

/** A group's latest configuration as the status reports it (learners only when there are some). */
type ConfState = import('../raft/index.js').ConfState;

/** `latest`, the newest configuration in `raft`'s log, is not yet the one at its commit index. */
function confUncommitted(raft: { committed: number; confStateAt(index: number): ConfState }, latest: ConfState): boolean {
  return !sameConfState(raft.confStateAt(raft.committed), latest);
}

/** confUncommitted for status: a membership at the commit index no longer known (compacted) is long settled. */
function confUncommittedIfKnown(raft: { committed: number; confStateAt(index: number): ConfState }, latest: ConfState): boolean {
  try {
    return confUncommitted(raft, latest);
  } catch {
    return false;
  }
}

function configurationOf(cs: import('../raft/index.js').ConfState): Pick<GroupStatus, 'voters' | 'learners' | 'votersOutgoing'> {
  const learners = [...cs.learners, ...cs.learnersNext].sort((a, b) => a - b);
  return { voters: [...cs.voters], learners: learners.length ? learners : undefined, votersOutgoing: cs.votersOutgoing.length ? [...cs.votersOutgoing] : undefined };
}

/** Whether `g`'s latest Raft configuration (committed or not) names node `id`, in any role. */
function latestConfNames(g: Group, id: number): boolean {
  return allMembers(g.raft.confStateAt(Number.MAX_SAFE_INTEGER)).includes(id);
}

export { parseHostPort };

/** `CODE: message` of an error a peer request failed with, for a refusal that names it. */
function describeError(err: unknown): string {
  if (err instanceof RaftblockError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
