/**
 * A volume as an NBD `BlockBackend` over the cluster: every request is split into pieces (one
 * PG each, see split.ts) that go to their PG's leader through a `PgClient` (a local call on the
 * leader's node, else an RPC on the peer connection; the client retries NotLeader, stale
 * epochs and lost connections). A write resolves only once its entries are committed — durable
 * on a quorum — and applied on the leader, so FLUSH has nothing left to do, FUA holds without
 * extra work, and every connection sees every completed write (CAN_MULTI_CONN is honest).
 */
import { Counter, type Registry } from 'prom-client';
import { FlatHistogram } from '../metrics/flat-histogram.js';
import { assert } from '../common/assert.js';
import { InvalidArgument, NotFound, NotSupported, OutOfRange, ProtocolError, RaftblockError, Unavailable } from '../common/errors.js';
import type { BackendCapabilities, BlockBackend, BlockExtent, BlockSizes } from '../nbd/backend.js';
import { findPool, maxExtentBytes, maxVolumeBytes, pgGroupId, pgOfExtent, volumeWithId, type ClusterMap, type Pool, type Volume } from '../cluster/map.js';
import { maxPieceBytes, splitRange, type Piece } from './split.js';
import { discardFromAlignmentBytes, maxOpLengthBytes } from '../store/ops.js';
import { maxRequestSession, RequestIdSource } from '../common/request-id.js';
import { inLanes } from '../common/lanes.js';
import { within } from '../common/within.js';

/** This process's PG request ids (see common/request-id.ts). */
const requestIds = new RequestIdSource();

export function nextRequestId(): { s: number; q: number } {
  return { s: requestIds.session, q: requestIds.nextSeq() };
}

/**
 * What a piece asks of its PG. Mutations carry a request id (s: session, q: sequence) fixed
 * before the first attempt, so that however often the piece is retried it applies once. A
 * retry also carries `nb`: an index of the PG's log known before the first attempt was sent
 * (its entry, if any, comes later), by which the leader judges whether the PG's dedupe window
 * still covers it (PgStore.coversRetry). A mutation's answer is its entry's log index.
 *
 * `discardFrom` (from StorageNode.discardPastEnd, never from a client) makes every byte of
 * volume `v` at or past `o` that the PG holds a hole: a shrunk volume's old data, in one
 * command per PG (ops.ts DiscardFrom). A request id as every mutation's (see ops.ts why).
 * A node of the build before it discarded with trims flagged `pastEnd`, one extent each: still
 * served, so that a shrink such a node runs during a rolling upgrade finishes (never sent).
 *
 * `nextData` answers the first offset of [o, o + l) where the PG holds anything but a hole
 * (data or allocated zeros) of volume `v`, or o + l (PgStore.nextData): block status asks
 * every PG of the pool once to find where a long hole ends. A node of an earlier build
 * refuses it (an unknown kind), and the gateway then answers as that build did.
 */
export type PgRequest =
  | { k: 'write'; v: number; o: number; d: Buffer; s: number; q: number; nb?: number }
  | { k: 'trim' | 'zero' | 'zeroNoHole'; v: number; o: number; l: number; s: number; q: number; nb?: number; pastEnd?: true }
  | { k: 'discardFrom'; v: number; o: number; s: number; q: number; nb?: number }
  | { k: 'read'; v: number; o: number; l: number }
  | { k: 'status'; v: number; o: number; l: number }
  | { k: 'nextData'; v: number; o: number; l: number };

/** A PgRequest that changes data (a log entry with a request id). */
export type PgMutation = Extract<PgRequest, { s: number }>;

/**
 * Whether `req` only reads the PG's state: served after a read barrier, with no log entry, no
 * request id and no store command level of its own.
 */
export function isPgRead(req: PgRequest): req is Extract<PgRequest, { k: 'read' | 'status' | 'nextData' }> {
  return req.k === 'read' || req.k === 'status' || req.k === 'nextData';
}

const u32 = 2 ** 32;

function isCount(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
}

