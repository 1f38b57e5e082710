/**
 * Partitions, with every node in its own network namespace (made by the test): isolate the
 * node leading the most PGs, then split the node leading the fewest from the other two. The
 * minority side never acknowledges a write, no read through it returns data older than a write
 * the majority acknowledged before the read began, and after healing every replica of every
 * PG holds the same bytes (data digests compared) and every gateway reads the latest writes.
 *
 * The minority's writes go to blocks of their own: they time out at the client, but their
 * outcome is unknown (the gateway may still deliver them once the partition heals, which a
 * block device may do with writes its client abandoned), so those blocks may end up holding
 * either value; the blocks the test checks exactly are written only by the majority.
 *
 * The nodes run `--peer-tls`: the links cut and healed carry TLS, and the connections remade
 * after the heal handshake again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, describeUnhealthy, waitFor } from '../helpers/cluster.js';
import { requireNetns } from '../helpers/netns.js';
import { pgGroupId, pgOfExtent } from '../../src/cluster/map.js';
import { blockOps, requirePythonNbd, type BlockOpResult } from './io.js';

const MiB = 1024 * 1024;
const extentBytes = MiB;
const blockBytes = 4096;
const blocksPerExtent = extentBytes / blockBytes;
const pgCount = 8;

function values(results: BlockOpResult[]): Map<number, string | null | undefined> {
  return new Map(results.map((r) => [r.block, r.result === 'ok' ? r.value : undefined]));
}

test('partitions: a minority never acknowledges a write nor reads stale data; healed replicas are identical', { timeout: 300_000 }, async (t) => {
  if (!requireNetns(t)) return;
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, netns: true, pgCount, peerTls: true, volumes: [{ name: 'vol0', sizeBytes: 64 * MiB, extentBytes }] });
  const volume = (await cluster.volumes()).volumes[0];
  const map = await cluster.map();
  const poolId = map.pools[0].id;
  // The first block of each of 16 extents: spread over the PGs by the extent hash.
  const blocks: number[] = [];
  const spare: number[] = [];
  const groupOfBlock = new Map<number, number>();
  for (let e = 0; e < 32; e++) {
    (e < 16 ? blocks : spare).push(e * blocksPerExtent);
    groupOfBlock.set(e * blocksPerExtent, pgGroupId(poolId, pgOfExtent(volume.id, e, pgCount)));
  }
  const started = Date.now();
  const phase = (what: string): void => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
  assert.ok(new Set(groupOfBlock.values()).size >= 4, 'blocks should cover several PGs');

  const writeAll = async (via: number, tag: string): Promise<void> => {
    const r = await blockOps(cluster, via, 'write', blocks, { tag, timeoutS: 15 });
    const bad = r.filter((x) => x.result !== 'ok');
    assert.deepEqual(bad, [], `writes of ${tag} through node ${via} failed\n${cluster.logs()}`);
  };
  const expectEverywhere = async (tag: string): Promise<void> => {
    for (const n of cluster.nodes) {
      const r = await blockOps(cluster, n.id, 'read', blocks, { timeoutS: 15 });
      for (const x of r) assert.deepEqual([x.block, x.result, x.value], [x.block, 'ok', tag], `read through node ${n.id}`);
    }
  };
  const leadersBy = async (): Promise<Map<number, number>> => {
    const s = await cluster.clusterStatus();
    const count = new Map<number, number>(cluster.nodes.map((n) => [n.id, 0]));
    for (const g of s.groups) if (g.groupId !== 0 && g.leader !== 0) count.set(g.leader, (count.get(g.leader) ?? 0) + 1);
    return count;
  };

  await writeAll(1, 'v1');
  await expectEverywhere('v1');

  // --- Isolate the node leading the most PGs.
  const counts = await leadersBy();
  const leader = [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  const majority = cluster.nodes.map((n) => n.id).filter((id) => id !== leader);
  const ledGroups = new Set((await cluster.clusterStatus()).groups.filter((g) => g.leader === leader && g.groupId !== 0).map((g) => g.groupId));
  const ledBlocks = spare.filter((b) => ledGroups.has(groupOfBlock.get(b)!)).slice(0, 4);
  assert.ok(ledBlocks.length > 0);
  cluster.net!.isolate(leader);
  phase(`isolated node ${leader}`);

  // Writes through the isolated leader's gateway, one block per connection, in parallel.
  const minority = (await Promise.all(ledBlocks.map((b) => blockOps(cluster, leader, 'write', [b], { tag: 'minority-a', timeoutS: 4 })))).flat();
  assert.deepEqual(minority.filter((r) => r.result === 'ok'), [], 'the isolated minority acknowledged a write');

  await waitFor('new leaders on the majority side', 30_000, async () => {
    const s = await cluster.clusterStatus(majority[0]);
    const orphans = s.groups.filter((g) => g.groupId !== 0 && (g.leader === 0 || g.leader === leader));
    if (orphans.length === 0) return true;
    throw new Error(describeUnhealthy({ ...s, groups: orphans }));
  });
  phase('new leaders elected');
  await writeAll(majority[0], 'v2');
  phase('v2 written by the majority');
  // Every v2 write completed before these reads began: v1 (or the minority's tag) is stale.
  const staleA = values(await blockOps(cluster, leader, 'read', blocks, { timeoutS: 4 }));
  for (const [b, v] of staleA) assert.ok(v === undefined || v === 'v2', `block ${b} read ${v} through the isolated node after v2 was acknowledged`);

  cluster.net!.heal();
  await cluster.waitLeaders(60_000);
  phase('healed');
  await expectEverywhere('v2');
  phase('v2 read through every gateway');

  // --- Split the node leading the fewest PGs from the other two.
  const counts2 = await leadersBy();
  const loner = [...counts2.entries()].sort((a, b) => a[1] - b[1])[0][0];
  const rest = cluster.nodes.map((n) => n.id).filter((id) => id !== loner);
  cluster.net!.partition([[loner], rest]);
  phase(`split node ${loner} from ${rest.join(', ')}`);
  const lonerWrites = (await Promise.all(spare.slice(0, 4).map((b) => blockOps(cluster, loner, 'write', [b], { tag: 'minority-b', timeoutS: 4 })))).flat();
  assert.deepEqual(lonerWrites.filter((r) => r.result === 'ok'), [], 'the minority acknowledged a write');
  await waitFor('leaders on the majority side', 30_000, async () => {
    const s = await cluster.clusterStatus(rest[0]);
    const orphans = s.groups.filter((g) => g.groupId !== 0 && (g.leader === 0 || g.leader === loner));
    if (orphans.length === 0) return true;
    throw new Error(describeUnhealthy({ ...s, groups: orphans }));
  });
  await writeAll(rest[1], 'v3');
  const staleB = values(await blockOps(cluster, loner, 'read', blocks, { timeoutS: 4 }));
  for (const [b, v] of staleB) assert.ok(v === undefined || v === 'v3', `block ${b} read ${v} through the minority after v3 was acknowledged`);

  cluster.net!.heal();
  phase('healed');
  await expectEverywhere('v3');
  const compared = await cluster.waitReplicasIdentical(90_000);
  assert.equal(compared, pgCount);
  phase('replicas identical');
  for (const n of cluster.nodes) assert.ok((await cluster.metric(n.id, 'raftblock_transport_tls_connections_total')) >= 2, `node ${n.id} completed fewer than two TLS handshakes (one per peer at least)`);
  t.diagnostic(`isolated leader node ${leader} (led ${ledGroups.size} PGs), then split node ${loner}`);
});
