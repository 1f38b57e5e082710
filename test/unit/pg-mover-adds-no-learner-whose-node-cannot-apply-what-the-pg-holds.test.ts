/**
 * A PG's new replica is sent its leader's snapshot image and then the log after it. The gate
 * at proposal time (StoreOpsLevels.requireForRequest) covers what is proposed once the new replica is in the
 * configuration, not what the PG holds already: a node of an older build made a learner of a
 * PG whose log holds a command past 256 TiB (or a discard-from), or whose data files reach
 * past 256 TiB, stopped at it, and again at every restart. The mover now adds no learner
 * whose node tells (Frame.s) a lower level than the PG needs, or has not been heard from
 * (it is asked something, whose answer tells its level); it warns once per reason, counts the
 * held PGs in raftblock_pg_moves_held_for_upgrade, and adds it at a later round once the node
 * tells enough. A PG needing no more than the base level is moved to any node at once.
 *
 * Node `self` leads the PG alone (a real Raft node, its log in memory, a real store on disk);
 * the map wants two more replicas on nodes `a` and `b`.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { PgMover, targetOf } from '../../src/cluster/pg-mover.js';
import { pgGroupId } from '../../src/cluster/map.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { MemoryStorage, RaftNode, SeededRng, defaultConfig, type ConfChange } from '../../src/raft/index.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeDiscardFrom, encodeWrite, storeOpsLevel } from '../../src/store/ops.js';
import { zonedMap } from '../helpers/map.js';
import { moverDeps, moverGroup, persistReadies } from '../helpers/pg-mover.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const TiB = 2 ** 40;
const heldMetric = 'raftblock_pg_moves_held_for_upgrade';

interface Leader {
  a: number;
  b: number;
  /** Store command levels the nodes told (absent: not heard from). */
  levels: Map<number, number>;
  raft: RaftNode;
  store: PgStore;
  /** Makes what the Raft node appended durable in its storage (the host's Ready handling). */
  persist(): void;
  round(): Promise<void>;
  proposals: ConfChange[];
  warnings: Record<string, unknown>[];
  pings: number[];
  held(): Promise<number>;
  /** Makes the map newer (the same placement at the next epoch), as a change elsewhere would. */
  bumpMapEpoch(): void;
}

async function leader(t: TestContext): Promise<Leader> {
  let map = zonedMap(4, 8);
  const g = pgGroupId(map.pools[0].id, 0);
  const [self, a, b] = targetOf(map, g)!;
  const dir = tempDir(t, 'raftblock-mover-levels-');
  const io = new FsBlockIo();
  const store = await PgStore.open(io, new ScratchPool(io), dir, g);
  t.after(() => store.close());
  const storage = new MemoryStorage([self]);
  const raft = new RaftNode(defaultConfig(self, new SeededRng(1)), storage);
  raft.campaign();
  assert.equal(raft.currentRole, 'leader', 'a single voter elects itself');
  const persist = (): void => persistReadies(raft, storage);
  persist();
  const levels = new Map<number, number>([[self, storeOpsLevel]]);
  const proposals: ConfChange[] = [];
  const warnings: Record<string, unknown>[] = [];
  const pings: number[] = [];
  const registry = new Registry();
  const group = moverGroup(g, raft);
  const mover = new PgMover(
    moverDeps({
      nodeId: self,
      dataDir: dir,
      map: () => map,
      stores: new Map([[g, store]]),
      host: {
        groups: new Map([[g, group]]),
        proposeConfChange: (id: number, cc: ConfChange) => {
          assert.equal(id, g);
          proposals.push(cc);
        },
      } as never,
      registry,
      log: { info() {}, debug() {}, error() {}, warn: (msg: string, fields: Record<string, unknown>) => warnings.push({ msg, ...fields }) } as never,
      request: async (peer: number, op: string) => {
        pings.push(peer);
        assert.equal(op, 'ping');
        return {};
      },
      storeOpsLevelOf: (id) => levels.get(id),
      // As StorageNode's: a node telling less, or not heard from, refuses.
      storeOpsRefusal: (nodes, needed, what) => {
        const behind = nodes.filter((n) => (levels.get(n) ?? 0) < needed);
        const why = behind.map((n) => (levels.has(n) ? `node ${n} tells level ${levels.get(n)}` : `node ${n} not heard from`));
        return behind.length === 0 ? undefined : `${why.join('; ')}: below level ${needed} for ${what}`;
      },
    }),
  );
  const round = (mover as unknown as { round(): Promise<void> }).round.bind(mover);
  const held = async (): Promise<number> => (await registry.getSingleMetric(heldMetric)!.get()).values[0]?.value ?? 0;
  const bumpMapEpoch = (): void => {
    map = { ...map, epoch: map.epoch + 1 };
  };
  return { a, b, levels, raft, store, persist, round, proposals, warnings, pings, held, bumpMapEpoch };
}

const addsLearners = (p: ConfChange[], nodes: number[]): void =>
  assert.deepEqual(
    p.map((cc) => cc.changes.map((c) => [c.type, c.nodeId])),
    [nodes.sort((x, y) => x - y).map((n) => ['addLearner', n])],
  );