/**
 * Checks a PgRequest that arrived from a peer (types and ranges; whether the volume and the
 * range exist is the serving node's fence). Throws InvalidArgument on anything else.
 */
export function checkPgRequest(q: unknown): PgRequest {
  if (typeof q !== 'object' || q === null) throw new InvalidArgument('PG request is not an object');
  const r = q as Record<string, unknown>;
  if (!isCount(r.v, u32 - 1) || r.v === 0) throw new InvalidArgument('PG request: bad volume id');
  if (!isCount(r.o, maxVolumeBytes)) throw new InvalidArgument('PG request: bad offset');
  const mutation = (): void => {
    if (!isCount(r.s, maxRequestSession) || !isCount(r.q, u32 - 1)) throw new InvalidArgument('PG request: bad request id');
    if (r.nb !== undefined && !isCount(r.nb, Number.MAX_SAFE_INTEGER)) throw new InvalidArgument('PG request: bad retry index');
  };
  switch (r.k) {
    case 'write':
      if (!(r.d instanceof Uint8Array) || r.d.byteLength === 0 || r.d.byteLength > maxPieceBytes) throw new InvalidArgument('PG request: bad write payload');
      mutation();
      return q as PgRequest;
    case 'trim':
    case 'zero':
    case 'zeroNoHole':
      if (!isCount(r.l, maxOpLengthBytes)) throw new InvalidArgument('PG request: bad length');
      if (r.pastEnd !== undefined && (r.pastEnd !== true || r.k !== 'trim')) throw new InvalidArgument('PG request: bad pastEnd flag');
      mutation();
      return q as PgRequest;
    case 'discardFrom':
      if (r.o % discardFromAlignmentBytes !== 0) throw new InvalidArgument('PG request: discard offset not aligned');
      mutation();
      return q as PgRequest;
    case 'read':
      if (!isCount(r.l, maxPieceBytes)) throw new InvalidArgument('PG request: bad length');
      return q as PgRequest;
    case 'status':
      if (!isCount(r.l, maxExtentBytes)) throw new InvalidArgument('PG request: bad length');
      return q as PgRequest;
    case 'nextData':
      // Any range of the volume (the serving node fences it): its cost is the runs the PG's
      // file holds there, not its length.
      if (!isCount(r.l, maxVolumeBytes)) throw new InvalidArgument('PG request: bad length');
      return q as PgRequest;
    default:
      throw new InvalidArgument(`PG request: unknown kind ${JSON.stringify(r.k)}`);
  }
}

/**
 * The abort reason of the calls a hole scan leaves running when it ends (answered, timed out
 * or failed): no client is gone, so a PgClient counts them apart from a client's disconnect.
 */
export class HoleScanOver extends Unavailable {
  constructor() {
    super('the hole scan that asked for this has ended: call abandoned');
  }
}

/** Why a PgClient gave a call up before its deadline (the `cause` of the abandoned counter). */
export type AbandonCause = 'client_gone' | 'scan_over';

/** The cause of abandoning a call whose `signal` was aborted. */
export function abandonCause(signal: AbortSignal): AbandonCause {
  return signal.reason instanceof HoleScanOver ? 'scan_over' : 'client_gone';
}

/** Routes a request to the leader of `groupId` and returns its result. */
export interface PgClient {
  /** The current cluster map (refreshed by the client when it learns of a newer epoch). */
  map(): ClusterMap;
  /**
   * `read` resolves with the bytes, `status` with extents, `nextData` with an offset, a
   * mutation with its entry's log index. Once `signal` is aborted the client stops retrying and
   * rejects: the NBD client is gone, or (reason a HoleScanOver) the hole scan that made the
   * call has its answer without it.
   */
  call(groupId: number, replicas: number[], req: PgRequest, signal?: AbortSignal): Promise<unknown>;
}

export interface GatewayMetrics {
  latency: FlatHistogram<'command'>;
  bytes: Counter;
  /** Attempts of a piece after its first (NotLeader, timeouts, stale epochs, lost peers). */
  retries: Counter;
  /** Pieces given up before their deadline, by cause (see AbandonCause). */
  abandoned: Counter<'cause'>;
  /** Pieces abandoned at a silent PG leader because its other replicas named a new one. */
  leaderProbeRedirects: Counter;
  /** Block statuses that asked every PG of the pool where a hole ends, by outcome. */
  holeScans: Counter<'outcome'>;
}

