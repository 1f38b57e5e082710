/**
 * A two-node minority of a five-node cluster (pool of five replicas, every node in its own
 * network namespace): split [1, 2] | [3, 4, 5]. The minority nodes give up leadership (check
 * quorum) and elect no leader among themselves, acknowledge no write, and never serve a value
 * older than what the majority acknowledged; the majority carries on. After healing, every
 * replica holds the same bytes and every gateway reads the majority's writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeStatus } from '../../src/cluster/admin-client.js';
import { TestCluster, describeUnhealthy, sleep, waitFor } from '../helpers/cluster.js';
import { requireNetns } from '../helpers/netns.js';
import { blockOps, requirePythonNbd } from './io.js';

const MiB = 1024 * 1024;
const blocksPerExtent = 256;
const pgCount = 4;

test('a two-of-five minority elects no leader, acknowledges no write and reads nothing stale', { timeout: 300_000 }, async (t) => {
  if (!requireNetns(t)) return;
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 5, replicas: 5, netns: true, pgCount, volumes: [{ name: 'vol0', sizeBytes: 32 * MiB, extentBytes: MiB }] });
  const blocks = Array.from({ length: 8 }, (_, e) => e * blocksPerExtent);
  const spare = Array.from({ length: 4 }, (_, e) => (e + 8) * blocksPerExtent);
  const minority = [1, 2];
  const majority = [3, 4, 5];

  const v1 = await blockOps(cluster, 3, 'write', blocks, { tag: 'v1', timeoutS: 15 });
  assert.deepEqual(v1.filter((r) => r.result !== 'ok'), []);

  cluster.net!.partition([minority, majority]);
  const attempts = (
    await Promise.all(minority.flatMap((via) => spare.slice(0, 2).map((b) => blockOps(cluster, via, 'write', [b], { tag: `minority-${via}`, timeoutS: 4 }))))
  ).flat();
  assert.deepEqual(attempts.filter((r) => r.result === 'ok'), [], 'the minority acknowledged a write');

  await waitFor('majority leaders in every PG', 30_000, async () => {
    const s = await cluster.clusterStatus(3);
    const orphans = s.groups.filter((g) => g.groupId !== 0 && (g.leader === 0 || minority.includes(g.leader)));
    if (orphans.length === 0) return true;
    throw new Error(describeUnhealthy({ ...s, groups: orphans }));
  });
  const v2 = await blockOps(cluster, 4, 'write', blocks, { tag: 'v2', timeoutS: 15 });
  assert.deepEqual(v2.filter((r) => r.result !== 'ok'), []);

  // Check quorum: a leader that hears from no quorum steps down; none is elected in the minority.
  await sleep(3000);
  for (const id of minority) {
    const s = await cluster.admin<NodeStatus>(id, 'status');
    const leading = s.groups.filter((g) => g.groupId !== 0 && g.role === 'leader');
    assert.deepEqual(leading.map((g) => g.groupId), [], `minority node ${id} still leads PGs`);
    const reads = await blockOps(cluster, id, 'read', blocks, { timeoutS: 3 });
    for (const r of reads) assert.ok(r.result !== 'ok' || r.value === 'v2', `block ${r.block} read ${r.value} through minority node ${id} after v2 was acknowledged`);
  }

  cluster.net!.heal();
  await cluster.waitLeaders(60_000);
  for (const n of cluster.nodes) {
    const r = await blockOps(cluster, n.id, 'read', blocks, { timeoutS: 15 });
    for (const x of r) assert.deepEqual([x.block, x.result, x.value], [x.block, 'ok', 'v2'], `read through node ${n.id}`);
  }
  assert.equal(await cluster.waitReplicasIdentical(90_000), pgCount);
});
