/**
 * A PG replica's retirement stops its group (which closes its store), then writes the
 * tombstone, removes the directory and drops the group's WAL entries. A failure after the stop
 * left the closed store in the node's table (reads, snapshot pulls and digests were handed a
 * closed store) and nothing tried the rest again before the next start: the directory stayed,
 * and the group's WAL entries pinned every segment from theirs on. Now the store leaves the
 * table with the group, and the next rounds finish the retirement once the fault is gone,
 * nothing resuming or rejoining the replica in between.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PgMover, retiredFileName, targetOf } from '../../src/cluster/pg-mover.js';
import { pgGroupId, type ClusterMap } from '../../src/cluster/map.js';
import { bootstrapMembership, saveMembership } from '../../src/cluster/pg-membership.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { MemoryStorage, RaftNode, SeededRng, defaultConfig } from '../../src/raft/index.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { zonedMap } from '../helpers/map.js';
import { moverDeps } from '../helpers/pg-mover.js';
import { tempDir } from '../helpers/tools.js';

/**
 * Node `self`'s mover holding a replica of `g` (a real store in its real directory) that a
 * committed configuration no longer lists, and its WAL holding entries 5001-5010 of `g`.
 * `removeGroup` stops the group as the host does (out of the host's groups, then the store
 * closed), and throws `stopError` after that when given.
 */
async function retiringReplica(t: TestContext, stopError?: Error) {
  const map = zonedMap(5, 32);
  const g = pgGroupId(map.pools[0].id, 3);
  const target = targetOf(map, g)!;
  const self = map.nodes.map((n) => n.id).find((n) => !target.includes(n))!;
  const dataDir = tempDir(t, 'raftblock-retire-fails-');
  const pgDir = join(dataDir, 'pgs', String(g));
  await mkdir(pgDir, { recursive: true });
  await saveMembership(pgDir, bootstrapMembership([self, target[0], target[1]]));
  const io = new FsBlockIo();
  const store = await PgStore.open(io, new ScratchPool(io), pgDir, g);
  t.after(() => store.close());
  const stores = new Map<number, PgStore>([[g, store]]);
  // Its own log has committed the configuration without it.
  const raft = new RaftNode(defaultConfig(self, new SeededRng(1)), new MemoryStorage([...target]));
  const groups = new Map<number, unknown>([[g, { id: g, raft, isLeader: false }]]);
  const truncated: [number, number][] = [];
  let walLast = 5010;
  let current = map;
  const requests: string[] = [];
  const mover = new PgMover(
    moverDeps({
      nodeId: self,
      dataDir,
      map: () => current,
      stores,
      host: {
        groups,
        addGroup: async () => assert.fail('a replica being retired was started again'),
        removeGroup: async (id: number) => {
          groups.delete(id);
          await store.close();
          if (stopError) throw stopError;
        },
      } as never,
      wal: {
        groupIds: () => [g],
        firstIndex: () => 5001,
        lastIndex: () => walLast,
        truncateSuffix: async (group: number, from: number) => {
          truncated.push([group, from]);
          walLast = from - 1;
        },
      } as never,
      openStore: async () => assert.fail('a replica being retired was opened again'),
      // A leader asked for a snapshot a rejoin could start from has one.
      request: async (_peer: number, op: string) => {
        requests.push(op);
        return { snapshotIndex: 6000 };
      },
    }),
  );
  const round = (mover as unknown as { retireRemoved(m: ClusterMap): Promise<void> }).retireRemoved.bind(mover);
  const setMap = (m: ClusterMap): void => void (current = m);
  return { map, g, self, dataDir, pgDir, stores, truncated, requests, mover, round, setMap };
}

test('a retirement whose tombstone write fails after the group stopped drops the closed store from the table, and a later round finishes it', async (t) => {
  const { map, g, self, dataDir, pgDir, stores, truncated, requests, mover, round, setMap } = await retiringReplica(t);
  // The tombstone cannot be written: its name is taken by a directory (rename onto it fails
  // with EISDIR, even for root).
  const tombstone = join(dataDir, retiredFileName);
  await mkdir(tombstone);
  await round(map);
  assert.equal(stores.has(g), false, 'the closed store of the stopped group is still in the node\'s table');
  assert.ok(existsSync(pgDir), 'the directory was removed before the tombstone was durable');
  assert.deepEqual(truncated, [], 'the WAL entries were dropped before the tombstone was durable');

  // Meanwhile nothing starts the replica over its half-done retirement: not a reconcile, not
  // its leader's messages (the map wanting it back).
  await mover.reconcile(map);
  const back: ClusterMap = structuredClone(map);
  const pg = back.pools[0].pgs[3];
  pg.replicas = [self, ...pg.replicas.slice(1)];
  setMap(back);
  assert.equal(mover.onUnknownGroup(g, pg.replicas[1]), false);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(requests, [], 'a rejoin began over the unfinished retirement');
  setMap(map);

  // The fault goes away: a later round (retried once a second) finishes the retirement.
  await rmdir(tombstone);
  for (let i = 0; i < 40 && truncated.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    await round(map);
  }
  assert.deepEqual(truncated, [[g, 5001]], 'the group\'s WAL entries were never dropped');
  assert.deepEqual(JSON.parse(await readFile(tombstone, 'utf8')), [g]);
  assert.equal(existsSync(pgDir), false, 'the directory was never removed');
});

test('a retirement whose group fails to close after it stopped drops the store from the table and finishes', async (t) => {
  const { map, g, pgDir, stores, truncated, round } = await retiringReplica(t, new Error('EIO: close failed'));
  await round(map);
  assert.equal(stores.has(g), false, 'the store is still in the node\'s table');
  assert.deepEqual(truncated, [[g, 5001]]);
  assert.equal(existsSync(pgDir), false);
});