export function makeGatewayMetrics(registry: Registry | undefined): GatewayMetrics {
  const registers = registry ? [registry] : [];
  return {
    latency: new FlatHistogram({
      name: 'raftblock_gateway_request_seconds',
      help: 'Gateway request latency by NBD command (count = requests, rate = IOPS)',
      labelNames: ['command'],
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5],
      registers,
    }),
    bytes: new Counter({ name: 'raftblock_gateway_bytes_total', help: 'Bytes read and written through the gateway', labelNames: ['command'], registers }),
    retries: new Counter({ name: 'raftblock_gateway_retries_total', help: 'Retried attempts of request pieces (NotLeader, timeouts, stale epochs, lost peers)', registers }),
    abandoned: new Counter({
      name: 'raftblock_gateway_abandoned_total',
      help: 'Request pieces given up before their deadline, by cause: client_gone (the NBD client disconnected), scan_over (the block status hole scan that asked ended without them)',
      labelNames: ['cause'],
      registers,
    }),
    leaderProbeRedirects: new Counter({
      name: 'raftblock_gateway_leader_probe_redirects_total',
      help: 'Pieces a gateway without a replica abandoned at a silent PG leader because the other replicas named a new one',
      registers,
    }),
    holeScans: new Counter({
      name: 'raftblock_gateway_hole_scans_total',
      help:
        'Block status requests that asked the PGs of the pool where a hole ends, by outcome: answered; or, the answer then covering ' +
        'the first extent only: busy (too many scans under way), refused (a node of an earlier build), timed_out, failed, client_gone',
      labelNames: ['outcome'],
      registers,
    }),
  };
}

export const gatewayMaxRequestBytes = 32 * 1024 * 1024;

/** Pieces of one TRIM or WRITE_ZEROES in flight at once (a write's are bounded by its bytes). */
export const rangePiecesInFlight = 16;

/** PGs one block status asks at once where a hole ends (bounded as a TRIM's pieces are). */
export const holeScanPgsInFlight = rangePiecesInFlight;

/**
 * Hole scans under way at once in this process, over every volume and connection: each may ask
 * every PG of a pool, so a client with hundreds of block statuses in flight would otherwise
 * multiply its calls by the pool's PG count. A block status finding this many running answers
 * the first extent only, as it did before scans existed.
 */
export const maxHoleScansRunning = 2;

/**
 * Pools of more PGs are not scanned: a scan of them could not finish within holeScanTimeoutMs
 * when the data lies far away, and would keep more calls busy than it saves.
 */
export const maxHoleScanPgs = 1024;

let holeScansRunning = 0;

/** How a hole scan ended, as counted by raftblock_gateway_hole_scans_total. */
type HoleScanOutcome = 'answered' | 'busy' | 'refused' | 'timed_out' | 'failed' | 'client_gone';

/**
 * After a hole scan fails, block status answers the first extent only for this long. A failure
 * is most likely a node of an earlier build mid rolling upgrade, which refuses every scan:
 * scanning again at each extent would add a call per PG to every call the scan meant to save.
 */
export const holeScanPauseAfterFailureMs = 10_000;

/**
 * A hole scan not answered within this long falls back (and pauses scans, as a failure does):
 * it waits on every PG of the pool, and one without a leader would hold up, for as long as the
 * gateway retries, a block status that its own extent's PG answered at once.
 */
export const holeScanTimeoutMs = 2_000;

/** Whether a block status answer is one hole covering all of `lengthBytes`. */
function isOneHole(extents: readonly BlockExtent[], lengthBytes: number): boolean {
  return extents.length === 1 && extents[0].hole && extents[0].zero && extents[0].length === lengthBytes;
}

