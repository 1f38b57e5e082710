/**
 * Block status through the gateway over a mostly empty volume: when the first extent asked is
 * one hole and the request reaches past more extents than the pool has PGs, the gateway asks
 * every PG once where its data resumes (`nextData`, a few PGs at a time) and answers the hole
 * up to the nearest answer, never past what the client asked. A client that maps the volume
 * extent by extent gets the exact map with a handful of calls per hole instead of one per
 * extent. When a PG fails or refuses (a leader of an earlier build answers an unknown request
 * kind with INVALID_ARGUMENT), the answer is the first extent's, as before, never an error;
 * and no scan is tried again for a while, so a rolling upgrade does not multiply the calls.
 * A PG that does not answer (no leader) holds the answer up for the scan timeout at most.
 *
 * A model of the PGs' files stands for the cluster (a PgClient that answers from it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { emptyMap, locateExtent, type ClusterMap, type Volume } from '../../src/cluster/map.js';
import { addNodeCommand, applyAll } from '../helpers/map.js';
import { InvalidArgument } from '../../src/common/errors.js';
import type { BlockExtent } from '../../src/nbd/backend.js';
import {
  abandonCause,
  checkPgRequest,
  holeScanPgsInFlight,
  holeScanTimeoutMs,
  isPgRead,
  makeGatewayMetrics,
  maxHoleScansRunning,
  VolumeBackend,
  type PgClient,
  type PgRequest,
} from '../../src/gateway/volume-backend.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const pgCount = 20;
/** The largest length an NBD request without extended headers carries. */
const maxNbdLength = 2 ** 32 - 1;

function clusterMap(): ClusterMap {
  return applyAll(
    emptyMap(),
    addNodeCommand(1, { zone: 'z1' }),
    { type: 'createPool', name: 'default', replicas: 1, pgCount: pgCount, failureDomain: 'zone' },
    { type: 'createVolume', name: 'vol0', sizeBytes: 64 * GiB, extentBytes: 4 * MiB },
  );
}

/**
 * The PGs of a volume whose only data are `data` ([from, to) ranges, each inside one extent):
 * each PG's file holds the ranges of its own extents, holes elsewhere.
 */
class ModelPgs implements PgClient {
  readonly calls: { groupId: number; req: PgRequest }[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Kinds answered as a node of an earlier build does. */
  refused = new Set<string>();
  constructor(
    private readonly m: ClusterMap,
    private readonly volume: Volume,
    private readonly data: readonly [number, number][],
  ) {}
  map(): ClusterMap {
    return this.m;
  }
  async call(groupId: number, _replicas: number[], req: PgRequest, _signal?: AbortSignal): Promise<unknown> {
    this.calls.push({ groupId, req });
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setImmediate(r));
      if (this.refused.has(req.k)) throw new InvalidArgument(`PG request: unknown kind ${JSON.stringify(req.k)}`);
      if (req.k === 'status') return this.status(req.o, req.o + req.l);
      if (req.k === 'nextData') return this.nextData(groupId, req.o, req.o + req.l);
      throw new Error(`unexpected ${req.k}`);
    } finally {
      this.inFlight--;
    }
  }
  private groupOf(offset: number): number {
    return locateExtent(this.m, this.volume, offset).groupId;
  }
  private status(from: number, to: number): BlockExtent[] {
    const out: BlockExtent[] = [];
    let pos = from;
    for (const [a, b] of this.data) {
      if (b <= pos || a >= to) continue;
      if (a > pos) out.push({ length: a - pos, hole: true, zero: true });
      const end = Math.min(b, to);
      out.push({ length: end - Math.max(a, pos), hole: false, zero: false });
      pos = end;
    }
    if (pos < to) out.push({ length: to - pos, hole: true, zero: true });
    return out;
  }
  private nextData(groupId: number, from: number, to: number): number {
    let at = to;
    for (const [a, b] of this.data) if (b > from && a < to && this.groupOf(a) === groupId) at = Math.min(at, Math.max(a, from));
    return at;
  }
  scans(): number {
    return this.calls.filter((c) => c.req.k === 'nextData').length;
  }
}

