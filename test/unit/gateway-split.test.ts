import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { applyCommand, emptyMap, locateExtent, pgGroupId, volumeNamed, type ClusterMap, type MapCommand } from '../../src/cluster/map.js';
import { maxPieceBytes, pgsOfRange, splitRange } from '../../src/gateway/split.js';
import { rangePiecesInFlight, VolumeBackend, type PgClient, type PgRequest } from '../../src/gateway/volume-backend.js';

function clusterMap(): ClusterMap {
  let map = emptyMap();
  const cmds: MapCommand[] = [1, 2, 3].map((id) => ({
    type: 'addNode' as const,
    id,
    addresses: { peer: `127.0.0.1:${11000 + id}`, nbd: `127.0.0.1:${10800 + id}`, http: `127.0.0.1:${10900 + id}` },
    labels: { zone: `z${id}`, rack: `r${id}`, host: `h${id}` },
  }));
  cmds.push({ type: 'createPool', name: 'default', replicas: 3, pgCount: 16, failureDomain: 'zone' });
  cmds.push({ type: 'createVolume', name: 'vol0', sizeBytes: 64 * 1024 * 1024, extentBytes: 1024 * 1024 });
  for (const c of cmds) {
    const r = applyCommand(map, c);
    assert.ok(r.ok);
    map = r.map;
  }
  return map;
}

test('a range is split at extent boundaries and at the piece size, covering it exactly, each piece in its own PG', () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const cases: [number, number][] = [
    [0, 4096],
    [1024 * 1024 - 512, 1024],
    [3 * 1024 * 1024 + 7, 5 * 1024 * 1024],
    [vol.sizeBytes - 4096, 4096],
    [0, 0],
  ];
  for (const [offset, length] of cases) {
    const pieces = splitRange(map, vol, offset, length);
    let pos = offset;
    for (const p of pieces) {
      assert.equal(p.offset, pos);
      assert.equal(p.bufferOffset, pos - offset);
      assert.ok(p.length > 0 && p.length <= maxPieceBytes);
      const first = locateExtent(map, vol, p.offset);
      const last = locateExtent(map, vol, p.offset + p.length - 1);
      assert.equal(first.extentIndex, last.extentIndex, 'a piece never spans extents');
      assert.equal(p.groupId, first.groupId);
      assert.deepEqual(p.replicas, first.replicas);
      pos += p.length;
    }
    assert.equal(pos, offset + length);
  }
  assert.equal(splitRange(map, vol, 3 * 1024 * 1024 + 7, 5 * 1024 * 1024).length, 11); // 2 + 4 extents × 2 + 1
});

test("a shrink's discard goes to the PGs of the range's extents when they are fewer than the pool's PGs, else to every PG, whatever the range", () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  const MiB = 1024 * 1024;
  const pgsOf = (from: number, to: number): number[] => {
    const seen = new Set<number>();
    for (const p of splitRange(map, { ...vol, sizeBytes: to }, from, to - from, vol.extentBytes)) seen.add(p.groupId);
    return [...seen].sort((a, b) => a - b);
  };
  // A few extents (a cut inside one): their PGs only.
  for (const [from, to] of [
    [10 * MiB + 4096, 13 * MiB],
    [63 * MiB, 64 * MiB],
    [5 * MiB, 20 * MiB],
  ]) {
    const got = pgsOfRange(map, vol, from, to);
    assert.deepEqual(got.map((g) => g.groupId), pgsOf(from, to), `[${from}, ${to})`);
    for (const g of got) assert.deepEqual(g.replicas, splitRange(map, { ...vol, sizeBytes: to }, from, to - from).find((p) => p.groupId === g.groupId)!.replicas);
  }
  // As many extents as PGs or more, up to 1 PiB (2^30 extents of 1 MiB): every PG, once.
  const pool = map.pools[0];
  const every = Array.from({ length: pool.pgCount }, (_, i) => ({ groupId: pgGroupId(pool.id, i), replicas: pool.pgs[i].replicas }));
  for (const [from, to] of [
    [0, 16 * MiB],
    [4096, 64 * MiB],
    [MiB, 2 ** 50],
  ]) {
    assert.deepEqual(pgsOfRange(map, vol, from, to), every, `[${from}, ${to})`);
  }
  assert.deepEqual(pgsOfRange(map, vol, 7 * MiB, 7 * MiB), [], 'an empty range: none');
});