/**
 * Waits until every piece has settled, then fails with the first failure. A request must not
 * settle while one of its pieces still runs: the NBD server then reuses the request's pooled
 * buffer, which a piece still in flight would read from (a retried write sending another
 * request's bytes) or write into (a read landing in another request's buffer).
 */
async function allPieces(pieces: Promise<unknown>[]): Promise<void> {
  if (pieces.length === 1) {
    await pieces[0];
    return;
  }
  for (const r of await Promise.allSettled(pieces)) if (r.status === 'rejected') throw r.reason;
}

export class VolumeBackend implements BlockBackend {
  readonly capabilities: BackendCapabilities = {
    readOnly: false,
    canTrim: true,
    canWriteZeroes: true,
    // WRITE_ZEROES is a range in the log: always fast.
    canFastZero: true,
    canCache: true,
    canMultiConn: true,
    canBlockStatus: true,
  };
  readonly blockSizes: BlockSizes = { minimum: 1, preferred: 4096, maximum: gatewayMaxRequestBytes };
  private readonly client: PgClient;
  /** The volume's name, for messages. */
  readonly name: string;
  /**
   * The volume this backend serves, by id: names are reused once a volume is deleted, and a
   * session opened on the old volume must never reach a new one of the same name.
   */
  readonly volumeId: number;
  private readonly metrics: GatewayMetrics | undefined;
  /** performance.now() before which no hole scan starts (see holeScanPauseAfterFailureMs). */
  private holeScansPausedUntilMs = 0;

  constructor(client: PgClient, volume: Pick<Volume, 'name' | 'id'>, metrics?: GatewayMetrics) {
    this.client = client;
    this.name = volume.name;
    this.volumeId = volume.id;
    this.metrics = metrics;
  }

  private volume(): Volume {
    const v = volumeWithId(this.client.map(), this.volumeId);
    if (!v) throw new NotFound(`volume ${this.name} (id ${this.volumeId}) was deleted`);
    return v;
  }

  size(): number {
    return volumeWithId(this.client.map(), this.volumeId)?.sizeBytes ?? 0;
  }

  /** The volume, with `offset + length` checked against its size now (it may have shrunk since the session began). */
  private volumeCovering(offset: number, length: number): Volume {
    const volume = this.volume();
    if (offset + length > volume.sizeBytes) throw new OutOfRange(`range ${offset}+${length} beyond volume ${this.name} (${volume.sizeBytes} bytes)`);
    return volume;
  }

  private pieces(offset: number, length: number): { volume: Volume; pieces: Piece[] } {
    const volume = this.volumeCovering(offset, length);
    return { volume, pieces: splitRange(this.client.map(), volume, offset, length) };
  }

  private async timed<T>(command: string, bytes: number, fn: () => Promise<T>): Promise<T> {
    const startedMs = performance.now();
    const out = await fn();
    this.metrics?.latency.labels(command).observe((performance.now() - startedMs) / 1000);
    if (bytes > 0) this.metrics?.bytes.inc({ command }, bytes);
    return out;
  }

  read(offset: number, length: number, into: Buffer, signal?: AbortSignal): Promise<BlockExtent[] | undefined> {
    return this.timed('read', length, async () => {
      const { volume, pieces } = this.pieces(offset, length);
      await allPieces(
        pieces.map(async (p) => {
          const data = (await this.client.call(p.groupId, p.replicas, { k: 'read', v: volume.id, o: p.offset, l: p.length }, signal)) as Uint8Array;
          into.set(data.subarray(0, p.length), p.bufferOffset);
        }),
      );
      return undefined;
    });
  }

  write(offset: number, data: Buffer, _fua: boolean, signal?: AbortSignal): Promise<void> {
    return this.timed('write', data.length, async () => {
      const { volume, pieces } = this.pieces(offset, data.length);
      await allPieces(
        pieces.map((p) =>
          this.client.call(p.groupId, p.replicas, { k: 'write', v: volume.id, o: p.offset, d: data.subarray(p.bufferOffset, p.bufferOffset + p.length), ...nextRequestId() }, signal),
        ),
      );
    });
  }

