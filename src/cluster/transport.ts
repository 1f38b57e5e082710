/**
 * Node-to-node transport: one TCP connection per peer pair carrying length-prefixed msgpackr
 * frames (see frame.ts). Everything queued for a peer by one callback (Raft messages of
 * every group, forwarded requests, responses) leaves in one frame. Connections are
 * re-established with exponential backoff; a malformed frame closes only its connection.
 *
 * One connection per pair: either side may dial; when both connections exist at once, both
 * sides keep the one dialed by the smaller node id and close the other, so they agree
 * without talking about it.
 *
 * Cluster identity: every frame carries its sender's cluster id, and a node that knows its own
 * refuses a frame with another id, or with none outside the join exchange (an empty frame, or
 * only `join` / `getMap` requests: what a new node needs before it knows its id): the frame
 * is dropped, counted, the connection closed (one warning per connection), and no other
 * connection is touched. A new node waiting for its join answer (no id yet) uses only the
 * connection it opened to its seed, and takes nothing from it but answers. A dialer resets its
 * reconnect backoff only once the far end has answered as a member of its cluster, so a
 * refused node does not redial in a tight loop.
 *
 * Responses: a request is answered on the connection it came on, and a response settles a
 * request only when it arrives on the connection that request was written to; a response whose
 * connection is gone is dropped (its requester fails the request with Unavailable when it sees
 * that connection close). Request ids are per process, so without this a late answer to a
 * previous life of a restarted peer, flushed on its new connection, could settle the new life's
 * request of the same id with another request's result. Ids also start at a random point per
 * process, so two lives' ids do not meet in practice either.
 */
import { randomInt } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { authenticateAsAcceptor, authenticateAsDialer, type ClusterKey } from './peer-auth.js';
import { secureAsAcceptor, secureAsDialer } from './peer-tls.js';
import { assert } from '../common/assert.js';
import { jitteredMs } from '../common/backoff.js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { formatHostPort, listenOn, parseHostPort, type HostPort } from '../common/address.js';
import { ProtocolError, RaftblockError, TimedOut, Unavailable } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import { encodeFrameParts, FrameDecoder, wireProtocolVersion, type Frame, type GroupMessage, type RpcRequest, type RpcResponse } from './frame.js';

/** Raft messages queued for an unreachable peer beyond this are dropped (Raft resends). */
export const maxQueuedMessagesPerPeer = 4096;
export const reconnectMinMs = 50;
export const reconnectMaxMs = 2000;
export const defaultRequestTimeoutMs = 5000;
/**
 * A connection that has carried nothing back this long after we wrote to it is taken for
 * dead (a peer gone behind a partition leaves the socket open) and closed, so the next send
 * redials; a live peer answers within it, the keepalive below making sure it has something to
 * answer.
 */
export const defaultSilentConnectionLimitMs = 6000;
/** A connection silent this long after our write gets a `ping` request, which any peer answers. */
const keepaliveAfterMs = 1500;
/** A dial that has not connected by then is given up (and retried with backoff). */
export const connectTimeoutMs = 3000;
/** Connections still proving the cluster key, at most (see accept). */
export const maxUnprovenConnections = 64;
/**
 * Accepted connections not known to be of this cluster, at most: those waiting for their first
 * frame and those in the join exchange (open to anyone: it needs no membership). One more is
 * closed as soon as it is accepted. Each holds a descriptor and its frame being read; without
 * a bound a client opening them without end used up the process's descriptors (which its WAL,
 * data files and peers need) and its memory, and without a cluster key nothing else stood in
 * its way. A node needs few: a peer's connection is one for the moment before its first frame
 * (sent as soon as it connects), a node joining through this one holds one; a cluster's nodes
 * redialing at once after a restart stay below it, and one refused redials with backoff. The
 * connections of this cluster's nodes, once their first frame is in, never count.
 */
export const maxUnidentifiedConnections = 64;
/**
 * Largest frame taken on an accepted connection before it is known to be of this cluster: a
 * member's first frame is its introduction (~100 bytes) and a new node's join exchange asks
 * only `join` and `getMap` (under 1 KiB), so 1 MiB is ample; with maxUnidentifiedConnections
 * it bounds what strangers make a node buffer to 64 MiB rather than 64 × maxFrameBytes.
 */
export const maxUnidentifiedFrameBytes = 1024 * 1024;
const noBytes = Buffer.alloc(0);
/** At most one warning per this long about connections refused at maxUnidentifiedConnections. */
const unidentifiedRefusalWarningMs = 10_000;
/**
 * A connection with more than this queued for writing (written to it, not yet taken by the
 * kernel: the far end reads slower than we write, or not at all) is closed rather than given
 * more. Legitimate traffic queues far less: Raft keeps 8 MiB in flight per group and follower,
 * a gateway's forwarded requests stay within its NBD memory budget (512 MiB by default; a
 * node with a larger --nbd-memory-budget raises this bound by as much, TransportOptions
 * maxQueuedBytes), and a frame is at most 64 MiB; without a bound, a client that never reads
 * could make us queue answers until memory ran out.
 */
export const maxQueuedBytesPerConnection = 1024 * 1024 * 1024;
/**
 * The join exchange (a node that has not joined, or anyone claiming to be one: it needs no
 * membership) is held to less: nothing more written to it while this much is queued, and at
 * most this many of its requests (`join`, `getMap`: each answered with the whole map, or a
 * change of it) served at once on a connection, counted before any is answered. That count
 * holds on every connection, a member's too: the map names the cluster id, so whoever asked
 * for it once can send frames of the cluster, and one such frame of thousands of getMap
 * requests had every answer built before the write queue's check saw the first. A node asks
 * one of them at a time of a peer (a map fetch is one per peer; a join is retried after its
 * timeout, while the first may still be under way) and reads each answer.
 */
export const maxJoinExchangeRequestsInFlight = 8;
export const maxJoinExchangeQueuedBytes = 4 * 1024 * 1024;
/**
 * An accepted connection that has not sent a frame through the cluster check this long after
 * it was taken is closed. A node sends its first frame as soon as it is connected (and has
 * proved the key, whose exchange has its own limit); without a key nothing else would ever
 * close a connection that sends nothing.
 */
export const firstFrameTimeoutMs = 10_000;
/**
 * An accepted connection still in the join exchange (frames without the cluster id) this long
 * after its first frame is closed. A joining node's exchange takes seconds, after which it
 * sends a frame with the cluster id on each connection it dialed (setClusterId); one whose join
 * cannot complete meanwhile (group 0 without a quorum) asks again on the same connection, is
 * cut every time the limit passes, and dials again. Without a key nothing else would close a
 * connection that asks for the map now and then for ever, holding one of the
 * maxUnidentifiedConnections places.
 */
export const joinExchangeLimitMs = 120_000;
/** Requests a node without a cluster id may make of a node that has one (see `admit`). */
const joinExchangeOps: ReadonlySet<string> = new Set(['join', 'getMap']);