test('a PG whose log holds a command past 256 TiB adds no learner on a node telling level 1 until it tells more', async (t) => {
  const l = await leader(t);
  l.raft.propose(encodeWrite(1, 300 * TiB, Buffer.alloc(B), { session: 1, seq: 1 }));
  l.raft.propose(encodeWrite(1, 0, Buffer.alloc(B), { session: 1, seq: 2 }));
  l.persist();
  l.levels.set(l.a, storeOpsLevel);
  l.levels.set(l.b, 1);
  for (let i = 0; i < 3; i++) await l.round();
  assert.deepEqual(l.proposals, [], 'no learner added');
  assert.equal(l.warnings.length, 1, `warned once, not every round: ${JSON.stringify(l.warnings)}`);
  assert.match(String(l.warnings[0].reason), new RegExp(`node ${l.b} tells level 1: below level 2 .*log holds a command past 256 TiB`));
  assert.equal(await l.held(), 1);

  l.levels.set(l.b, storeOpsLevel);
  await l.round();
  addsLearners(l.proposals, [l.a, l.b]);
  assert.equal(await l.held(), 0);
});

test('a command past 256 TiB not yet durable in the leader\'s log holds the move too', async (t) => {
  const l = await leader(t);
  l.raft.propose(encodeWrite(1, 300 * TiB, Buffer.alloc(B), { session: 1, seq: 1 }));
  l.levels.set(l.a, 1);
  l.levels.set(l.b, 1);
  await l.round();
  assert.deepEqual(l.proposals, []);
});

test('a discard-from in the log needs level 3: a node telling 2 waits', async (t) => {
  const l = await leader(t);
  l.raft.propose(encodeDiscardFrom(1, 1 << 30, { session: 1, seq: 1 }));
  l.persist();
  l.levels.set(l.a, 2);
  l.levels.set(l.b, 3);
  await l.round();
  assert.deepEqual(l.proposals, []);
  assert.match(String(l.warnings[0]?.reason), /below level 3 .*discard/);
  l.levels.set(l.a, 3);
  await l.round();
  addsLearners(l.proposals, [l.a, l.b]);
});

test('data files reaching past 256 TiB hold the move though the log holds nothing past it; a node not heard from is asked, and waits', async (t) => {
  const l = await leader(t);
  // Applied and checkpointed long ago: its entry compacted away, its bytes in the files.
  await l.store.apply(1, 1, encodeWrite(1, 300 * TiB, Buffer.alloc(B, 7), { session: 9, seq: 1 }));
  await l.store.checkpoint();
  l.raft.propose(encodeWrite(1, 0, Buffer.alloc(B), { session: 1, seq: 1 }));
  l.persist();
  l.levels.set(l.a, storeOpsLevel);
  await l.round();
  assert.deepEqual(l.proposals, [], 'node b not heard from: not added');
  assert.deepEqual(l.pings, [l.b], 'node b asked something, so that its answer tells its level');
  assert.match(String(l.warnings[0]?.reason), /data files reach past 256 TiB/);
  l.levels.set(l.b, 1);
  await l.round();
  assert.deepEqual(l.proposals, [], 'node b tells level 1: not added');
  assert.equal(l.warnings.length, 2, 'warned again: the reason changed');
  l.levels.set(l.b, 2);
  await l.round();
  addsLearners(l.proposals, [l.a, l.b]);
});

test('a PG needing only the base level moves to a node telling level 1 at once', async (t) => {
  const l = await leader(t);
  l.raft.propose(encodeWrite(1, 200 * TiB, Buffer.alloc(B), { session: 1, seq: 1 }));
  l.persist();
  await l.store.apply(1, 1, encodeWrite(1, 17 * TiB, Buffer.alloc(B, 7), { session: 9, seq: 1 }));
  await l.store.checkpoint();
  l.levels.set(l.a, 1);
  // Node b not heard from: nothing it could not apply, so it is not waited for.
  await l.round();
  addsLearners(l.proposals, [l.a, l.b]);
  assert.deepEqual(l.warnings, []);
});

test('a map that changes while the data files are judged stops the round: nothing is proposed from the older map', async (t) => {
  const l = await leader(t);
  l.levels.set(l.a, 1);
  l.levels.set(l.b, storeOpsLevel);
  const filesMayReach = l.store.filesMayReach.bind(l.store);
  let bumps = 1;
  l.store.filesMayReach = async (offset: number) => {
    const answer = await filesMayReach(offset);
    if (bumps-- > 0) l.bumpMapEpoch();
    return answer;
  };
  await l.round();
  assert.deepEqual(l.proposals, [], 'judged against a map that is no longer current: not proposed');
  await l.round();
  addsLearners(l.proposals, [l.a, l.b]);
});

test('a judgement that fails holds the move and says why, once', async (t) => {
  const l = await leader(t);
  l.levels.set(l.a, 1);
  l.levels.set(l.b, storeOpsLevel);
  l.store.filesMayReach = async () => {
    throw new Error('stat failed: EIO');
  };
  for (let i = 0; i < 3; i++) await l.round();
  assert.deepEqual(l.proposals, []);
  assert.equal(l.warnings.length, 1, JSON.stringify(l.warnings));
  assert.match(String(l.warnings[0].reason), /could not be judged: stat failed: EIO/);
  assert.equal(await l.held(), 1);
});
