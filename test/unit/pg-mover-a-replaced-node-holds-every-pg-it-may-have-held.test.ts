/**
 * A node whose data dir was replaced (node replace) starts a PG it has no state for held, to
 * be rebuilt from its leader, whenever it may have held that PG before: an empty joiner would
 * grant votes at once and could help elect a leader without entries the lost replica had
 * acknowledged. The map's sinceEpoch is a PG's whole replica list's, so a later map change
 * that recomputes the list and keeps the node must not make it look newly placed. A PG started
 * afresh since (a pool created after the replacement) is bootstrapped as usual.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgMover } from '../../src/cluster/pg-mover.js';
import { pgGroupId, type ClusterMap } from '../../src/cluster/map.js';
import { applyAll, addNodeCommand, zonedMap } from '../helpers/map.js';
import { moverDeps } from '../helpers/pg-mover.js';

interface Start {
  rebuild: boolean;
  voters: number[];
}

/** How node `self`'s mover first starts group `g` when a peer's message for it arrives. */
async function firstStart(map: ClusterMap, self: number, g: number, from: number): Promise<Start | undefined> {
  const dataDir = await mkdtemp(join(tmpdir(), 'raftblock-mover-'));
  let seen: Start | undefined;
  const mover = new PgMover(
    moverDeps({
      nodeId: self,
      dataDir,
      host: {
        groups: new Map(),
        addGroup: async (_g: number, voters: number[], _sm: unknown, o: { rebuild?: boolean }) => {
          seen = { rebuild: o.rebuild === true, voters };
        },
        removeGroup: async () => {},
      } as never,
      map: () => map,
    }),
  );
  await mover.load();
  mover.onUnknownGroup(g, from);
  for (let i = 0; i < 100 && !seen; i++) await new Promise((r) => setTimeout(r, 10));
  return seen;
}

test('a replaced node holds a PG it kept through a later map change, instead of joining it empty', async () => {
  const replaced = applyAll(zonedMap(5, 32), { type: 'replaceNode', id: 1 });
  const rebuiltAt = replaced.nodes.find((n) => n.id === 1)!.rebuiltAtEpoch!;
  const pool = replaced.pools[0];
  // A map change while node 1's new disk is on its way: node 6 joins, and placement recomputes
  // some of node 1's PGs, keeping node 1 in them.
  const after = applyAll(replaced, addNodeCommand(6));
  const kept = after.pools[0].pgs.map((p, i) => ({ p, i })).filter(({ p, i }) => p.replicas.includes(1) && pool.pgs[i].replicas.includes(1) && p.sinceEpoch > rebuiltAt);
  assert.ok(kept.length > 0, 'the new node recomputed a PG of node 1 that keeps it');
  for (const { p, i } of kept.slice(0, 3)) {
    const start = await firstStart(after, 1, pgGroupId(pool.id, i), p.replicas.find((x) => x !== 1)!);
    assert.deepEqual(start, { rebuild: true, voters: [] }, `PG ${i} (${pool.pgs[i].replicas} -> ${p.replicas} at epoch ${p.sinceEpoch})`);
  }
  // One untouched since the replacement: held, as before.
  const untouched = after.pools[0].pgs.findIndex((p) => p.replicas.includes(1) && p.sinceEpoch <= rebuiltAt);
  assert.ok(untouched >= 0);
  assert.deepEqual(await firstStart(after, 1, pgGroupId(pool.id, untouched), after.pools[0].pgs[untouched].replicas.find((x) => x !== 1)!), { rebuild: true, voters: [] });
});

test('a pool created after the replacement starts on the replaced node like everywhere else (bootstrapped, not held)', async () => {
  const replaced = applyAll(zonedMap(5, 32), { type: 'replaceNode', id: 1 });
  const withPool = applyAll(replaced, { type: 'createPool', name: 'later', replicas: 3, pgCount: 8, failureDomain: 'zone' });
  const pool = withPool.pools.find((p) => p.name === 'later')!;
  const i = pool.pgs.findIndex((p) => p.replicas.includes(1));
  assert.ok(i >= 0);
  const start = await firstStart(withPool, 1, pgGroupId(pool.id, i), pool.pgs[i].replicas.find((x) => x !== 1)!);
  assert.equal(start?.rebuild, false);
  assert.deepEqual([...(start?.voters ?? [])].sort(), [...pool.pgs[i].replicas].sort(), 'bootstrapped with the pool\'s replicas');
});