export interface TransportHandlers {
  /** Raft messages from `from`, sent at its map epoch `epoch`. */
  onMessages(from: string, epoch: number, msgs: GroupMessage[]): void;
  /**
   * A forwarded request; resolves with the result or rejects with a RaftblockError. `joining`:
   * it came without a cluster id while this node knows its own (the join exchange of a node
   * that has not joined yet; its `from` is only a claim).
   */
  onRequest(from: string, epoch: number, op: string, args: unknown, joining: boolean): Promise<unknown>;
  /** Every frame's sender epoch, so a node can notice that its map is stale. */
  onPeerEpoch?(from: string, epoch: number, addr: string): void;
}

export interface TransportOptions {
  nodeId: string;
  listen: HostPort;
  /** The address peers should dial (defaults to the bound listen address). */
  advertise?: string;
  epoch(): number;
  handlers: TransportHandlers;
  registry?: Registry;
  /** This node's cluster id; '' or absent while it does not know it (see `setClusterId`). */
  clusterId?: string;
  /**
   * Only while this node has no cluster id: true for a new node waiting for its join answer,
   * which takes nothing from a frame but the answers to its own requests; false (default) for a
   * node whose state predates cluster ids, which takes every frame until it learns its id.
   */
  awaitingJoin?: boolean;
  /** This node's incarnation, sent on every frame (map.ts NodeInfo.incarnation). */
  incarnation?: string;
  /** The store commands this node's build applies, sent on every frame (Frame.s). */
  storeOpsLevel?: number;
  /**
   * What of Raft message `msg` of `group` may leave on a connection whose far node told store
   * command level `peerStoreOpsLevel` (Frame.s) on it: the message, or a copy cut short
   * (store-ops-gate.ts). With it, a connection carries no Raft message before the far end's
   * first frame on it told its level: a node restarted on another build is judged by what it
   * says now, not by what its previous life said.
   */
  gateMessage?(group: number, msg: unknown, peerStoreOpsLevel: number): unknown;
  /** The level each peer last told, as remembered from before this start (peer-levels-file.ts). */
  knownStoreOpsLevels?: ReadonlyMap<string, number>;
  /** Peer `id` told a store command level other than the one last known of it. */
  onStoreOpsLevel?(id: string, level: number): void;
  /**
   * The incarnation the map records for a node id, if any: a frame of this cluster from that
   * id with another one is refused (another data dir under the id, such as a removed node
   * still running after a fresh one took its id).
   */
  incarnationOf?(id: string): string | undefined;
  /**
   * The cluster's pre-shared key: every connection, accepted or dialed, proves it before its
   * first frame (peer-auth.ts); one that does not is closed. Absent: no proof is asked.
   */
  clusterKey?: ClusterKey;
  /**
   * Keys accepted from peers besides clusterKey, during a key rotation (peer-auth.ts): a
   * connection uses a key both ends hold.
   */
  clusterKeysAlsoAccepted?: readonly ClusterKey[];
  /**
   * With a cluster key: every connection then runs TLS keyed by it (peer-tls.ts), so frames
   * are encrypted and authenticated; a peer without it is refused.
   */
  peerTls?: boolean;
  /** See defaultSilentConnectionLimitMs. */
  silentConnectionLimitMs?: number;
  /** See firstFrameTimeoutMs (the default). */
  firstFrameTimeoutMs?: number;
  /** See joinExchangeLimitMs (the default). */
  joinExchangeLimitMs?: number;
  /**
   * See maxQueuedBytesPerConnection (the default), which leaves room for the default NBD
   * memory budget's forwarded requests: a node with a larger budget queues more.
   */
  maxQueuedBytes?: number;
}

interface Conn {
  socket: Socket;
  decoder: FrameDecoder;
  /** Node id of the far end, once its first frame arrived (or known when we dialed a peer). */
  remoteId: string | undefined;
  /** Node id of the side that opened the connection. */
  dialer: string | undefined;
  closed: boolean;
  /** A frame came through the cluster check (a dialer's backoff is reset then). */
  heard: boolean;
  /** Closed by the cluster check (a frame of another cluster: warned once). */
  refused: boolean;
  /**
   * The store command level the far end's frames on this connection tell (Frame.s; 1 when
   * absent), undefined until its first frame of this cluster: Raft messages wait for it when
   * they are gated (TransportOptions.gateMessage).
   */
  storeOpsLevel: number | undefined;
  /**
   * Accepted from a node without a cluster id while this node knows its own (the join
   * exchange): answered on this connection only, never made the connection of the node id it
   * claims, so a node claiming a member's id cannot take that member's traffic.
   */
  joining: boolean;
  /**
   * Responses to requests that came on this connection, waiting for the peer's next frame
   * (only while this is the peer's connection; they are dropped with it).
   */
  resps: RpcResponse[];
  /**
   * When we first wrote to it since it last carried anything to us (undefined: nothing
   * written since); judged once a second (checkSilence).
   */
  awaitingSinceMs: number | undefined;
  /** A keepalive `ping` is in flight on it. */
  keepaliveSent: boolean;
  /** The last address its frames advertised that was refused (see learnAddress): warned once. */
  refusedAddr: string | undefined;
  /**
   * Join-exchange requests (`join`, `getMap`) taken on it and not answered yet, whatever the
   * connection (maxJoinExchangeRequestsInFlight).
   */
  joinServing: number;
  /**
   * Closes an accepted connection that sends no first frame (firstFrameTimeoutMs), then one
   * that stays in the join exchange (joinExchangeLimitMs).
   */
  unidentifiedTimer: NodeJS.Timeout | undefined;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  /**
   * The connection the request was written to (undefined while queued): only a response that
   * arrives on it settles the request, and its close fails it.
   */
  conn: Conn | undefined;
  peer: string;
  op: string;
  /**
   * False while a payload the request carries as an attachment (a view of its caller's
   * buffer, not a copy) may still be queued in the socket.
   */
  written: boolean;
}

interface Peer {
  id: string;
  addr: string | undefined;
  conn: Conn | undefined;
  dialing: boolean;
  backoffMs: number;
  nextDialAt: number;
  msgs: GroupMessage[];
  reqs: RpcRequest[];
  flushScheduled: boolean;
  /** The address a dial last could not even start with (warned once for it; see dial). */
  undialableAddr: string | undefined;
}

interface TransportMetrics {
  bytesSent: Counter;
  bytesReceived: Counter;
  framesSent: Counter;
  framesReceived: Counter;
  badFrames: Counter;
  silentClosed: Counter;
  foreignFrames: Counter;
  staleIncarnationFrames: Counter;
  newerProtocolFrames: Counter;
  dropped: Counter;
  queueBytes: Gauge;
  connections: Gauge;
  unauthenticated: Counter;
  tlsConnections: Counter;
  unidentifiedRefused: Counter;
}

