/**
 * Group 0 (the cluster map) does not stay on two voters, a group that stops when either node
 * does: on three nodes with a pool of two replicas, a node drained and removed leaves group 0
 * on the other two, and the leader then drops the voter that does not lead, so the map keeps
 * changing with that node killed. (Before, the two stayed voters, and killing either stopped
 * every map change.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { metaVoters, TestCluster, waitFor } from '../helpers/cluster.js';

test('after a node remove leaves group 0 on two voters, it drops to one and the map outlives the other node', { timeout: 120_000 }, async (t) => {
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, replicas: 2 });
  const before = await cluster.waitCaughtUp();
  assert.deepEqual(metaVoters(before), [1, 2, 3]);

  await cluster.drainNode(3, 1);
  await cluster.admin(1, 'removeNode', 3);
  const s = await waitFor('group 0 on one voter', 30_000, async () => {
    const st = await cluster.clusterStatus();
    const voters = metaVoters(st);
    return voters.length === 1 && st.groups.find((g) => g.groupId === 0)?.health === 'ok' ? st : undefined;
  });
  const [voter] = metaVoters(s);
  const other = voter === 1 ? 2 : 1;
  t.diagnostic(`group 0 on node ${voter} alone`);

  // The node that is no voter any more is lost: the map still changes, at once.
  await cluster.node(other).kill9();
  const started = Date.now();
  await cluster.admin(voter, 'createVolume', { name: 'with-the-other-node-down', sizeBytes: 1 << 20 });
  t.diagnostic(`volume created with node ${other} down in ${Date.now() - started} ms`);
  assert.ok((await cluster.admin<{ volumes: { name: string }[] }>(voter, 'listVolumes')).volumes.some((v) => v.name === 'with-the-other-node-down'));
});