  /** Every acknowledged write is already committed on a quorum. */
  async flush(): Promise<void> {
    this.metrics?.latency.labels('flush').observe(0);
  }

  trim(offset: number, length: number, _fua: boolean, signal?: AbortSignal): Promise<void> {
    return this.timed('trim', 0, () => this.range('trim', offset, length, signal));
  }

  writeZeroes(offset: number, length: number, flags: { fua: boolean; noHole: boolean; fastZero: boolean }, signal?: AbortSignal): Promise<void> {
    return this.timed('write_zeroes', 0, () => this.range(flags.noHole ? 'zeroNoHole' : 'zero', offset, length, signal));
  }

  private async range(k: 'trim' | 'zero' | 'zeroNoHole', offset: number, length: number, signal: AbortSignal | undefined): Promise<void> {
    const volume = this.volumeCovering(offset, length);
    // Ranges carry no payload, so they are split only at extents (not at the piece size), and
    // at the largest range one store command may hold (an extent can be larger).
    const pieces = splitRange(this.client.map(), volume, offset, length, Math.min(volume.extentBytes, maxOpLengthBytes));
    // A range of many extents (a 4 GiB discard of 4 MiB extents is 1,024 pieces) goes out a
    // few pieces at a time: all at once, one request would queue a proposal in every PG and
    // crowd out every other client's I/O until it is done.
    // Once a piece fails the request fails: no new piece starts, the ones in flight finish.
    await allPieces(inLanes(pieces, rangePiecesInFlight, (p) => this.client.call(p.groupId, p.replicas, { k, v: volume.id, o: p.offset, l: p.length, ...nextRequestId() }, signal)));
  }

  /** Nothing to prefetch across the network that the leader's page cache would not hold. */
  async cache(_offset: number, _length: number): Promise<void> {}

  /**
   * The first extent's status at most (the spec lets an answer cover less than asked; the
   * client asks again for the rest), with one exception: when that extent is one hole and the
   * request reaches past more extents than the pool has PGs, every PG is asked once where its
   * data resumes, and the answer is the hole up to the nearest. Mapping a mostly empty volume
   * then costs a few calls per PG, not one per extent (2^28 for 1 PiB of 4 MiB extents).
   */
  blockStatus(offset: number, length: number, signal?: AbortSignal): Promise<BlockExtent[]> {
    return this.timed('block_status', 0, async () => {
      const volume = this.volumeCovering(offset, length);
      // Only the first extent is split out (a 4 GiB request of 4 MiB extents would be 1,024 pieces).
      const inFirstExtent = Math.min(length, volume.extentBytes - (offset % volume.extentBytes));
      const p = splitRange(this.client.map(), volume, offset, inFirstExtent, volume.extentBytes)[0];
      if (!p) throw new NotSupported('empty block status request');
      const extents = (await this.client.call(p.groupId, p.replicas, { k: 'status', v: volume.id, o: p.offset, l: p.length }, signal)) as BlockExtent[];
      if (!isOneHole(extents, p.length) || inFirstExtent === length) return extents;
      const holeEnd = await this.holeEnd(volume, offset + inFirstExtent, offset + length, signal);
      if (holeEnd === undefined) return extents;
      // Within what the client asked, so within the 32-bit length of a reply's descriptor.
      assert(holeEnd > offset && holeEnd - offset <= length, `hole end ${holeEnd} outside block status ${offset}+${length}`);
      return [{ length: holeEnd - offset, hole: true, zero: true }];
    });
  }

