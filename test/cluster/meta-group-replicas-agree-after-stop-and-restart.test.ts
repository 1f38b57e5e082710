/**
 * Group 0 (the cluster map) after `raftblock start`, SIGINT and a start again on the same
 * directory: the first life stops before the joining nodes have a map of their own on disk, so
 * in the second life they join the metadata group through a snapshot of node 1's group 0, which
 * now resumes from its map.bin. Every replica must then hold the same map at the same applied
 * index (a snapshot that lost the map once made nodes 2 and 3 hold an empty-based map).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { MetaStore } from '../../src/cluster/meta-store.js';
import { encodeMap } from '../../src/cluster/map.js';
import { tempDir } from '../helpers/tools.js';
import { freeBase, startCluster, stopCluster } from './start-cluster.js';

interface GroupStatus {
  groupId: number;
  commitIndex: number;
  appliedIndex: number;
  voters: number[];
}

async function group0(http: string): Promise<GroupStatus | undefined> {
  try {
    const res = await fetch(`http://${http}/v1/status`);
    const s = (await res.json()) as { groups: GroupStatus[] };
    return s.groups.find((g) => g.groupId === 0);
  } catch {
    return undefined;
  }
}

/** Waits until every node runs group 0 with three voters and all have applied the same index, twice in a row. */
async function metaGroupSettled(https: string[], timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  for (;;) {
    const gs = await Promise.all(https.map(group0));
    const applied = gs.map((g) => g?.appliedIndex ?? -1);
    const settled = gs.every((g) => g !== undefined && g.voters.length === 3 && g.appliedIndex === g.commitIndex) && applied.every((a) => a === applied[0]);
    if (settled && applied[0] === last) return last;
    last = settled ? applied[0] : -1;
    assert.ok(Date.now() < deadline, `group 0 did not settle on every node: ${JSON.stringify(gs)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

test('stop with SIGINT right after start, start again: every node holds the same map at the same group 0 index', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-restart-');
  const ports = { nbd: await freeBase(3), http: await freeBase(3), peer: await freeBase(3) };
  // First life: stopped as soon as it is ready, before nodes 2 and 3 checkpoint group 0.
  await stopCluster(await startCluster(t, dir, ports));
  const cluster = await startCluster(t, dir, ports);
  const applied = await metaGroupSettled(cluster.ready.http);
  await stopCluster(cluster);
  // Each node's map.bin after the clean stop: its map at its applied index.
  const stores = await Promise.all([1, 2, 3].map((id) => MetaStore.open(join(dir, `node-${id}`, 'meta'), () => undefined)));
  const view = (s: MetaStore) => ({ index: s.durableIndex, epoch: s.map.epoch, pools: s.map.pools.map((p) => p.name), volumes: s.map.volumes.map((v) => v.name), voters: s.voters });
  for (const s of stores) assert.ok(s.durableIndex >= applied, `map.bin at ${s.durableIndex}, below the applied index ${applied}`);
  assert.deepEqual(view(stores[0]).pools, ['default']);
  assert.deepEqual(view(stores[0]).volumes, ['vol0']);
  // The stop itself may commit an entry (a leader's no-op, a membership step) that a follower
  // stops before applying, so the indices may differ by what the stop did. Replicas at the same
  // index must hold the same state, and maps of the same epoch must be the same map (the epoch
  // names a map version); the bug this guards against showed both (epoch 3 beside epoch 5 at
  // one index).
  for (const [i, s] of stores.entries()) {
    if (s.durableIndex === stores[0].durableIndex) assert.deepEqual(view(s), view(stores[0]), `node ${i + 1}'s group 0 state differs from node 1's`);
    else t.diagnostic(`node ${i + 1} stopped at group 0 index ${s.durableIndex}, node 1 at ${stores[0].durableIndex}`);
    if (s.map.epoch === stores[0].map.epoch) {
      assert.deepEqual(Buffer.from(encodeMap(s.map)), Buffer.from(encodeMap(stores[0].map)), `node ${i + 1}'s map differs from node 1's at epoch ${s.map.epoch}`);
    }
  }
  assert.ok(
    stores.every((s) => s.map.epoch >= stores[0].map.epoch - 1 && s.map.epoch <= stores[0].map.epoch + 1),
    `maps far apart after a clean stop: epochs ${stores.map((s) => s.map.epoch).join(', ')}`,
  );
});