function makeMetrics(registry: Registry | undefined): TransportMetrics {
  const registers = registry ? [registry] : [];
  return {
    bytesSent: new Counter({ name: 'raftblock_transport_sent_bytes_total', help: 'Bytes sent to peers', registers }),
    bytesReceived: new Counter({ name: 'raftblock_transport_received_bytes_total', help: 'Bytes received from peers', registers }),
    framesSent: new Counter({ name: 'raftblock_transport_sent_frames_total', help: 'Frames sent to peers', registers }),
    framesReceived: new Counter({ name: 'raftblock_transport_received_frames_total', help: 'Frames received from peers', registers }),
    badFrames: new Counter({ name: 'raftblock_transport_bad_frames_total', help: 'Connections closed for a malformed frame', registers }),
    silentClosed: new Counter({
      name: 'raftblock_transport_silent_connections_closed_total',
      help: 'Peer connections closed for carrying nothing back for the silent limit after a write (a peer behind a partition); redialed on the next send',
      registers,
    }),
    foreignFrames: new Counter({
      name: 'raftblock_transport_foreign_frames_total',
      help: 'Frames refused (their connection closed): sent by a node of another cluster, or without a cluster id outside the join exchange',
      registers,
    }),
    staleIncarnationFrames: new Counter({
      name: 'raftblock_transport_stale_incarnation_frames_total',
      help: 'Frames refused (their connection closed): sent under a node id by a data dir other than the one the map records for it',
      registers,
    }),
    newerProtocolFrames: new Counter({
      name: 'raftblock_transport_newer_protocol_frames_total',
      help: 'Frames refused (their connection closed): sent in a newer wire protocol than this node speaks',
      registers,
    }),
    unauthenticated: new Counter({
      name: 'raftblock_transport_unauthenticated_connections_total',
      help: 'Peer connections closed before their first frame: the far end did not prove the cluster key (or this node does not hold the one it asked for)',
      registers,
    }),
    tlsConnections: new Counter({
      name: 'raftblock_transport_tls_connections_total',
      help: 'Peer connections that completed their TLS handshake (--peer-tls), dialed or accepted',
      registers,
    }),
    unidentifiedRefused: new Counter({
      name: 'raftblock_transport_unidentified_connections_refused_total',
      help: 'Accepted peer connections closed at once: as many connections not yet known to be of this cluster (no first frame yet, or in the join exchange) as the node holds were open',
      registers,
    }),
    dropped: new Counter({ name: 'raftblock_transport_dropped_messages_total', help: 'Raft messages dropped for an unreachable peer', registers }),
    queueBytes: new Gauge({ name: 'raftblock_transport_queue_bytes', help: 'Bytes waiting in socket send buffers', registers }),
    connections: new Gauge({ name: 'raftblock_transport_connections', help: 'Open peer connections', registers }),
  };
}

export class Transport {
  readonly nodeId: string;
  private readonly opts: TransportOptions;
  private readonly log: Logger;
  private readonly metrics: TransportMetrics;
  private server: Server | undefined;
  private readonly peers = new Map<string, Peer>();
  /** Store command levels members last told (Frame.s), by node id. */
  private readonly storeOpsLevels = new Map<string, number>();
  /** Members whose frames told their level since this process started (the rest are remembered). */
  private readonly storeOpsLevelsHeard = new Set<string>();
  private readonly conns = new Set<Conn>();
  /** Sockets still proving the cluster key (not yet conns): closed with the transport. */
  private readonly authenticating = new Set<Socket>();
  /**
   * Accepted connections not known to be of this cluster (maxUnidentifiedConnections): no
   * frame through the cluster check yet, or only the join exchange's.
   */
  private readonly unidentified = new Set<Conn>();
  /** When a refusal at maxUnidentifiedConnections was last warned of, and how many since. */
  private unidentifiedRefusalWarnedMs = -Infinity;
  private unidentifiedRefusedSinceWarning = 0;
  private readonly pending = new Map<number, Pending>();
  /** Random start: a restarted process does not reuse its previous life's ids (see the top). */
  private nextRequestId = randomInt(1, 2 ** 47);
  private advertised = '';
  private closing = false;
  private queueTimer: NodeJS.Timeout | undefined;
  /** This node's cluster id, '' while unknown; every frame sent carries it. */
  private clusterId: string;

  constructor(opts: TransportOptions) {
    this.opts = opts;
    this.nodeId = opts.nodeId;
    this.clusterId = opts.clusterId ?? '';
    this.log = createLogger('transport', { node: opts.nodeId });
    this.metrics = makeMetrics(opts.registry);
    for (const [id, level] of opts.knownStoreOpsLevels ?? []) this.storeOpsLevels.set(id, level);
  }

  /** Starts listening; returns the bound address. */
  async start(): Promise<HostPort> {
    const server = createServer((socket) => this.accept(socket));
    const a = await listenOn(server, this.opts.listen, 'peer transport (--peer)');
    this.server = server;
    // Bracketed for IPv6: a peer parses what we advertise, and `::1:PORT` does not parse.
    this.advertised = this.opts.advertise ?? formatHostPort(a);
    this.queueTimer = setInterval(() => {
      let bytes = 0;
      for (const c of this.conns) bytes += c.socket.writableLength;
      this.metrics.queueBytes.set(bytes);
      this.metrics.connections.set(this.conns.size);
      this.checkSilence(performance.now());
    }, 1000);
    this.queueTimer.unref();
    return a;
  }

  get address(): string {
    return this.advertised;
  }

  /**
   * Learns this node's cluster id (once; it never changes): from now on frames carry it, and
   * only frames of this cluster (and the join exchange) are taken.
   */
  setClusterId(id: string): void {
    assert(id.length > 0, 'an empty cluster id');
    assert(this.clusterId === '' || this.clusterId === id, `cluster id ${this.clusterId} cannot become ${id}`);
    if (this.clusterId === id) return;
    this.clusterId = id;
    // The far ends of the connections this node dialed in its join exchange take them for a
    // member's once a frame shows the id: at once, rather than at this node's next message to
    // them (which may not come before their join-exchange limit closes the connection).
    for (const conn of this.conns) if (!conn.closed && conn.dialer === this.nodeId) this.writeFrame(conn, this.intro());
  }

  /** Records (or updates) where a peer listens. */
  setPeerAddress(id: string, addr: string): void {
    if (id === this.nodeId) return;
    const peer = this.peer(id);
    if (peer.addr !== addr) {
      peer.addr = addr;
      peer.backoffMs = reconnectMinMs;
      peer.nextDialAt = 0;
    }
  }

  peerAddress(id: string): string | undefined {
    return this.peers.get(id)?.addr;
  }

  /**
   * The store command level (Frame.s) of the last frame from member `id`, or the one known of
   * it before this start (TransportOptions.knownStoreOpsLevels); undefined when neither.
   */
  storeOpsLevelOf(id: string): number | undefined {
    return this.storeOpsLevels.get(id);
  }

  /** storeOpsLevelOf, but only once member `id` sent a frame since this process started. */
  storeOpsLevelHeardOf(id: string): number | undefined {
    return this.storeOpsLevelsHeard.has(id) ? this.storeOpsLevels.get(id) : undefined;
  }

  /**
   * Forgets node `id`'s level, remembered or heard (it is out of the cluster). If it still
   * talks (a removed node not yet stopped, or a node joining before the map lists it), its next
   * frame is news and tells it again, and marks it heard.
   */
  forgetStoreOpsLevel(id: string): void {
    this.storeOpsLevels.delete(id);
    this.storeOpsLevelsHeard.delete(id);
  }

  isConnected(id: string): boolean {
    const c = this.peers.get(id)?.conn;
    return c !== undefined && !c.closed;
  }