  /**
   * Where the hole that begins at `from` ends before `to` (see scanForData). Undefined when a
   * scan is not worth it (the range spans no more extents than the pool has PGs: asking each
   * extent costs no more; or the pool has more than maxHoleScanPgs), when scans are paused or
   * too many run, or when the scan fails in any way: the caller then answers as if no scan had
   * been made, so a block status never fails for it (a PG leader of an earlier build refuses
   * the request). Every call a scan leaves running is abandoned when it ends.
   */
  private async holeEnd(volume: Volume, from: number, to: number, signal: AbortSignal | undefined): Promise<number | undefined> {
    if (performance.now() < this.holeScansPausedUntilMs || signal?.aborted) return undefined;
    const pool = findPool(this.client.map(), volume.pool);
    const extents = Math.ceil(to / volume.extentBytes) - Math.floor(from / volume.extentBytes);
    if (extents <= pool.pgCount || pool.pgCount > maxHoleScanPgs) return undefined;
    if (holeScansRunning >= maxHoleScansRunning) {
      this.metrics?.holeScans.inc({ outcome: 'busy' });
      return undefined;
    }
    holeScansRunning++;
    const scan = new AbortController();
    const onClientGone = (): void => scan.abort(signal?.reason);
    signal?.addEventListener('abort', onClientGone, { once: true });
    let outcome: HoleScanOutcome = 'answered';
    try {
      const end = await within(this.scanForData(pool, volume, from, to, scan.signal), holeScanTimeoutMs);
      if (end === undefined) outcome = 'timed_out';
      return end;
    } catch (err) {
      outcome = signal?.aborted ? 'client_gone' : err instanceof RaftblockError && err.code === 'INVALID_ARGUMENT' ? 'refused' : 'failed';
      return undefined;
    } finally {
      scan.abort(new HoleScanOver());
      signal?.removeEventListener('abort', onClientGone);
      holeScansRunning--;
      // A client that left says nothing of the cluster: later scans go on.
      if (outcome !== 'answered' && outcome !== 'client_gone') this.holeScansPausedUntilMs = performance.now() + holeScanPauseAfterFailureMs;
      this.metrics?.holeScans.inc({ outcome });
    }
  }

  /**
   * The first offset of [from, to) where any PG holds anything but a hole, or `to`. The PGs
   * holding an extent of the range are asked (`nextData`, over the hole known so far) in the
   * order of the first such extent each holds, in waves of 1, 2, 4, ... up to
   * holeScanPgsInFlight at once, and the scan ends as soon as the PGs of every extent before the
   * nearest answer have answered: no other PG holds a byte below it. Data a few extents on thus
   * costs a few calls, a hole to `to` one call per PG. Fails if a call fails or answers outside
   * the range it was asked.
   */
  private async scanForData(pool: Pool, volume: Volume, from: number, to: number, signal: AbortSignal): Promise<number> {
    const firstExtent = Math.floor(from / volume.extentBytes);
    const lastExtent = Math.floor((to - 1) / volume.extentBytes);
    /** PG indexes by the first extent at or after `from` each holds; that extent's start. */
    const order: number[] = [];
    const startOf: number[] = [];
    const seen = new Set<number>();
    for (let e = firstExtent; e <= lastExtent && order.length < pool.pgCount; e++) {
      const pg = pgOfExtent(volume.id, e, pool.pgCount);
      if (seen.has(pg)) continue;
      seen.add(pg);
      order.push(pg);
      startOf.push(Math.max(from, e * volume.extentBytes));
    }
    let end = to;
    const ask = async (pg: number): Promise<void> => {
      const askedEnd = end;
      const at = await this.client.call(pgGroupId(pool.id, pg), pool.pgs[pg].replicas, { k: 'nextData', v: volume.id, o: from, l: askedEnd - from }, signal);
      if (typeof at !== 'number' || !Number.isSafeInteger(at) || at < from || at > askedEnd) {
        throw new ProtocolError(`group ${pgGroupId(pool.id, pg)}: next data at ${String(at)}, outside [${from}, ${askedEnd}]`);
      }
      end = Math.min(end, at);
    };
    // order[0..asked) have answered: no PG past them holds a byte below startOf[asked].
    for (let asked = 0, wave = 1; asked < order.length; asked += wave, wave = Math.min(2 * wave, holeScanPgsInFlight)) {
      if (end === from || end <= startOf[asked]) break;
      if (signal.aborted) throw signal.reason instanceof HoleScanOver ? signal.reason : new Unavailable('hole scan abandoned: the NBD client is gone');
      await Promise.all(order.slice(asked, asked + wave).map(ask));
    }
    return end;
  }

  async close(): Promise<void> {}
}