/** Block status from `offset` to the volume's end as a client maps it: asked again from where each answer stopped. */
async function mapVolume(backend: VolumeBackend, size: number): Promise<{ extents: { offset: number; length: number; hole: boolean }[]; requests: number }> {
  const out: { offset: number; length: number; hole: boolean }[] = [];
  let pos = 0;
  let requests = 0;
  while (pos < size) {
    const answer = await backend.blockStatus(pos, Math.min(size - pos, maxNbdLength));
    requests++;
    for (const e of answer) {
      assert.ok(e.length > 0 && e.length <= maxNbdLength, `an extent of ${e.length} bytes`);
      const last = out.at(-1);
      if (last && last.hole === e.hole) last.length += e.length;
      else out.push({ offset: pos, length: e.length, hole: e.hole });
      pos += e.length;
    }
  }
  return { extents: out, requests };
}

test('mapping a 64 GiB volume with three blocks of data: the exact map, in a few requests, each scan one call per PG', async (t) => {
  const map = clusterMap();
  const vol = map.volumes[0];
  // Near the start, in the middle (not at an extent's start), and the last block.
  const data: [number, number][] = [
    [8 * MiB, 8 * MiB + 4 * KiB],
    [30 * GiB + 12 * KiB, 30 * GiB + 20 * KiB],
    [vol.sizeBytes - 4 * KiB, vol.sizeBytes],
  ];
  const client = new ModelPgs(map, vol, data);
  const registry = new Registry();
  const backend = new VolumeBackend(client, vol, makeGatewayMetrics(registry));
  const { extents, requests } = await mapVolume(backend, vol.sizeBytes);
  assert.deepEqual(extents, [
    { offset: 0, length: 8 * MiB, hole: true },
    { offset: 8 * MiB, length: 4 * KiB, hole: false },
    { offset: 8 * MiB + 4 * KiB, length: 30 * GiB + 12 * KiB - (8 * MiB + 4 * KiB), hole: true },
    { offset: 30 * GiB + 12 * KiB, length: 8 * KiB, hole: false },
    { offset: 30 * GiB + 20 * KiB, length: vol.sizeBytes - 4 * KiB - (30 * GiB + 20 * KiB), hole: true },
    { offset: vol.sizeBytes - 4 * KiB, length: 4 * KiB, hole: false },
  ]);
  const extentCount = vol.sizeBytes / vol.extentBytes;
  t.diagnostic(`${requests} block status requests, ${client.calls.length} PG calls (${client.scans()} nextData) for ${extentCount} extents`);
  // About one request per 4 GiB the client may ask at once, and a few around each block.
  assert.ok(requests <= 32, `${requests} block status requests for ${extentCount} extents`);
  assert.ok(client.calls.length <= requests * (1 + pgCount), `${client.calls.length} PG calls`);
  assert.ok(client.maxInFlight <= holeScanPgsInFlight, `${client.maxInFlight} PG calls in flight at once`);
  const scans = (await registry.getSingleMetric('raftblock_gateway_hole_scans_total')!.get()).values;
  assert.ok(scans.some((v) => v.labels.outcome === 'answered' && v.value > 0), 'scans counted as answered');
  assert.ok(!scans.some((v) => v.labels.outcome !== 'answered' && v.value > 0), `no scan fell back: ${JSON.stringify(scans)}`);
});

test('an empty volume answers one hole per request, exactly as long as asked even when the request ends inside an extent', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const client = new ModelPgs(map, vol, []);
  const backend = new VolumeBackend(client, vol);
  const asked = 100 * MiB + 5;
  assert.deepEqual(await backend.blockStatus(4 * KiB, asked), [{ length: asked, hole: true, zero: true }]);
  const scans = client.calls.filter((c) => c.req.k === 'nextData');
  // One call per PG holding an extent of the rest of the range (25 extents; the others hold none of it).
  const pgsOfRest = new Set<number>();
  for (let at = 4 * MiB; at < 4 * KiB + asked; at += 4 * MiB) pgsOfRest.add(locateExtent(map, vol, at).groupId);
  assert.ok(pgsOfRest.size > 1 && pgsOfRest.size <= pgCount);
  assert.equal(scans.length, pgsOfRest.size, 'one call per PG of the range');
  assert.deepEqual(new Set(scans.map((c) => c.groupId)), pgsOfRest);
  for (const c of scans) assert.deepEqual(c.req, { k: 'nextData', v: vol.id, o: 4 * MiB, l: 4 * KiB + asked - 4 * MiB });
});