test('the volume backend routes every piece to its PG and reassembles reads', async () => {
  const map = clusterMap();
  const vol = map.volumes[0];
  // A fake cluster: one byte array per PG, to prove pieces land where the map says.
  const perGroup = new Map<number, Buffer>();
  const calls: { g: number; req: PgRequest }[] = [];
  const client: PgClient = {
    map: () => map,
    async call(g, _replicas, req) {
      calls.push({ g, req });
      let mem = perGroup.get(g);
      if (!mem) perGroup.set(g, (mem = Buffer.alloc(vol.sizeBytes)));
      switch (req.k) {
        case 'write':
          req.d.copy(mem, req.o);
          return undefined;
        case 'read':
          return mem.subarray(req.o, req.o + req.l);
        case 'trim':
        case 'zero':
        case 'zeroNoHole':
          mem.fill(0, req.o, req.o + req.l);
          return undefined;
        case 'status':
          return [{ length: req.l, hole: false, zero: false }];
      }
    },
  };
  const backend = new VolumeBackend(client, vol);
  assert.equal(backend.size(), vol.sizeBytes);
  const data = randomBytes(3 * 1024 * 1024);
  const at = 1024 * 1024 - 4096;
  await backend.write(at, data, false);
  for (const { g, req } of calls) assert.equal(locateExtent(map, vol, req.o).groupId, g);
  assert.ok(new Set(calls.map((c) => c.g)).size > 1, 'a 3 MiB write spreads over several PGs');
  const back = Buffer.alloc(data.length);
  await backend.read(at, data.length, back);
  assert.deepEqual(back, data);
  calls.length = 0;
  await backend.trim(at, 2 * 1024 * 1024, false);
  assert.ok(calls.every((c) => c.req.k === 'trim' && !('d' in c.req)), 'trim travels as ranges, without payload');
  await backend.read(at, data.length, back);
  assert.deepEqual(back.subarray(0, 2 * 1024 * 1024), Buffer.alloc(2 * 1024 * 1024));
  assert.deepEqual(back.subarray(2 * 1024 * 1024), data.subarray(2 * 1024 * 1024));
  const st = await backend.blockStatus(at, 8 * 1024 * 1024);
  assert.ok(st.length >= 1 && st.reduce((n, e) => n + e.length, 0) <= 8 * 1024 * 1024);
  await assert.rejects(backend.write(vol.sizeBytes - 10, Buffer.alloc(20), false), (e: Error & { code?: string }) => e.code === 'OUT_OF_RANGE');
});

/** A client that records the requests it is asked and answers every one at once. */
function recordingClient(current: () => ClusterMap): PgClient & { calls: PgRequest[]; inFlight: number; maxInFlight: number } {
  const c = {
    calls: [] as PgRequest[],
    inFlight: 0,
    maxInFlight: 0,
    map: current,
    async call(_g: number, _replicas: number[], req: PgRequest): Promise<unknown> {
      c.calls.push(req);
      c.inFlight++;
      c.maxInFlight = Math.max(c.maxInFlight, c.inFlight);
      await new Promise((r) => setImmediate(r));
      c.inFlight--;
      return req.k === 'read' ? Buffer.alloc(req.l) : req.k === 'status' ? [{ length: req.l, hole: true, zero: true }] : 1;
    },
  };
  return c;
}

function applyAll(map: ClusterMap, cmds: MapCommand[]): ClusterMap {
  for (const c of cmds) {
    const r = applyCommand(map, c);
    assert.ok(r.ok, JSON.stringify(r));
    map = r.map;
  }
  return map;
}

test('a session stays on its volume: once deleted, a new volume of the same name is never reached through it', async () => {
  let map = clusterMap();
  const old = volumeNamed(map, 'vol0')!;
  const client = recordingClient(() => map);
  const backend = new VolumeBackend(client, old);
  await backend.write(0, Buffer.alloc(4096, 1), false);
  assert.deepEqual(client.calls.map((c) => c.v), [old.id]);
  map = applyAll(map, [
    { type: 'deleteVolume', name: 'vol0' },
    { type: 'createVolume', name: 'vol0', sizeBytes: 64 * 1024 * 1024, extentBytes: 1024 * 1024 },
  ]);
  assert.notEqual(volumeNamed(map, 'vol0')!.id, old.id);
  client.calls.length = 0;
  assert.equal(backend.size(), 0);
  for (const run of [
    () => backend.write(0, Buffer.alloc(4096, 2), false),
    () => backend.read(0, 4096, Buffer.alloc(4096)),
    () => backend.trim(0, 4096, false),
    () => backend.blockStatus(0, 4096),
  ]) {
    await assert.rejects(run(), (e: Error & { code?: string }) => e.code === 'NOT_FOUND');
  }
  assert.equal(client.calls.length, 0, 'no request reached the new volume');
});

test('a request past the end of a volume that shrank since the session began is out of range, block status included', async () => {
  let map = clusterMap();
  const client = recordingClient(() => map);
  const backend = new VolumeBackend(client, volumeNamed(map, 'vol0')!);
  map = applyAll(map, [{ type: 'resizeVolume', name: 'vol0', sizeBytes: 8 * 1024 * 1024, allowShrink: true }]);
  for (const run of [
    () => backend.blockStatus(16 * 1024 * 1024, 4096),
    () => backend.blockStatus(8 * 1024 * 1024 - 4096, 8192),
    () => backend.read(8 * 1024 * 1024, 4096, Buffer.alloc(4096)),
    () => backend.writeZeroes(8 * 1024 * 1024 - 4096, 8192, { fua: false, noHole: false, fastZero: false }),
  ]) {
    await assert.rejects(run(), (e: Error & { code?: string }) => e.code === 'OUT_OF_RANGE');
  }
  assert.equal(client.calls.length, 0);
});

test('a large TRIM or WRITE_ZEROES covers every extent with a bounded number of pieces in flight', async () => {
  const map = clusterMap();
  const vol = volumeNamed(map, 'vol0')!;
  const client = recordingClient(() => map);
  const backend = new VolumeBackend(client, vol);
  await backend.writeZeroes(0, vol.sizeBytes, { fua: false, noHole: true, fastZero: false });
  assert.equal(client.calls.length, vol.sizeBytes / vol.extentBytes);
  assert.equal(client.maxInFlight, rangePiecesInFlight);
  let covered = 0;
  for (const c of [...client.calls].sort((a, b) => a.o - b.o)) {
    assert.ok(c.k === 'zeroNoHole');
    assert.equal(c.o, covered);
    covered += c.l;
  }
  assert.equal(covered, vol.sizeBytes);
});
