/**
 * The operator's path for a PG whose every replica is lost: a pool of one replica, the disk of
 * a node holding some of its PGs wiped, the node replaced (`node replace`) and started again
 * empty. Its replicas of those PGs wait to be rebuilt from a leader that no longer exists, so
 * their blocks cannot be read. `raftblock pool reset-pg POOL N --accept-data-loss` starts each
 * over, empty: its blocks read as zeros and take writes again, every other PG keeps its data.
 * The reset is refused without --accept-data-loss, (PG_NOT_LOST) for a PG a replica of
 * which holds state, and (PG_LOSS_UNCONFIRMED) while a node of the map cannot be asked what it
 * holds of the PG (every node of the map is asked first, not only the PG's replicas).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { pgOfExtent } from '../../src/cluster/map.js';
import { runCli } from '../helpers/cli.js';
import { describeUnhealthy, TestCluster, waitFor } from '../helpers/cluster.js';
import { blockOps, expectTagged, requirePythonNbd, writeTagged } from './io.js';

const MiB = 1024 * 1024;
const blocksPerExtent = 256;

test('a PG whose every replica lost its data is reset by the operator: empty, writable, the rest intact', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: 8 * MiB }] });
  await cluster.admin(1, 'createPool', { name: 'single', replicas: 1, pgCount: 8, failureDomain: 'zone' });
  await cluster.admin(1, 'createVolume', { name: 'solo', sizeBytes: 16 * MiB, extentBytes: MiB, pool: 'single' });
  const map = await cluster.map();
  const pool = map.pools.find((p) => p.name === 'single')!;
  const volume = map.volumes.find((v) => v.name === 'solo')!;
  // The node to lose: not node 1 (it founds the cluster when started empty), holding PGs of the pool.
  const victim = [2, 3].sort((a, b) => pool.pgs.filter((p) => p.replicas[0] === b).length - pool.pgs.filter((p) => p.replicas[0] === a).length)[0];
  const lostPgs = pool.pgs.map((p, i) => (p.replicas[0] === victim ? i : -1)).filter((i) => i >= 0);
  assert.ok(lostPgs.length > 0, `node ${victim} holds no PG of pool single`);
  const extents = Array.from({ length: 16 }, (_, e) => e);
  const lostExtents = extents.filter((e) => lostPgs.includes(pgOfExtent(volume.id, e, pool.pgCount)));
  const keptExtents = extents.filter((e) => !lostExtents.includes(e));
  assert.ok(lostExtents.length > 0 && keptExtents.length > 0);
  const block = (e: number): number => e * blocksPerExtent;
  await waitFor('a leader in every PG of pool single', 30_000, async () => ((await cluster.clusterStatus()).groups.every((g) => g.leader > 0) ? true : undefined));
  const tagged = await blockOps(cluster, 1, 'write', extents.map(block), { tag: 'before', timeoutS: 20, volume: 'solo' });
  assert.deepEqual(tagged.filter((r) => r.result !== 'ok'), []);

  // The victim's disk is lost; the operator replaces it, and it starts again empty.
  await cluster.node(victim).kill9();
  rmSync(join(cluster.node(victim).dir, 'data'), { recursive: true, force: true });
  await cluster.admin(1, 'replaceNode', victim);
  await cluster.node(victim).start();
  const stuck = await blockOps(cluster, 1, 'read', lostExtents.slice(0, 1).map(block), { timeoutS: 3, volume: 'solo' });
  assert.notEqual(stuck[0].result, 'ok', `a block of a PG with no replica left was read: ${JSON.stringify(stuck)}`);

  // Refused: without the flag; for a PG whose replica kept its data.
  const [first] = lostPgs;
  const http = cluster.node(1).addrs.http;
  const noFlag = await runCli(['pool', 'reset-pg', 'single', String(first), '--server', http]);
  assert.notEqual(noFlag.code, 0);
  assert.match(noFlag.stderr, /give --accept-data-loss/);
  const kept = pool.pgs.findIndex((p) => p.replicas[0] !== victim);
  const notLost = await runCli(['pool', 'reset-pg', 'single', String(kept), '--accept-data-loss', '--server', http]);
  assert.notEqual(notLost.code, 0);
  assert.match(notLost.stderr, /holds state of it.*PG_NOT_LOST/);
  // Refused while a node that is no replica of the PG cannot be asked (it might still run it);
  // the node is named.
  const bystander = victim === 2 ? 3 : 2;
  await cluster.node(bystander).kill9();
  const unconfirmed = await runCli(['pool', 'reset-pg', 'single', String(first), '--accept-data-loss', '--server', http]);
  assert.notEqual(unconfirmed.code, 0);
  assert.match(unconfirmed.stderr, new RegExp(`node ${bystander} could not be asked what it holds of it.*PG_LOSS_UNCONFIRMED`));
  await cluster.node(bystander).start();

  for (const pg of lostPgs) {
    // The first waits for group 0's leader to reach the restarted node again.
    const r = await waitFor(`the reset of PG single/${pg}`, 30_000, async () => {
      const r = await runCli(['pool', 'reset-pg', 'single', String(pg), '--accept-data-loss', '--server', http, '--json']);
      return r.code !== 0 && r.stderr.includes('PG_LOSS_UNCONFIRMED') ? undefined : r;
    });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { replicas: number[] }).replicas, [victim]);
  }
  await waitFor('every PG led again', 60_000, async () => {
    const s = await cluster.clusterStatus();
    return s.groups.every((g) => g.leader > 0 && g.health === 'ok') ? true : undefined;
  }).catch(async (err: Error) => {
    throw new Error(`${err.message}\n${describeUnhealthy(await cluster.clusterStatus())}\n${cluster.logs(10)}`);
  });

  // The reset PGs read zeros and take writes; the others kept their data.
  const zeros = await blockOps(cluster, 1, 'read', lostExtents.map(block), { timeoutS: 20, volume: 'solo' });
  assert.deepEqual(zeros.map((r) => [r.result, r.value]), lostExtents.map(() => ['ok', null]));
  const after = await blockOps(cluster, 2, 'write', lostExtents.map(block), { tag: 'after', timeoutS: 20, volume: 'solo' });
  assert.deepEqual(after.filter((r) => r.result !== 'ok'), []);
  const reads = await blockOps(cluster, 3, 'read', extents.map(block), { timeoutS: 20, volume: 'solo' });
  assert.deepEqual(reads.map((r) => r.value), extents.map((e) => (lostExtents.includes(e) ? 'after' : 'before')));
  // The three-replica pool rebuilt the victim's replicas from their leaders meanwhile.
  await writeTagged(cluster, 1, [0, 256, 512], 'vol0-after');
  await expectTagged(cluster, victim, [0, 256, 512], 'vol0-after');
});