test('no scan when the first extent holds data, or when the rest of the request spans no more extents than the pool has PGs', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const client = new ModelPgs(map, vol, [[4 * KiB, 8 * KiB]]);
  const backend = new VolumeBackend(client, vol);
  assert.deepEqual(await backend.blockStatus(0, GiB), [
    { length: 4 * KiB, hole: true, zero: true },
    { length: 4 * KiB, hole: false, zero: false },
    { length: 4 * MiB - 8 * KiB, hole: true, zero: true },
  ]);
  assert.deepEqual(await backend.blockStatus(4 * MiB, pgCount * 4 * MiB), [{ length: 4 * MiB, hole: true, zero: true }]);
  assert.equal(client.scans(), 0);
  // One extent more than the pool has PGs past the first: scanned.
  assert.deepEqual(await backend.blockStatus(4 * MiB, (pgCount + 2) * 4 * MiB), [{ length: (pgCount + 2) * 4 * MiB, hole: true, zero: true }]);
  const pgsOfRest = new Set<number>();
  for (let e = 2; e < pgCount + 3; e++) pgsOfRest.add(locateExtent(map, vol, e * 4 * MiB).groupId);
  assert.equal(client.scans(), pgsOfRest.size, 'one call per PG holding an extent of the rest');
});

test('a scan a PG refuses (a node of an earlier build) falls back to the first extent, and none is tried for a while', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const client = new ModelPgs(map, vol, [[40 * GiB, 40 * GiB + 4 * KiB]]);
  client.refused.add('nextData');
  const registry = new Registry();
  const backend = new VolumeBackend(client, vol, makeGatewayMetrics(registry));
  assert.deepEqual(await backend.blockStatus(0, 4 * GiB), [{ length: 4 * MiB, hole: true, zero: true }]);
  assert.ok(client.scans() >= 1 && client.scans() <= holeScanPgsInFlight, `${client.scans()} scan calls`);
  const scans = (await registry.getSingleMetric('raftblock_gateway_hole_scans_total')!.get()).values;
  assert.deepEqual(scans.map((v) => [v.labels.outcome, v.value]), [['refused', 1]]);
  // Paused: the next requests ask their first extent only, as before the scan existed.
  const before = client.calls.length;
  assert.deepEqual(await backend.blockStatus(4 * MiB, 4 * GiB), [{ length: 4 * MiB, hole: true, zero: true }]);
  assert.deepEqual(client.calls.slice(before).map((c) => c.req.k), ['status']);
  // A malformed answer falls back too.
  const odd = new ModelPgs(map, vol, []);
  odd.call = async (_g, _r, req) => (req.k === 'status' ? [{ length: req.l, hole: true, zero: true }] : req.o - 1);
  assert.deepEqual(await new VolumeBackend(odd, vol).blockStatus(0, 4 * GiB), [{ length: 4 * MiB, hole: true, zero: true }]);
});

