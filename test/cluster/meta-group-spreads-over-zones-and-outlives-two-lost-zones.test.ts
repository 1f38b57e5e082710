/**
 * Group 0 (the cluster map) sits on fault domains as the PGs do:
 *  - three nodes of one zone hold its three voters; when a node of another zone joins, a voter
 *    moves there (the newcomer joins, then a voter of the crowded zone leaves), one change at
 *    a time, and the map keeps changing;
 *  - five nodes in five zones give it five voters, so that a cluster whose pool keeps five
 *    replicas outlives the loss of two zones whole: after kill -9 of two nodes (the founding
 *    one among them) the map still changes (a volume is created) and every PG still reads and
 *    writes, through the gateways left.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logRecords, metaVoters, TestCluster, waitFor } from '../helpers/cluster.js';
import { expectTagged, requirePythonNbd, writeTagged } from './io.js';

const MiB = 1024 * 1024;

test('group 0 moves a voter out of a crowded zone when a node of another zone joins', { timeout: 180_000 }, async (t) => {
  const zoneOf = (id: number): string => (id <= 3 ? 'a' : 'b');
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, failureDomain: 'host', labels: (id) => `zone=${zoneOf(id)},rack=r${id},host=h${id}` });
  assert.deepEqual(metaVoters(await cluster.clusterStatus()), [1, 2, 3]);

  await cluster.addNode();
  const s = await waitFor('group 0 on three voters in two zones', 60_000, async () => {
    const st = await cluster.clusterStatus();
    const voters = metaVoters(st);
    const zones = new Set(voters.map(zoneOf));
    return voters.length === 3 && zones.size === 2 && st.groups.find((g) => g.groupId === 0)?.health === 'ok' ? st : undefined;
  });
  const voters = metaVoters(s);
  assert.ok(voters.includes(4), `voters ${JSON.stringify(voters)}`);
  // The move was three changes: node 4 joined alone as a learner, became a voter once caught
  // up, then one voter of zone a left.
  const learners = cluster.nodes.flatMap((n) => logRecords(n, 'adding metadata learners (voters once caught up)')).map((r) => r.nodeIds);
  assert.ok(learners.some((ids) => JSON.stringify(ids) === '[4]'), `learners ${JSON.stringify(learners)}`);
  const added = cluster.nodes.flatMap((n) => logRecords(n, 'adding metadata voters')).map((r) => r.nodeIds);
  assert.ok(added.some((ids) => JSON.stringify(ids) === '[4]'), `additions ${JSON.stringify(added)}`);
  const removed = cluster.nodes.flatMap((n) => logRecords(n, 'removing a metadata voter that is out or gone from the map, crowds a fault domain, or is one of two'));
  assert.equal(removed.length, 1, JSON.stringify(removed));
  assert.ok(!voters.includes(removed[0].nodeId as number));
  // The group-0 leader reports where its voters sit.
  const metaLeader = s.groups.find((g) => g.groupId === 0)!.leader;
  assert.equal(await cluster.metric(metaLeader, 'raftblock_meta_voter_domains{level="zone"}'), 2);
  assert.equal(await cluster.metric(metaLeader, 'raftblock_meta_voter_domains{level="voters"}'), 3);

  // The map still changes.
  await cluster.admin(2, 'createVolume', { name: 'after-move', sizeBytes: 8 * MiB });
  assert.ok((await cluster.map()).volumes.some((v) => v.name === 'after-move'));
});

test('five zones, five replicas: kill -9 of two zones leaves the map and every PG working', { timeout: 300_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 5, replicas: 5, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: 16 * MiB, extentBytes: MiB }] });
  const before = await cluster.clusterStatus();
  assert.deepEqual(metaVoters(before), [1, 2, 3, 4, 5]);
  assert.equal(await cluster.metric(before.groups.find((g) => g.groupId === 0)!.leader, 'raftblock_meta_voter_domains{level="zone"}'), 5);
  // One block in each of eight extents: every PG holds some.
  const blocks = Array.from({ length: 8 }, (_, e) => e * 256);
  await writeTagged(cluster, 3, blocks, 'before');

  // Zones z1 and z2 go: node 1 founded the cluster and, like node 2, was a voter of group 0 then
  // (with three voters, these two would have been a quorum lost).
  await cluster.node(1).kill9();
  await cluster.node(2).kill9();

  await waitFor('a volume created with two zones gone', 60_000, async () => {
    try {
      await cluster.admin(3, 'createVolume', { name: 'two-zones-down', sizeBytes: 8 * MiB });
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'ALREADY_EXISTS') return true;
      t.diagnostic(`createVolume: ${(err as Error).message}`);
      return undefined;
    }
  });
  assert.ok((await cluster.map()).volumes.some((v) => v.name === 'two-zones-down'));

  await expectTagged(cluster, 5, blocks, 'before', 30);
  await writeTagged(cluster, 4, blocks, 'after', 30);
  await expectTagged(cluster, 3, blocks, 'after', 30);
});