  /**
   * Dials `id` unless a connection is up or being made (connections are otherwise made on
   * demand, by the first message or request for the peer); a dial in backoff is skipped.
   */
  connect(id: string): void {
    const peer = this.peer(id);
    if (peer.conn && !peer.conn.closed) return;
    if (Date.now() >= peer.nextDialAt) this.dial(peer);
  }

  /** Queues a Raft message; every message queued in this turn leaves in one frame per peer. */
  send(to: string, group: number, msg: unknown): void {
    const peer = this.peer(to);
    if (peer.msgs.length >= maxQueuedMessagesPerPeer) {
      peer.msgs.shift();
      this.metrics.dropped.inc();
    }
    peer.msgs.push({ g: group, m: msg });
    this.schedule(peer);
  }

  /**
   * Sends a request to a peer and waits for its response. `signal`, when given, abandons the
   * wait when it aborts (the request fails with `abortError()`; its outcome is unknown, as on
   * a timeout): a gateway stops waiting for a PG leader its replica has seen replaced.
   */
  request(to: string, op: string, args: unknown, timeoutMs = defaultRequestTimeoutMs, signal?: AbortSignal, abortError?: () => Error): Promise<unknown> {
    if (this.closing) return Promise.reject(new Unavailable('transport closed'));
    if (signal?.aborted) return Promise.reject(abortError ? abortError() : new Unavailable(`request ${op} to ${to} abandoned`));
    const peer = this.peer(to);
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.abandon(id, new TimedOut(`request ${op} to ${to} timed out after ${timeoutMs} ms`)), timeoutMs);
      if (signal === undefined) {
        this.pending.set(id, { resolve, reject, timer, conn: undefined, peer: to, op, written: true });
      } else {
        // The listener lives as long as the request: removed however it settles.
        const onAbort = (): void => this.abandon(id, abortError ? abortError() : new Unavailable(`request ${op} to ${to} abandoned`));
        signal.addEventListener('abort', onAbort, { once: true });
        const detach = (): void => signal.removeEventListener('abort', onAbort);
        const settleResolve = (v: unknown): void => (detach(), resolve(v));
        const settleReject = (e: Error): void => (detach(), reject(e));
        this.pending.set(id, { resolve: settleResolve, reject: settleReject, timer, conn: undefined, peer: to, op, written: true });
      }
      peer.reqs.push({ id, op, a: args });
      this.schedule(peer);
    });
  }

  /** Gives up waiting for request `id` (timed out or abandoned by its caller): fails it with `err`. */
  private abandon(id: number, err: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    // Never sent: withdraw it, so it cannot reach the peer after its caller has moved on
    // (its arguments may be buffers the caller reuses once this settles).
    const peer = this.peers.get(p.peer);
    const queued = peer ? peer.reqs.findIndex((r) => r.id === id) : -1;
    if (peer && queued >= 0) peer.reqs.splice(queued, 1);
    // Sent with its payload still queued in a socket that has not drained: close that
    // connection, which drops the queued bytes, so the caller may reuse its buffer once this
    // settles (the peer never reads half-overwritten data). Also when the connection is
    // already marked closed: one that lost a simultaneous-dial race is only ended, and an
    // ended socket still writes out what it holds.
    if (!p.written && p.conn && !p.conn.socket.destroyed) {
      this.log.warn('request given up with its payload still queued; closing the connection', { peer: p.peer, op: p.op, err: err.message });
      p.conn.socket.destroy();
    }
    p.reject(err);
  }

  /**
   * Sends a request to an address whose node id is not known yet (a seed). Opens a
   * connection, learns the id from the first frame, then sends as to any peer.
   */
  async requestAddress(addr: string, op: string, args: unknown, timeoutMs = defaultRequestTimeoutMs): Promise<unknown> {
    for (const p of this.peers.values()) {
      if (p.addr === addr && p.id !== this.nodeId) return this.request(p.id, op, args, timeoutMs);
    }
    const id = await this.identify(addr, timeoutMs);
    return this.request(id, op, args, timeoutMs);
  }

  private identify(addr: string, timeoutMs: number): Promise<string> {
    const hp = parseHostPort(addr, 'peer address');
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: hp.host, port: hp.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new TimedOut(`no answer from ${addr}`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new Unavailable(`cannot reach ${addr}: ${err.message}`));
      });
      // Closed before it said who it is (a node of another cluster refuses us so): no wait for the timeout.
      socket.once('close', () => {
        clearTimeout(timer);
        reject(new Unavailable(`${addr} closed the connection before it answered`));
      });
      socket.once('connect', () => {
        this.proveKey(socket, 'dialer', `seed ${addr}`, (secured) => {
          const conn = this.adopt(secured, undefined, this.nodeId, (remote) => {
            clearTimeout(timer);
            this.setPeerAddress(remote, addr);
            resolve(remote);
          });
          this.writeFrame(conn, this.intro());
        }, (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.queueTimer) clearInterval(this.queueTimer);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Unavailable('transport closed'));
      this.pending.delete(id);
    }
    for (const c of this.conns) c.socket.destroy();
    this.conns.clear();
    for (const socket of this.authenticating) socket.destroy();
    this.authenticating.clear();
    this.unidentified.clear();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private peer(id: string): Peer {
    let p = this.peers.get(id);
    if (!p) {
      p = { id, addr: undefined, conn: undefined, dialing: false, backoffMs: reconnectMinMs, nextDialAt: 0, msgs: [], reqs: [], flushScheduled: false, undialableAddr: undefined };
      this.peers.set(id, p);
    }
    return p;
  }

  private schedule(peer: Peer): void {
    if (peer.flushScheduled || this.closing) return;
    peer.flushScheduled = true;
    // A microtask, not setImmediate: what the running callback queues (one socket read's
    // frames, one pump of the host, one WAL completion) still leaves in one frame per peer,
    // and it leaves in this turn of the event loop instead of after the next poll
    // (A/B at 4 KiB QD32 over NBD: +20 % IOPS).
    queueMicrotask(() => {
      peer.flushScheduled = false;
      this.flush(peer);
    });
  }

  private flush(peer: Peer): void {
    if (this.closing) return;
    const conn = peer.conn;
    const live = conn !== undefined && !conn.closed;
    if (peer.msgs.length === 0 && peer.reqs.length === 0 && !(live && conn.resps.length > 0)) return;
    if (!live) {
      // Responses never move to another connection (see the top): only messages wait.
      this.dial(peer);
      // Requests wait only for a dial under way. A peer that cannot be dialed now (its last
      // attempt failed and the next is not due, or its address is unknown) refuses them at
      // once: a caller then asks another node instead of waiting out its whole timeout (a
      // gateway's writes to a killed leader stalled 4 s where the re-election took 1.5).
      if (!peer.dialing && peer.reqs.length > 0) {
        const why = peer.addr === undefined ? 'its address is unknown' : `its last connection attempt failed; the next is in ${Math.max(0, peer.nextDialAt - Date.now())} ms`;
        this.refuseQueuedRequests(peer, `node ${peer.id} is unreachable: ${why}`);
      }
      return;
    }
    const gate = this.opts.gateMessage;
    const level = conn.storeOpsLevel;
    // Gated messages wait for the far end to tell its level on this connection (its first
    // frame, at most a round trip after a dial); requests and responses do not.
    const msgsLeave = peer.msgs.length > 0 && (gate === undefined || level !== undefined);
    if (!msgsLeave && peer.reqs.length === 0 && conn.resps.length === 0) return;
    const frame = this.intro();
    if (msgsLeave) {
      if (gate !== undefined) for (const gm of peer.msgs) gm.m = gate(gm.g, gm.m, level!);
      frame.msgs = peer.msgs;
      peer.msgs = [];
    }
    if (peer.reqs.length) frame.reqs = peer.reqs;
    if (conn.resps.length) frame.resps = conn.resps;
    for (const r of peer.reqs) {
      const p = this.pending.get(r.id);
      if (p) p.conn = conn;
    }
    peer.reqs = [];
    conn.resps = [];
    this.writeFrame(conn, frame);
  }

  /**
   * Closes the peers' connections that have carried nothing back for the silent limit since we
   * wrote to them, and sends a keepalive on those silent for a while: without it, a peer that
   * had nothing to say (messages it drops, no request of ours pending) would look dead.
   */
  private checkSilence(nowMs: number): void {
    const limitMs = this.opts.silentConnectionLimitMs ?? defaultSilentConnectionLimitMs;
    for (const [id, peer] of this.peers) {
      const conn = peer.conn;
      if (!conn || conn.closed || conn.awaitingSinceMs === undefined) continue;
      const silentMs = nowMs - conn.awaitingSinceMs;
      if (silentMs >= limitMs) {
        this.metrics.silentClosed.inc();
        this.log.warn('closing a peer connection silent since our last write; redialing on the next send', { peer: id, silentMs: Math.round(silentMs) });
        conn.socket.destroy();
      } else if (silentMs >= Math.min(keepaliveAfterMs, limitMs / 2) && !conn.keepaliveSent && (this.clusterId !== '' || !this.opts.awaitingJoin)) {
        // (A node waiting for its join answer may send nothing but the join exchange.)
        conn.keepaliveSent = true;
        void this.ping(id, limitMs);
      }
    }
  }

  /**
   * True if peer `to` answers a `ping` request within `timeoutMs`. Any answer proves it runs:
   * a node from before `ping` answers with an error.
   */
  ping(to: string, timeoutMs: number): Promise<boolean> {
    return this.request(to, 'ping', {}, timeoutMs).then(
      () => true,
      (err: unknown) => isAnsweredError(err),
    );
  }

  private writeFrame(conn: Conn, frame: Frame): void {
    const socket = conn.socket;
    const queuedLimit = conn.joining ? maxJoinExchangeQueuedBytes : (this.opts.maxQueuedBytes ?? maxQueuedBytesPerConnection);
    if (socket.writableLength > queuedLimit) {
      // The far end does not read what we send: close it rather than queue more. Requests in
      // the frame fail with Unavailable when it closes (their `conn` is this one), Raft
      // messages are resent, responses are lost with the connection as on any close.
      if (!socket.destroyed) {
        this.log.warn('closing a peer connection that does not read what is sent to it', { peer: conn.remoteId, queuedBytes: socket.writableLength, limit: queuedLimit, remote: `${socket.remoteAddress}:${socket.remotePort}` });
        conn.closed = true;
        socket.destroy();
      }
      return;
    }
    conn.awaitingSinceMs ??= performance.now();
    let parts: Buffer[];
    const payloadRequestIds: number[] = [];
    try {
      parts = encodeFrameParts(frame, payloadRequestIds);
    } catch (err) {
      // An oversized frame is our bug or an oversized request: fail its requests, keep the link.
      this.log.error('frame not sent', { err });
      for (const r of frame.reqs ?? []) this.settle({ id: r.id, e: { code: 'PROTOCOL_ERROR', message: (err as Error).message } }, undefined);
      return;
    }
    if (parts.length === 1) {
      this.metrics.bytesSent.inc(parts[0].length);
      socket.write(parts[0]);
    } else {
      // Requests whose payload is written from their caller's buffer: marked written once the
      // socket has taken the last byte (see Pending.written).
      let carrying: Pending[] | undefined;
      for (const id of payloadRequestIds) {
        const p = this.pending.get(id);
        if (!p) continue;
        p.written = false;
        (carrying ??= []).push(p);
      }
      // One writev for the head and the attached payloads.
      let bytes = 0;
      socket.cork();
      for (let i = 0; i < parts.length; i++) {
        bytes += parts[i].length;
        if (carrying && i === parts.length - 1) {
          const done = carrying;
          socket.write(parts[i], () => {
            for (const p of done) p.written = true;
          });
        } else socket.write(parts[i]);
      }
      socket.uncork();
      this.metrics.bytesSent.inc(bytes);
    }
    this.metrics.framesSent.inc();
  }

  private dial(peer: Peer): void {
    if (peer.dialing || !peer.addr || this.closing) return;
    const now = Date.now();
    if (now < peer.nextDialAt) {
      const waitMs = peer.nextDialAt - now;
      setTimeout(() => this.flush(peer), waitMs).unref();
      return;
    }
    peer.dialing = true;
    let socket: Socket;
    try {
      const hp = parseHostPort(peer.addr, 'peer address');
      socket = createConnection({ host: hp.host, port: hp.port });
    } catch (err) {
      // Never thrown out of here: dial runs in a flush, in a microtask, where a throw is
      // uncaught and ends the process. An address that cannot even be dialed is a failed dial.
      if (peer.undialableAddr !== peer.addr) {
        peer.undialableAddr = peer.addr;
        this.log.warn('cannot dial a peer at the address known for it; retrying with backoff', { peer: peer.id, addr: peer.addr, err: (err as Error).message });
      }
      this.dialFailed(peer, err as Error);
      return;
    }
    socket.setNoDelay(true);
    // Behind a partition a SYN goes unanswered for minutes of kernel retries, and the peer
    // would not be dialed again until then: give up sooner and redial with backoff.
    const connectTimer = setTimeout(() => socket.destroy(new Error(`no connection within ${connectTimeoutMs} ms`)), connectTimeoutMs);
    connectTimer.unref();
    socket.once('connect', () => clearTimeout(connectTimer));
    const onFail = (err: Error): void => {
      clearTimeout(connectTimer);
      this.dialFailed(peer, err);
    };
    socket.once('error', onFail);
    socket.once('connect', () => {
      socket.off('error', onFail);
      this.proveKey(socket, 'dialer', `node ${peer.id} at ${peer.addr}`, (secured) => this.dialed(peer, secured), onFail);
    });
  }

  /** A dial to `peer` failed: the next waits out the backoff, which grows. */
  private dialFailed(peer: Peer, err: Error): void {
    peer.dialing = false;
    peer.nextDialAt = Date.now() + jitteredMs(peer.backoffMs);
    peer.backoffMs = Math.min(peer.backoffMs * 2, reconnectMaxMs);
    // Requests were never sent: refused now (see flush). Messages stay queued (bounded) for
    // the next attempt.
    this.refuseQueuedRequests(peer, `cannot reach node ${peer.id} at ${peer.addr}: ${err.message}`);
    if (peer.msgs.length) setTimeout(() => this.flush(peer), peer.nextDialAt - Date.now()).unref();
  }

  /** A dial to `peer` connected (and proved the cluster key, if there is one). */
  private dialed(peer: Peer, socket: Socket): void {
    peer.dialing = false;
    // The backoff is reset when the far end answers as a member of this cluster (`heard`);
    // until then a connection counts as an attempt, so a node that refuses us is redialed
    // less and less often.
    peer.nextDialAt = Date.now() + jitteredMs(peer.backoffMs);
    peer.backoffMs = Math.min(peer.backoffMs * 2, reconnectMaxMs);
    const conn = this.adopt(socket, peer.id, this.nodeId);
    this.bind(peer, conn);
    // The first frame introduces us; it also carries whatever is queued.
    this.writeFrame(conn, this.intro());
    this.flush(peer);
  }

  /** An accepted connection: taken once it proved the cluster key (at once without one). */
  private accept(socket: Socket): void {
    if (this.unidentified.size >= maxUnidentifiedConnections) {
      this.refuseUnidentified(socket);
      return;
    }
    // Connections that prove nothing are held at most authTimeoutMs each, and at most this many
    // at once: a client opening them without end takes no more of the process's descriptors.
    if (this.opts.clusterKey && this.authenticating.size >= maxUnprovenConnections) {
      socket.destroy();
      this.metrics.unauthenticated.inc();
      return;
    }
    this.proveKey(socket, 'acceptor', 'an accepted connection', (secured) => {
      this.adopt(secured, undefined, undefined);
    });
  }

  /** Closes a connection accepted past maxUnidentifiedConnections; warns at most once per interval. */
  private refuseUnidentified(socket: Socket): void {
    socket.destroy();
    this.metrics.unidentifiedRefused.inc();
    this.unidentifiedRefusedSinceWarning++;
    const now = performance.now();
    if (now - this.unidentifiedRefusalWarnedMs < unidentifiedRefusalWarningMs) return;
    this.log.warn('peer connection refused: as many connections not yet known to be of this cluster as a node holds are open', {
      max: maxUnidentifiedConnections,
      refusedSinceLastWarning: this.unidentifiedRefusedSinceWarning,
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
    });
    this.unidentifiedRefusalWarnedMs = now;
    this.unidentifiedRefusedSinceWarning = 0;
  }

  /**
   * Runs `then` once the far end proved the cluster key (at once without a key), with the
   * socket to speak frames on: `socket` itself, or with `peerTls` the TLS socket over it. Else
   * closes the socket, warns, counts it, and runs `failed`. The socket is paused during the
   * exchange and resumed after `then` attached the frame reader.
   */
  private proveKey(socket: Socket, role: 'dialer' | 'acceptor', who: string, then: (secured: Socket) => void, failed?: (err: Error) => void): void {
    const key = this.opts.clusterKey;
    if (!key) {
      then(socket);
      return;
    }
    const tls = this.opts.peerTls === true;
    socket.setNoDelay(true);
    // 'error' after a failed exchange must not be unhandled; adopt() listens once it takes over.
    socket.on('error', () => {});
    this.authenticating.add(socket);
    const auth = { tls, alsoAccepted: this.opts.clusterKeysAlsoAccepted };
    const proved = role === 'dialer' ? authenticateAsDialer(socket, key, auth) : authenticateAsAcceptor(socket, key, auth);
    // TLS is keyed by the key the exchange settled on (the two ends may hold different sets).
    const exchange: Promise<Socket> = !tls ? proved.then(() => socket) : proved.then((used) => (role === 'dialer' ? secureAsDialer(socket, used) : secureAsAcceptor(socket, used)));
    exchange.then(
      (secured) => {
        this.authenticating.delete(socket);
        if (secured !== socket) this.metrics.tlsConnections.inc();
        if (this.closing || socket.destroyed) {
          secured.destroy();
          socket.destroy();
          failed?.(new Unavailable('transport closed'));
          return;
        }
        then(secured);
        secured.resume();
      },
      (err: Error) => {
        this.authenticating.delete(socket);
        this.metrics.unauthenticated.inc();
        if (!this.closing) this.log.warn('peer connection closed: the cluster key was not proved', { peer: who, remote: `${socket.remoteAddress}:${socket.remotePort}`, err: err.message });
        socket.destroy();
        failed?.(err);
      },
    );
  }

  /** Fails the requests queued for `peer` (none of them was written anywhere) with Unavailable. */
  private refuseQueuedRequests(peer: Peer, why: string): void {
    for (const r of [...peer.reqs]) this.abandon(r.id, new Unavailable(why));
    peer.reqs.length = 0;
  }

  /** Makes `conn` the peer's connection, resolving a simultaneous-dial race by dialer id. */
  private bind(peer: Peer, conn: Conn): void {
    const old = peer.conn;
    if (old && !old.closed && old !== conn) {
      const keepOld = (old.dialer ?? '') < (conn.dialer ?? '') || (old.dialer !== undefined && conn.dialer === undefined);
      if (keepOld) {
        conn.closed = true;
        conn.socket.end();
        return;
      }
      old.closed = true;
      old.socket.end();
    }
    peer.conn = conn;
  }

  private adopt(socket: Socket, remoteId: string | undefined, dialer: string | undefined, onIdentified?: (id: string) => void): Conn {
    socket.setNoDelay(true);
    const conn: Conn = { socket, decoder: new FrameDecoder(), remoteId, dialer, closed: false, heard: false, refused: false, storeOpsLevel: undefined, joining: false, resps: [], awaitingSinceMs: undefined, keepaliveSent: false, refusedAddr: undefined, joinServing: 0, unidentifiedTimer: undefined };
    if (dialer === undefined) {
      this.unidentified.add(conn);
      conn.decoder.restrict(maxUnidentifiedFrameBytes);
      const afterMs = this.opts.firstFrameTimeoutMs ?? firstFrameTimeoutMs;
      conn.unidentifiedTimer = setTimeout(() => {
        if (conn.closed) return;
        this.log.warn('closing an accepted connection that sent no frame', { remote: `${socket.remoteAddress}:${socket.remotePort}`, afterMs });
        socket.destroy();
      }, afterMs);
      conn.unidentifiedTimer.unref();
    }
    this.conns.add(conn);
    socket.on('data', (data: Buffer) => {
      this.metrics.bytesReceived.inc(data.length);
      conn.awaitingSinceMs = undefined;
      conn.keepaliveSent = false;
      let input = data;
      for (;;) {
        // A restricted decoder (an accepted connection not yet identified) yields one frame a
        // push: the frame that identifies the peer lifts the limit before the next is sized.
        const restricted = conn.decoder.restricted;
        let frames: Frame[];
        try {
          frames = conn.decoder.push(input);
        } catch (err) {
          this.metrics.badFrames.inc();
          this.log.warn('closing connection after a bad frame', { remote: conn.remoteId, err });
          socket.destroy();
          return;
        }
        for (const f of frames) {
          if (conn.closed && (conn.remoteId === undefined || conn.refused)) break;
          this.receive(conn, f, onIdentified);
          onIdentified = undefined;
        }
        // (A connection bind() closed as the loser of a simultaneous dial still has the frames
        // behind its introduction delivered, as the loop above delivers them.)
        if (!restricted || frames.length === 0 || !conn.decoder.holdsBytes || (conn.closed && (conn.remoteId === undefined || conn.refused))) break;
        input = noBytes;
      }
    });
    socket.on('error', () => {
      /* 'close' follows and does the cleanup */
    });
    socket.on('close', () => {
      conn.closed = true;
      clearTimeout(conn.unidentifiedTimer);
      this.conns.delete(conn);
      this.unidentified.delete(conn);
      if (conn.remoteId) {
        const peer = this.peers.get(conn.remoteId);
        if (peer && peer.conn === conn) peer.conn = undefined;
      }
      // Requests in flight on a dead connection have an unknown outcome; callers retry.
      for (const [id, p] of this.pending) {
        if (p.conn === conn) this.abandon(id, new Unavailable(`connection to ${p.peer} lost`));
      }
    });
    return conn;
  }

  private receive(conn: Conn, f: Frame, onIdentified: ((id: string) => void) | undefined): void {
    this.metrics.framesReceived.inc();
    if ((f.v ?? 1) > wireProtocolVersion) {
      // Before anything else: none of the frame's fields can be trusted to mean what we think.
      this.metrics.newerProtocolFrames.inc();
      this.refuse(conn, 'refusing a peer that speaks a newer wire protocol than this node: connection closed (upgrade this node)', {
        peerNode: f.from,
        peerProtocol: f.v,
        protocol: wireProtocolVersion,
      });
      return;
    }
    if ((f.c !== this.clusterId || this.clusterId === '') && !this.admit(conn, f)) return;
    if (this.opts.incarnationOf && f.c === this.clusterId && !this.admitIncarnation(conn, f)) return;
    if (!conn.heard) this.heard(conn, f.from);
    if (f.from === this.nodeId) {
      conn.socket.destroy();
      return;
    }
    // Past the cluster check without this node's id: the join exchange of a node that has not
    // joined yet. Its node id is only a claim (a wiped node may claim a member's): the
    // connection is kept apart from that id's peer, whose connection and address stay as they are.
    const joining = this.clusterId !== '' && f.c !== this.clusterId;
    if (conn.remoteId !== undefined && conn.remoteId !== f.from) {
      this.log.warn('peer changed identity on a connection', { was: conn.remoteId, now: f.from });
      conn.socket.destroy();
      return;
    }
    if (!joining) {
      const told = f.s ?? 1;
      if (this.storeOpsLevels.get(f.from) !== told) {
        this.storeOpsLevels.set(f.from, told);
        // News on a connection whose first frame came before forgetStoreOpsLevel.
        this.storeOpsLevelsHeard.add(f.from);
        this.opts.onStoreOpsLevel?.(f.from, told);
      }
      if (conn.storeOpsLevel === undefined) {
        // A connection's first frame from its peer (every later one comes after it): enough
        // to know the peer was heard since this start, without a set insert per frame.
        this.storeOpsLevelsHeard.add(f.from);
        conn.storeOpsLevel = told;
        // Raft messages held for it (TransportOptions.gateMessage) may leave now.
        const peer = this.peers.get(f.from);
        if (peer !== undefined && peer.conn === conn && peer.msgs.length > 0) this.schedule(peer);
      }
    }
    if (joining) {
      if (conn.remoteId === undefined) {
        conn.remoteId = f.from;
        if (conn.dialer === undefined) conn.dialer = f.from;
        conn.joining = true;
        if (this.unidentified.has(conn)) this.limitJoinExchange(conn);
        if (conn.dialer === f.from) this.writeFrame(conn, this.intro());
      }
    } else if (conn.remoteId === undefined || conn.joining) {
      // First frame of this cluster on an accepted connection (or on a seed dial; or a new
      // node's first since its join answer): now we know who it is.
      const first = conn.remoteId === undefined;
      conn.remoteId = f.from;
      conn.joining = false;
      this.unidentified.delete(conn);
      conn.decoder.lift();
      clearTimeout(conn.unidentifiedTimer);
      conn.unidentifiedTimer = undefined;
      if (conn.dialer === undefined) conn.dialer = f.from;
      const peer = this.peer(f.from);
      this.learnAddress(conn, f.from, f.addr);
      this.bind(peer, conn);
      // (Not on a connection bind() just ended as the loser of a simultaneous dial.)
      if (first && conn.dialer === f.from && !conn.closed) this.writeFrame(conn, this.intro());
      this.flush(peer);
    }
    if (onIdentified) onIdentified(f.from);
    if (!joining) {
      this.learnAddress(conn, f.from, f.addr);
      this.opts.handlers.onPeerEpoch?.(f.from, f.epoch, f.addr);
    }
    if (f.msgs && f.msgs.length) {
      try {
        this.opts.handlers.onMessages(f.from, f.epoch, f.msgs);
      } catch (err) {
        this.log.error('message handler failed', { err });
      }
    }
    for (const r of f.resps ?? []) this.settle(r, conn);
    const reqs = f.reqs;
    if (reqs === undefined) return;
    // Counted before any is served. (A joining connection's requests are all of the exchange:
    // admit() lets no other through.)
    let exchange = 0;
    for (let i = 0; i < reqs.length; i++) if (joinExchangeOps.has(reqs[i].op)) exchange++;
    if (exchange > 0) {
      conn.joinServing += exchange;
      if (conn.joinServing > maxJoinExchangeRequestsInFlight) {
        // Each answer may be the whole map: served all at once, they were held in memory
        // before the first was written.
        this.refuse(conn, 'refusing a connection that asks for the map (join, getMap) more times at once than a node does: connection closed', {
          peerNode: f.from,
          joining,
          requests: conn.joinServing,
          max: maxJoinExchangeRequestsInFlight,
        });
        return;
      }
    }
    for (let i = 0; i < reqs.length; i++) this.serve(conn, f.from, f.epoch, reqs[i], joining);
  }

  /**
   * Takes the address a frame of this cluster advertises for its sender, if it is new. Only one
   * that parses as HOST:PORT with a port replaces the address known: a peer is redialed by it
   * alone, so a bad one (a bug, a build that advertised IPv6 unbracketed, a forged frame) would
   * make it unreachable. A refused one is ignored, the old address kept, with one warning per
   * connection (every frame carries it). Parsed only when it differs from the known one.
   */
  private learnAddress(conn: Conn, from: string, addr: string): void {
    if (addr === '' || this.peers.get(from)?.addr === addr) return;
    let why: string | undefined;
    try {
      if (parseHostPort(addr, 'peer address').port === 0) why = 'port 0 cannot be dialed';
    } catch (err) {
      why = (err as Error).message;
    }
    if (why === undefined) {
      this.setPeerAddress(from, addr);
      return;
    }
    if (conn.refusedAddr === addr) return;
    conn.refusedAddr = addr;
    this.log.warn('ignoring the address a peer advertises: it cannot be dialed; keeping the one known', {
      peerNode: from,
      advertised: addr,
      known: this.peers.get(from)?.addr,
      why,
      remote: `${conn.socket.remoteAddress}:${conn.socket.remotePort}`,
    });
  }

  /**
   * A frame of this cluster whose sender the map records with another incarnation is refused
   * before it names or binds anything: a removed node still running must not take over the
   * connection (or the vote) of the fresh node that now has its id.
   */
  private admitIncarnation(conn: Conn, f: Frame): boolean {
    const want = this.opts.incarnationOf?.(f.from);
    if (want === undefined || f.i === want) return true;
    this.metrics.staleIncarnationFrames.inc();
    this.refuse(conn, 'refusing a peer whose data dir is not the one the map records for its id: connection closed', {
      peerNode: f.from,
      peerIncarnation: f.i ?? '(none)',
      mapIncarnation: want,
    });
    return false;
  }

  /** Closes a refused connection, warning once for it (with the remote address). */
  private refuse(conn: Conn, why: string, fields: Record<string, unknown>): void {
    if (conn.refused) return;
    conn.refused = true;
    conn.closed = true;
    this.log.warn(why, { ...fields, remote: `${conn.socket.remoteAddress}:${conn.socket.remotePort}` });
    conn.socket.destroy();
  }

  /** The frame that introduces this node on a new connection (and every frame's head). */
  private intro(): Frame {
    const f: Frame = { from: this.nodeId, addr: this.advertised, epoch: this.opts.epoch(), c: this.clusterId, v: wireProtocolVersion };
    if (this.opts.incarnation !== undefined) f.i = this.opts.incarnation;
    if (this.opts.storeOpsLevel !== undefined) f.s = this.opts.storeOpsLevel;
    return f;
  }

  /**
   * The cluster check of a frame whose cluster id is not this node's, or of any frame while
   * this node has none. Returns whether to go on with the frame (a new node's is cut down to
   * the answers it carries); a refused frame closes its connection, and only that one.
   */
  private admit(conn: Conn, f: Frame): boolean {
    if (this.clusterId === '') {
      // State from before cluster ids: every frame, as before, until the map brings the id.
      if (!this.opts.awaitingJoin) return true;
      // A new node waiting for its join answer cannot tell its cluster's nodes from others yet
      // (nodes of any cluster may dial its address, with the node ids of its own): it talks
      // only on connections it opened itself (to its seed), and takes part in nothing (Raft
      // resends; requests time out and are retried). Whoever dialed it redials once it joined.
      if (conn.dialer !== this.nodeId) {
        conn.refused = true;
        conn.closed = true;
        conn.socket.destroy();
        return false;
      }
      f.msgs = undefined;
      f.reqs = undefined;
      return true;
    }
    const theirs = f.c ?? '';
    if (theirs === '' && !f.msgs?.length && !f.resps?.length && (f.reqs ?? []).every((q) => joinExchangeOps.has(q.op))) return true;
    this.metrics.foreignFrames.inc();
    this.refuse(conn, 'refusing a peer of another cluster: connection closed', { cluster: this.clusterId, peerCluster: theirs === '' ? '(none)' : theirs, peerNode: f.from });
    return false;
  }

  /** Closes `conn` if it is still in the join exchange joinExchangeLimitMs from now. */
  private limitJoinExchange(conn: Conn): void {
    const afterMs = this.opts.joinExchangeLimitMs ?? joinExchangeLimitMs;
    conn.unidentifiedTimer = setTimeout(() => {
      if (conn.closed || !conn.joining) return;
      this.log.warn('closing a connection still in the join exchange', { peerNode: conn.remoteId, remote: `${conn.socket.remoteAddress}:${conn.socket.remotePort}`, afterMs });
      conn.socket.destroy();
    }, afterMs);
    conn.unidentifiedTimer.unref();
  }

  /** The first frame through the cluster check: the far end is one of us, a dialer may redial soon again. */
  private heard(conn: Conn, from: string): void {
    conn.heard = true;
    clearTimeout(conn.unidentifiedTimer);
    conn.unidentifiedTimer = undefined;
    if (conn.dialer !== this.nodeId) return;
    const peer = this.peers.get(from);
    if (peer) {
      peer.backoffMs = reconnectMinMs;
      peer.nextDialAt = 0;
    }
  }

  private serve(conn: Conn, from: string, epoch: number, q: RpcRequest, joining: boolean): void {
    let result: Promise<unknown>;
    try {
      result = this.opts.handlers.onRequest(from, epoch, q.op, q.a, joining);
    } catch (err) {
      result = Promise.reject(err);
    }
    const exchange = joinExchangeOps.has(q.op);
    result.then(
      (r) => this.respond(conn, from, { id: q.id, r }, exchange),
      (err: unknown) => {
        const e = err instanceof RaftblockError ? err : new ProtocolError(String((err as Error)?.message ?? err));
        const out: RpcResponse = { id: q.id, e: { code: e.code, message: e.message } };
        const hint = (e as { leaderHint?: string }).leaderHint;
        if (hint) out.e!.leader = hint;
        this.respond(conn, from, out, exchange);
      },
    );
  }

  /**
   * Answers on the connection the request came on, or not at all (see the top): the requester
   * takes a response only there, and the peer's current connection may belong to another life
   * of it, whose requests reuse ids. A request that came on a connection since closed (it lost
   * a simultaneous-dial race, or died) fails at its requester with Unavailable when the
   * requester sees that connection close; its caller retries. `exchange`: the request was a
   * join-exchange one, counted in joinServing.
   */
  private respond(conn: Conn, from: string, resp: RpcResponse, exchange: boolean): void {
    if (exchange) conn.joinServing--;
    if (conn.closed) return;
    if (conn.joining) {
      // The join exchange is answered where it was asked, never on the claimed id's connection.
      this.writeFrame(conn, { ...this.intro(), resps: [resp] });
      return;
    }
    const peer = this.peer(from);
    if (!peer.conn || peer.conn.closed) this.bind(peer, conn);
    if (peer.conn === conn) {
      // With whatever else the peer is sent in this turn.
      conn.resps.push(resp);
      this.schedule(peer);
    } else this.writeFrame(conn, { ...this.intro(), resps: [resp] });
  }

  /**
   * Settles the request a response answers, if it arrived on the connection the request was
   * written to (`via`; undefined for a failure found here, before sending).
   */
  private settle(r: RpcResponse, via: Conn | undefined): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    if (via !== undefined && p.conn !== via) {
      this.log.debug('response dropped: its request was not written to this connection', { peer: p.peer, id: r.id });
      return;
    }
    this.pending.delete(r.id);
    clearTimeout(p.timer);
    if (r.e) p.reject(remoteError(r.e));
    else p.resolve(r.r);
  }
}

/** Errors that came back from a peer (it ran and answered), as opposed to failures to reach it. */
const answeredErrors = new WeakSet<Error>();

/** True for an error a peer sent back (it ran the request and refused), false for a failure to hear from it. */
export function isAnsweredError(err: unknown): boolean {
  return err instanceof Error && answeredErrors.has(err);
}

/** Rebuilds a typed error from its wire form. */
export function remoteError(e: { code: string; message: string; leader?: string }): RaftblockError {
  const err = new RaftblockError(e.code, e.message);
  if (e.leader) (err as RaftblockError & { leaderHint?: string }).leaderHint = e.leader;
  answeredErrors.add(err);
  return err;
}

