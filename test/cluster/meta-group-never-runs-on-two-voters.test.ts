/**
 * Group 0 (the cluster map) never grows through two voters, a group that stops when either of
 * its nodes does. On real processes:
 *  - a cluster of two nodes keeps group 0 on node 1 alone: with node 2 killed, the map still
 *    changes (a volume is created through node 1) at once;
 *  - once two more nodes are there, both join group 0 as learners, then become voters in one
 *    change once caught up (one log line names both, for each change),
 *    and from then on the map survives the loss of any one node: with group 0's leader
 *    killed, a volume is created through another node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logRecords, metaVoters, sleep, TestCluster, waitFor } from '../helpers/cluster.js';

test('group 0 never runs on two voters: two nodes keep one, and it grows from one to three in one change', { timeout: 120_000 }, async (t) => {
  const cluster = await TestCluster.start(t, { nodes: 2, pgCount: 2, replicas: 2 });
  // Group 0's leader plans its membership once a second: give it three rounds to (not) grow.
  await sleep(3000);
  let status = await cluster.clusterStatus();
  assert.deepEqual(metaVoters(status), [1], 'group 0 of a two-node cluster');

  // Node 2 lost: group 0 on node 1 alone still decides.
  await cluster.node(2).kill9();
  let started = Date.now();
  await cluster.admin(1, 'createVolume', { name: 'with-node-2-down', sizeBytes: 1 << 20 });
  t.diagnostic(`volume created with node 2 down in ${Date.now() - started} ms`);
  await cluster.node(2).start();

  // A third node: group 0 takes nodes 2 and 3 in one change.
  await cluster.addNode();
  status = await waitFor('group 0 on three voters', 30_000, async () => {
    const s = await cluster.clusterStatus();
    return metaVoters(s).length === 3 && s.groups[0].health === 'ok' ? s : undefined;
  });
  assert.deepEqual(metaVoters(status), [1, 2, 3]);
  const added = logRecords(cluster.node(1), 'adding metadata voters');
  assert.deepEqual(added.map((r) => r.nodeIds), [[2, 3]], 'group 0 grew other than by one change of two voters');
  // Both joined as learners first (one change), and became voters once caught up.
  const learners = logRecords(cluster.node(1), 'adding metadata learners (voters once caught up)');
  assert.deepEqual(learners.map((r) => r.nodeIds), [[2, 3]], 'the newcomers were not learners first');

  // Its leader lost: the two voters left elect one, and the map changes again.
  const metaLeader = status.groups[0].leader;
  await cluster.node(metaLeader).kill9();
  const via = [1, 2, 3].find((id) => id !== metaLeader)!;
  started = Date.now();
  await cluster.admin(via, 'createVolume', { name: 'with-the-leader-down', sizeBytes: 1 << 20 });
  t.diagnostic(`volume created through node ${via} with group 0's leader ${metaLeader} down in ${Date.now() - started} ms`);
  await cluster.node(metaLeader).start();
  const names = (await cluster.admin<{ volumes: { name: string }[] }>(via, 'listVolumes')).volumes.map((v) => v.name).sort();
  assert.deepEqual(names, ['vol0', 'with-node-2-down', 'with-the-leader-down']);
});
