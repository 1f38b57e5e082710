import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addNodeCommand, applyAll, nodeAddresses } from '../helpers/map.js';
import fc from 'fast-check';
import {
  applyCommand,
  checkMap,
  decodeCommand,
  decodeMap,
  emptyMap,
  volumeNamed,
  volumeWithId,
  encodeCommand,
  encodeMap,
  groupsOfNode,
  locateExtent,
  maxPgsPerPool,
  parseLabels,
  pgGroupId,
  pgOfExtent,
  pgOfGroup,
  type AddNodeCommand,
  type ApplyResult,
  type ClusterMap,
  type MapCommand,
  type PgInfo,
} from '../../src/cluster/map.js';
import type { RaftblockError } from '../../src/common/errors.js';

const addr = nodeAddresses;
const addNode = addNodeCommand;
const run = applyAll;

function rejected(r: ApplyResult, code: string): void {
  assert.equal(r.ok, false, 'command was accepted');
  if (!r.ok) assert.equal((r.error as RaftblockError).code, code, r.error.message);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

const threeZones = (): ClusterMap =>
  run(emptyMap(), addNode(1), addNode(2), addNode(3), { type: 'createPool', name: 'default', replicas: 3, pgCount: 64, failureDomain: 'zone' });

test('a three-zone cluster places every PG on all three nodes and bumps the epoch on every change', () => {
  const map = threeZones();
  assert.equal(map.epoch, 4);
  const pool = map.pools[0];
  assert.equal(pool.id, 1);
  assert.equal(pool.pgs.length, 64);
  for (const pg of pool.pgs) assert.deepEqual([...pg.replicas].sort(), [1, 2, 3]);
  // The first replica (preferred leader) is spread over the nodes, not always the same one.
  const firsts = new Set(pool.pgs.map((pg) => pg.replicas[0]));
  assert.equal(firsts.size, 3);
  assert.equal(groupsOfNode(map, 2).length, 64);
});

test('volumes are created, grown, shrunk only with the flag, and deleted; ids are never reused', () => {
  let map = threeZones();
  let r = applyCommand(map, { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 30 });
  assert.ok(r.ok);
  assert.deepEqual(r.volume, { id: 1, name: 'vol0', pool: 'default', sizeBytes: 1 << 30, extentBytes: 4 << 20 });
  map = r.map;
  assert.equal(map.epoch, 5);
  rejected(applyCommand(map, { type: 'createVolume', name: 'vol0', sizeBytes: 4096 }), 'ALREADY_EXISTS');
  map = run(map, { type: 'resizeVolume', name: 'vol0', sizeBytes: 2 * 2 ** 30 });
  assert.equal(map.volumes[0].sizeBytes, 2 * 2 ** 30);
  rejected(applyCommand(map, { type: 'resizeVolume', name: 'vol0', sizeBytes: 1 << 30 }), 'INVALID_ARGUMENT');
  map = run(map, { type: 'resizeVolume', name: 'vol0', sizeBytes: 1 << 30, allowShrink: true });
  assert.equal(map.volumes[0].sizeBytes, 1 << 30);
  // Same size: accepted, nothing changes, the epoch stays.
  r = applyCommand(map, { type: 'resizeVolume', name: 'vol0', sizeBytes: 1 << 30 });
  assert.ok(r.ok && !r.changed && r.map === map);
  map = run(map, { type: 'deleteVolume', name: 'vol0' });
  assert.equal(map.volumes.length, 0);
  rejected(applyCommand(map, { type: 'deleteVolume', name: 'vol0' }), 'NOT_FOUND');
  r = applyCommand(map, { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 20, extentBytes: 1 << 16 });
  assert.ok(r.ok);
  assert.equal(r.volume?.id, 2, 'a recreated volume must not reuse the deleted one\'s id (its extents may linger)');
});

test('bad commands are refused with typed errors and leave the map and its epoch untouched', () => {
  const map = deepFreeze(threeZones());
  const cases: [MapCommand, string][] = [
    [{ type: 'createVolume', name: 'v', sizeBytes: 1000 }, 'INVALID_ARGUMENT'],
    [{ type: 'createVolume', name: 'v', sizeBytes: 0 }, 'INVALID_ARGUMENT'],
    [{ type: 'createVolume', name: 'v', sizeBytes: 2 ** 51 }, 'INVALID_ARGUMENT'],
    [{ type: 'createVolume', name: '../etc', sizeBytes: 4096 }, 'INVALID_ARGUMENT'],
    [{ type: 'createVolume', name: 'v', sizeBytes: 4096, pool: 'nope' }, 'NOT_FOUND'],
    [{ type: 'createVolume', name: 'v', sizeBytes: 4096, extentBytes: 3 << 20 }, 'INVALID_ARGUMENT'],
    [{ type: 'resizeVolume', name: 'nope', sizeBytes: 4096 }, 'NOT_FOUND'],
    [{ type: 'createPool', name: 'default', replicas: 3, pgCount: 8, failureDomain: 'zone' }, 'ALREADY_EXISTS'],
    [{ type: 'createPool', name: 'p4', replicas: 4, pgCount: 8, failureDomain: 'zone' }, 'PLACEMENT_IMPOSSIBLE'],
    [{ type: 'createPool', name: 'p', replicas: 0, pgCount: 8, failureDomain: 'zone' }, 'INVALID_ARGUMENT'],
    [{ type: 'createPool', name: 'p', replicas: 3, pgCount: maxPgsPerPool + 1, failureDomain: 'zone' }, 'INVALID_ARGUMENT'],
    [{ type: 'createPool', name: 'p', replicas: 3, pgCount: 8, failureDomain: 'row' as 'zone' }, 'INVALID_ARGUMENT'],
    [{ type: 'removeNode', id: 2 }, 'NODE_STILL_IN'],
    [{ type: 'removeNode', id: 9 }, 'NOT_FOUND'],
    [{ type: 'setNodeState', id: 1, state: 'out' }, 'PLACEMENT_IMPOSSIBLE'],
    [{ type: 'addNode', id: 0, addresses: addr(0) }, 'INVALID_ARGUMENT'],
    [{ type: 'addNode', id: 4, addresses: { ...addr(4), peer: 'nohost' } }, 'INVALID_ARGUMENT'],
    [{ type: 'addNode', id: 4, addresses: addr(1) }, 'ALREADY_EXISTS'],
    [{ type: 'addNode', id: 4, addresses: addr(4), labels: { zone: 'a/b' } }, 'INVALID_ARGUMENT'],
    [{ type: 'addNode', id: 4, addresses: addr(4), weight: -1 }, 'INVALID_ARGUMENT'],
    [{ type: 'frobnicate' } as unknown as MapCommand, 'INVALID_ARGUMENT'],
  ];
  const before = encodeMap(map);
  for (const [command, code] of cases) {
    const r = applyCommand(map, command);
    rejected(r, code);
  }
  assert.deepEqual(encodeMap(map), before);
  assert.equal(map.epoch, 4);
});

test('adding a node moves only the PGs it joins, marks them with the new epoch and reports them', () => {
  let map = emptyMap();
  for (let id = 1; id <= 12; id++) map = run(map, addNode(id, { zone: `z${id % 3}`, host: `h${id}` }));
  map = run(map, { type: 'createPool', name: 'default', replicas: 3, pgCount: 512, failureDomain: 'host' });
  const frozen = deepFreeze(map);
  const r = applyCommand(frozen, addNode(13, { zone: 'z1', host: 'h13' }));
  assert.ok(r.ok);
  checkMap(r.map);
  assert.equal(r.map.epoch, frozen.epoch + 1);
  const moved = new Set(r.movedGroups);
  assert.ok(moved.size > 512 * 3 / 13 * 0.6 && moved.size < 512 * 3 / 13 * 1.4, `moved ${moved.size} PGs`);
  for (let i = 0; i < 512; i++) {
    const before = frozen.pools[0].pgs[i];
    const now: PgInfo = r.map.pools[0].pgs[i];
    if (moved.has(pgGroupId(1, i))) {
      assert.ok(now.replicas.includes(13));
      assert.equal(now.sinceEpoch, r.map.epoch);
    } else {
      assert.equal(now, before, 'an unmoved PG must be the same object (and epoch)');
    }
  }
  // Re-registering with identical values is a no-op; a new address bumps the epoch, moves nothing.
  const again = applyCommand(r.map, addNode(13, { zone: 'z1', host: 'h13' }));
  assert.ok(again.ok && !again.changed && again.map.epoch === r.map.epoch);
  const readdr = applyCommand(r.map, { type: 'addNode', id: 13, addresses: { ...addr(13), nbd: '127.0.0.1:31013' }, labels: { zone: 'z1', host: 'h13' } });
  assert.ok(readdr.ok && readdr.changed && readdr.movedGroups.length === 0);
  assert.equal(readdr.map.pools, r.map.pools);
  // Draining the node moves its PGs away again.
  const out = run(r.map, { type: 'setNodeState', id: 13, state: 'out' });
  assert.equal(groupsOfNode(out, 13).length, 0);
});

test('a join from a node without the cluster id cannot take over a member with other addresses; the same addresses stay idempotent', () => {
  const map = deepFreeze(threeZones());
  const before = encodeMap(map);
  const moved = { ...addr(2), peer: '127.0.0.1:29002' };
  // A wiped node (or an impostor) claiming node 2 from elsewhere: refused, the map untouched.
  const r = applyCommand(map, { type: 'addNode', id: 2, addresses: moved, labels: { zone: 'z2' }, newNode: true });
  rejected(r, 'ALREADY_EXISTS');
  if (!r.ok) {
    assert.match(r.error.message, /node 2 is already a member at peer 127\.0\.0\.1:20002, nbd 127\.0\.0\.1:21002, http 127\.0\.0\.1:22002/);
    assert.match(r.error.message, /remove it from the map first/);
  }
  // Any one address differing is enough.
  rejected(applyCommand(map, { type: 'addNode', id: 2, addresses: { ...addr(2), http: '127.0.0.1:29999' }, labels: { zone: 'z2' }, newNode: true }), 'ALREADY_EXISTS');
  assert.deepEqual(encodeMap(map), before);
  // A new node whose first join answer was lost asks again with the same addresses: no change.
  const again = applyCommand(map, { ...(addNode(2) as AddNodeCommand), newNode: true });
  assert.ok(again.ok && !again.changed && again.map.epoch === map.epoch);
  // A member that has the cluster id re-registers from new addresses (a restart): accepted.
  const restarted = applyCommand(map, { type: 'addNode', id: 2, addresses: moved, labels: { zone: 'z2' } });
  assert.ok(restarted.ok && restarted.changed && restarted.movedGroups.length === 0);
  assert.deepEqual(restarted.map.nodes.find((n) => n.id === 2)?.addresses, moved);
  // The flag is the command's, not the map's.
  assert.ok(!('newNode' in (restarted.map.nodes.find((n) => n.id === 2) ?? {})));
  // A new id joins as before, flag or not.
  const four = applyCommand(map, { ...(addNode(4) as AddNodeCommand), newNode: true });
  assert.ok(four.ok && four.changed);
  assert.ok(!('newNode' in (four.map.nodes.find((n) => n.id === 4) ?? {})));
});

test('a registration from another data dir (incarnation) under a member id is refused whatever its addresses; the same one is idempotent', () => {
  const inc = (n: number): string => n.toString(16).padStart(16, '0');
  let map = threeZones();
  // A member from before incarnations takes the first one it registers with (no move).
  const adopted = applyCommand(map, { ...(addNode(2) as AddNodeCommand), incarnation: inc(2) });
  assert.ok(adopted.ok && adopted.changed && adopted.movedGroups.length === 0);
  map = deepFreeze(adopted.map);
  assert.equal(map.nodes.find((n) => n.id === 2)?.incarnation, inc(2));
  checkMap(map);
  const before = encodeMap(map);
  // The same data dir again (a restart, or a join whose answer was lost): no change.
  for (const extra of [{}, { newNode: true }, { member: true }]) {
    const again = applyCommand(map, { ...(addNode(2) as AddNodeCommand), incarnation: inc(2), ...extra });
    assert.ok(again.ok && !again.changed && again.map.epoch === map.epoch, JSON.stringify(extra));
  }
  // A wiped or replaced data dir with node 2's very addresses: refused, with or without the
  // cluster id, and so is a registration that names no incarnation.
  for (const extra of [{ newNode: true }, {}, { member: true }]) {
    const r = applyCommand(map, { ...(addNode(2) as AddNodeCommand), incarnation: inc(0xbad), ...extra });
    rejected(r, 'ALREADY_EXISTS');
    if (!r.ok) {
      assert.match(r.error.message, new RegExp(`node 2 is a member whose data dir is incarnation ${inc(2)}; this data dir is incarnation ${inc(0xbad)}`));
      assert.match(r.error.message, /remove it from the map first/);
    }
  }
  rejected(applyCommand(map, addNode(2)), 'ALREADY_EXISTS');
  assert.deepEqual(encodeMap(map), before);
  // Malformed incarnations are refused; a new id keeps the one it registers with.
  for (const bad of ['', 'XYZ', '12', 'g'.repeat(16), 7]) rejected(applyCommand(map, { ...(addNode(4) as AddNodeCommand), incarnation: bad as string }), 'INVALID_ARGUMENT');
  const four = applyCommand(map, { ...(addNode(4) as AddNodeCommand), incarnation: inc(4), newNode: true });
  assert.ok(four.ok && four.changed);
  assert.equal(four.map.nodes.find((n) => n.id === 4)?.incarnation, inc(4));
  // Once removed, the id is free for any data dir.
  const drained = run(four.map, { type: 'setNodeState', id: 4, state: 'out' }, { type: 'removeNode', id: 4 });
  const fresh = applyCommand(drained, { ...(addNode(4) as AddNodeCommand), incarnation: inc(0x44), newNode: true });
  assert.ok(fresh.ok && fresh.map.nodes.find((n) => n.id === 4)?.incarnation === inc(0x44));
});

test('replaceNode forgets a lost data dir: the next registration under the id is taken from anywhere, and the id remembers the epoch', () => {
  const inc = (n: number): string => n.toString(16).padStart(16, '0');
  let map = threeZones();
  for (const id of [1, 2, 3]) map = run(map, { ...(addNode(id) as AddNodeCommand), incarnation: inc(id) });
  rejected(applyCommand(map, { type: 'replaceNode', id: 9 }), 'NOT_FOUND');
  const r = applyCommand(map, { type: 'replaceNode', id: 2 });
  assert.ok(r.ok && r.changed && r.movedGroups.length === 0 && r.map.epoch === map.epoch + 1);
  const replaced = r.map.nodes.find((n) => n.id === 2)!;
  assert.equal(replaced.incarnation, undefined);
  assert.equal(replaced.replacing, true);
  assert.equal(replaced.rebuiltAtEpoch, r.map.epoch);
  checkMap(r.map);
  // No placement moved: the PGs keep their replica sets (and their sinceEpoch).
  assert.deepEqual(r.map.pools, map.pools);
  // ... but not at another node's address.
  rejected(applyCommand(r.map, { type: 'addNode', id: 2, addresses: { ...addr(2), peer: addr(3).peer }, labels: { zone: 'z2' }, incarnation: inc(0x22), newNode: true }), 'ALREADY_EXISTS');
  // A new data dir, without the cluster id, from other addresses: taken.
  const moved = { peer: '127.0.0.1:29002', nbd: '127.0.0.1:29003', http: '127.0.0.1:29004' };
  const joined = applyCommand(r.map, { type: 'addNode', id: 2, addresses: moved, labels: { zone: 'z2' }, incarnation: inc(0x22), newNode: true });
  assert.ok(joined.ok && joined.changed, joined.ok ? '' : joined.error.message);
  const back = joined.map.nodes.find((n) => n.id === 2)!;
  assert.deepEqual(back, { id: 2, addresses: moved, labels: { zone: 'z2' }, weight: 1, state: 'in', incarnation: inc(0x22), rebuiltAtEpoch: r.map.epoch });
  checkMap(joined.map);
  // From then on the id is that data dir's: the lost one (or any other) is refused again.
  rejected(applyCommand(joined.map, { ...(addNode(2) as AddNodeCommand), incarnation: inc(2) }), 'ALREADY_EXISTS');
  const again = applyCommand(joined.map, { type: 'addNode', id: 2, addresses: moved, labels: { zone: 'z2' }, incarnation: inc(0x22) });
  assert.ok(again.ok && !again.changed);
  // A map that says `replacing` next to an incarnation is not a map.
  assert.throws(() => checkMap({ ...joined.map, nodes: joined.map.nodes.map((n) => (n.id === 2 ? { ...n, replacing: true as const } : n)) }));
});

test('the same commands give byte-identical maps, which round-trip through msgpackr and JSON', () => {
  const commands: MapCommand[] = [
    addNode(5, { zone: 'a', rack: 'r1', host: 'h1' }, 2),
    addNode(3, { zone: 'b', rack: 'r1', host: 'h1' }),
    addNode(9, { zone: 'c' }),
    addNode(7, { zone: 'c' }, 0.5),
    { type: 'createPool', name: 'default', replicas: 3, pgCount: 32, failureDomain: 'zone' },
    { type: 'createPool', name: 'fast', replicas: 2, pgCount: 16, failureDomain: 'host' },
    { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 30 },
    { type: 'createVolume', name: 'vol1', sizeBytes: 8 << 20, pool: 'fast', extentBytes: 1 << 20 },
  ];
  const a = run(emptyMap(), ...commands);
  const b = run(emptyMap(), ...commands.map((c) => decodeCommand(encodeCommand(c))));
  assert.deepEqual(encodeMap(a), encodeMap(b));
  assert.deepEqual(a.nodes.map((n) => n.id), [3, 5, 7, 9]);
  assert.deepEqual(decodeMap(encodeMap(a)), a);
  assert.deepEqual(JSON.parse(JSON.stringify(a)), a);
  assert.throws(() => decodeMap(encodeMap({ ...a, epoch: -1 })));
  assert.throws(() => decodeMap(Buffer.from([0xc0])));
});

test('extents spread evenly over PGs, stably, and locateExtent finds their replicas', () => {
  assert.deepEqual([pgOfExtent(1, 0, 64), pgOfExtent(1, 1, 64), pgOfExtent(2, 0, 64), pgOfExtent(1, 2 ** 40, 64)], PINNED_PGS);
  const counts = new Array<number>(64).fill(0);
  for (let e = 0; e < 64 * 500; e++) counts[pgOfExtent(7, e, 64)]++;
  for (const c of counts) assert.ok(c > 500 * 0.8 && c < 500 * 1.2, `a PG got ${c} of ~500 extents`);
  let map = threeZones();
  map = run(map, { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 30 });
  const v = map.volumes[0];
  const loc = locateExtent(map, v, 9 * (4 << 20) + 4096);
  assert.equal(loc.extentIndex, 9);
  assert.equal(loc.offsetInExtent, 4096);
  assert.equal(loc.pgIndex, pgOfExtent(v.id, 9, 64));
  assert.equal(loc.groupId, pgGroupId(1, loc.pgIndex));
  assert.deepEqual(pgOfGroup(loc.groupId), { poolId: 1, pgIndex: loc.pgIndex });
  assert.deepEqual(loc.replicas, map.pools[0].pgs[loc.pgIndex].replicas);
  assert.ok(loc.groupId > 0, 'group 0 is the metadata group');
});

test('labels parse from KEY=VALUE lists and bad ones are refused', () => {
  assert.deepEqual(parseLabels('zone=a,rack=r1,host=h1'), { host: 'h1', rack: 'r1', zone: 'a' });
  assert.deepEqual(parseLabels(''), {});
  for (const bad of ['zone', 'zone=a,zone=b', 'zone=a=b', 'zone=a/b']) assert.throws(() => parseLabels(bad), { code: 'INVALID_ARGUMENT' });
});

test('random command sequences keep every map invariant (property)', () => {
  const nodeId = fc.integer({ min: 1, max: 8 });
  const name = fc.constantFrom('a', 'b', 'c', 'default');
  const command: fc.Arbitrary<MapCommand> = fc.oneof(
    fc.record({ type: fc.constant('addNode' as const), id: nodeId, zone: fc.integer({ min: 0, max: 3 }), weight: fc.constantFrom(0, 1, 2) }).map(
      (x): MapCommand => addNode(x.id, { zone: `z${x.zone}`, host: `h${x.id}` }, x.weight),
    ),
    fc.record({ type: fc.constant('removeNode' as const), id: nodeId }),
    fc.record({ type: fc.constant('setNodeState' as const), id: nodeId, state: fc.constantFrom('in' as const, 'out' as const) }),
    fc.record({ type: fc.constant('setNodeState' as const), id: nodeId, state: fc.constantFrom('in' as const, 'out' as const), auto: fc.constant(true as const) }),
    fc.record({
      type: fc.constant('createPool' as const),
      name,
      replicas: fc.integer({ min: 1, max: 4 }),
      pgCount: fc.integer({ min: 1, max: 16 }),
      failureDomain: fc.constantFrom('zone' as const, 'host' as const),
    }),
    fc.record({ type: fc.constant('createVolume' as const), name, sizeBytes: fc.integer({ min: 1, max: 64 }).map((n) => n * 4096), pool: name }),
    fc.record({ type: fc.constant('resizeVolume' as const), name, sizeBytes: fc.integer({ min: 1, max: 64 }).map((n) => n * 4096), allowShrink: fc.boolean() }),
    fc.record({ type: fc.constant('deleteVolume' as const), name }),
  );
  fc.assert(
    fc.property(fc.array(command, { maxLength: 40 }), (commands) => {
      let map = deepFreeze(emptyMap());
      for (const c of commands) {
        const before = encodeMap(map);
        const r = applyCommand(map, c);
        if (r.ok) {
          checkMap(r.map);
          assert.equal(r.map.epoch, map.epoch + (r.changed ? 1 : 0));
          map = deepFreeze(r.map);
        } else {
          assert.deepEqual(encodeMap(map), before);
        }
      }
    }),
    { numRuns: 300, seed: 5 },
  );
});

const PINNED_PGS: number[] = [29, 27, 49, 0];

test('volume lookups by name and id follow each new map (the index is per map value)', () => {
  const m1 = run(emptyMap(), addNode(1), addNode(2), addNode(3), { type: 'createPool', name: 'default', replicas: 3, pgCount: 4, failureDomain: 'zone' }, { type: 'createVolume', name: 'a', sizeBytes: 1 << 20 });
  const a = volumeNamed(m1, 'a');
  assert.ok(a);
  assert.equal(volumeWithId(m1, a.id), a);
  const m2 = run(m1, { type: 'resizeVolume', name: 'a', sizeBytes: 2 << 20 });
  assert.equal(volumeNamed(m2, 'a')?.sizeBytes, 2 << 20);
  assert.equal(volumeNamed(m1, 'a')?.sizeBytes, 1 << 20, 'the older map keeps its own answer');
  const m3 = run(m2, { type: 'deleteVolume', name: 'a' });
  assert.equal(volumeNamed(m3, 'a'), undefined);
  assert.equal(volumeWithId(m3, a.id), undefined);
});

test('an identical create is done, not refused (a retried command whose answer was lost); any other of that name conflicts', () => {
  let map = threeZones();
  const create = { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 30 } as const;
  const first = applyCommand(map, create);
  assert.ok(first.ok && first.changed);
  map = first.map;
  // The same command again, with the defaults spelled out or not: the same volume, nothing changes.
  for (const again of [create, { ...create, pool: 'default', extentBytes: 4 << 20 }]) {
    const r = applyCommand(map, again);
    assert.ok(r.ok && !r.changed, JSON.stringify(again));
    assert.equal(r.map, map, 'the map (and its epoch) is untouched');
    assert.deepEqual(r.volume, first.volume);
  }
  rejected(applyCommand(map, { ...create, sizeBytes: 2 * 2 ** 30 }), 'ALREADY_EXISTS');
  rejected(applyCommand(map, { ...create, extentBytes: 1 << 20 }), 'ALREADY_EXISTS');
  // Resized since: the original create is another volume now.
  map = run(map, { type: 'resizeVolume', name: 'vol0', sizeBytes: 2 * 2 ** 30 });
  rejected(applyCommand(map, create), 'ALREADY_EXISTS');

  const pool = { type: 'createPool', name: 'default', replicas: 3, pgCount: 64, failureDomain: 'zone' } as const;
  const samePool = applyCommand(map, pool);
  assert.ok(samePool.ok && !samePool.changed && samePool.map === map);
  assert.equal(samePool.pool, map.pools[0]);
  rejected(applyCommand(map, { ...pool, pgCount: 8 }), 'ALREADY_EXISTS');
});

test('resetPg starts a PG over only once every replica lost its data dir; it keeps the replicas and marks the epoch', () => {
  let map = applyAll(emptyMap(), ...[1, 2, 3, 4].map((id) => addNodeCommand(id)), { type: 'createPool', name: 'one', replicas: 1, pgCount: 4, failureDomain: 'zone' });
  const pool = map.pools[0];
  const pg = pool.pgs.findIndex((p) => p.replicas[0] === 2);
  assert.ok(pg >= 0, 'no PG on node 2');
  rejected(applyCommand(map, { type: 'resetPg', pool: 'nope', pg }), 'NOT_FOUND');
  rejected(applyCommand(map, { type: 'resetPg', pool: 'one', pg: 4 }), 'NOT_FOUND');
  // Node 2 still holds its data: refused.
  const refused = applyCommand(map, { type: 'resetPg', pool: 'one', pg });
  rejected(refused, 'PG_NOT_LOST');
  assert.match((refused as { error: Error }).error.message, /node 2 may still hold its data/);
  map = applyAll(map, { type: 'replaceNode', id: 2 });
  const r = applyCommand(map, { type: 'resetPg', pool: 'one', pg });
  assert.ok(r.ok);
  if (!r.ok) return;
  checkMap(r.map);
  const after = r.map.pools[0].pgs[pg];
  assert.deepEqual(after, { replicas: [2], sinceEpoch: r.map.epoch, resetEpoch: r.map.epoch });
  // The other PGs are untouched.
  r.map.pools[0].pgs.forEach((p, i) => i !== pg && assert.deepEqual(p, pool.pgs[i]));
  // A three-replica PG with one replica left that was never replaced: refused.
  let three = applyAll(emptyMap(), ...[1, 2, 3].map((id) => addNodeCommand(id)), { type: 'createPool', name: 'default', replicas: 3, pgCount: 2, failureDomain: 'zone' });
  three = applyAll(three, { type: 'replaceNode', id: 1 }, { type: 'replaceNode', id: 2 });
  rejected(applyCommand(three, { type: 'resetPg', pool: 'default', pg: 0 }), 'PG_NOT_LOST');
  three = applyAll(three, { type: 'replaceNode', id: 3 });
  assert.ok(applyCommand(three, { type: 'resetPg', pool: 'default', pg: 0 }).ok);
});