test('a nextData request from a peer is checked as a read of any range of a volume', () => {
  assert.deepEqual(checkPgRequest({ k: 'nextData', v: 3, o: 4 * MiB, l: 2 ** 50 - 4 * MiB }), { k: 'nextData', v: 3, o: 4 * MiB, l: 2 ** 50 - 4 * MiB });
  for (const bad of [{ l: -1 }, { l: 2 ** 50 + 1 }, { l: 1.5 }, { l: undefined }, { o: -4096 }, { v: 0 }]) {
    assert.throws(() => checkPgRequest({ k: 'nextData', v: 3, o: 0, l: 4096, ...bad }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT', JSON.stringify(bad));
  }
  assert.ok(isPgRead({ k: 'nextData', v: 3, o: 0, l: 4096 }), 'no log entry, no request id, no store command level');
});

test('a scan one PG does not answer (no leader) falls back within the scan timeout instead of holding up the answer', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const client = new ModelPgs(map, vol, []);
  const silent = locateExtent(map, vol, 12 * MiB).groupId;
  const answer = client.call.bind(client);
  let silentSignal: AbortSignal | undefined;
  client.call = (groupId, replicas, req, signal) => {
    if (req.k !== 'nextData' || groupId !== silent) return answer(groupId, replicas, req);
    silentSignal = signal;
    return new Promise(() => {});
  };
  const registry = new Registry();
  const started = performance.now();
  assert.deepEqual(await new VolumeBackend(client, vol, makeGatewayMetrics(registry)).blockStatus(0, 4 * GiB), [{ length: 4 * MiB, hole: true, zero: true }]);
  const ms = performance.now() - started;
  assert.ok(ms >= holeScanTimeoutMs - 50 && ms < holeScanTimeoutMs + 1000, `answered after ${Math.round(ms)} ms`);
  assert.equal(silentSignal?.aborted, true, 'the unanswered call is abandoned with the scan');
  assert.equal(abandonCause(silentSignal), 'scan_over', 'a scan that ended is told from a client that left');
  const scans = (await registry.getSingleMetric('raftblock_gateway_hole_scans_total')!.get()).values;
  assert.deepEqual(scans.map((v) => [v.labels.outcome, v.value]), [['timed_out', 1]]);
});

test("a scan's calls are abandoned as the client's when its NBD client leaves during the scan", async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const client = new ModelPgs(map, vol, []);
  const silent = locateExtent(map, vol, 12 * MiB).groupId;
  const answer = client.call.bind(client);
  const clientGone = new AbortController();
  let silentSignal: AbortSignal | undefined;
  client.call = (groupId, replicas, req, signal) => {
    if (req.k !== 'nextData' || groupId !== silent) return answer(groupId, replicas, req);
    silentSignal = signal;
    // The client leaves while this PG has not answered.
    setImmediate(() => clientGone.abort());
    return new Promise((_resolve, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }));
  };
  const registry = new Registry();
  await new VolumeBackend(client, vol, makeGatewayMetrics(registry)).blockStatus(0, 4 * GiB, clientGone.signal);
  assert.equal(silentSignal?.aborted, true);
  assert.equal(abandonCause(silentSignal), 'client_gone');
  const scans = (await registry.getSingleMetric('raftblock_gateway_hole_scans_total')!.get()).values;
  assert.deepEqual(scans.map((v) => [v.labels.outcome, v.value]), [['client_gone', 1]]);
});

test('data a few extents past a hole ends the scan once the PGs of the extents before it have answered, not after every PG', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  // Data in the fourth extent after the first asked.
  const dataAt = 16 * MiB + 8 * KiB;
  const client = new ModelPgs(map, vol, [[dataAt, dataAt + 4 * KiB]]);
  assert.deepEqual(await new VolumeBackend(client, vol).blockStatus(0, 4 * GiB), [{ length: dataAt, hole: true, zero: true }]);
  // The PGs of extents 1-4 (at most four), asked in waves of 1, 2 and 4: at most seven calls.
  const asked = new Set(client.calls.filter((c) => c.req.k === 'nextData').map((c) => c.groupId));
  for (let e = 1; e <= 4; e++) assert.ok(asked.has(locateExtent(map, vol, e * 4 * MiB).groupId), `extent ${e}'s PG asked`);
  assert.ok(client.scans() <= 7, `${client.scans()} nextData calls for data four extents on (${pgCount} PGs)`);
});

test('no more than a few scans run at once in a process: a block status beyond them answers its first extent only', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const client = new ModelPgs(map, vol, []);
  const answer = client.call.bind(client);
  const held: (() => void)[] = [];
  client.call = async (groupId, replicas, req) => {
    if (req.k === 'nextData') await new Promise<void>((r) => held.push(r));
    return answer(groupId, replicas, req);
  };
  const registry = new Registry();
  const backend = new VolumeBackend(client, vol, makeGatewayMetrics(registry));
  const running = Array.from({ length: maxHoleScansRunning }, (_, i) => backend.blockStatus(i * 8 * GiB, 4 * GiB));
  while (held.length < maxHoleScansRunning) await new Promise((r) => setImmediate(r));
  assert.deepEqual(await backend.blockStatus(40 * GiB, 4 * GiB), [{ length: 4 * MiB, hole: true, zero: true }], 'beyond the limit: the first extent');
  const release = setInterval(() => held.splice(0).forEach((r) => r()), 1);
  try {
    for (const r of await Promise.all(running)) assert.deepEqual(r, [{ length: 4 * GiB, hole: true, zero: true }]);
  } finally {
    clearInterval(release);
  }
  const scans = (await registry.getSingleMetric('raftblock_gateway_hole_scans_total')!.get()).values;
  assert.deepEqual(Object.fromEntries(scans.map((v) => [v.labels.outcome, v.value])), { answered: maxHoleScansRunning, busy: 1 });
});
