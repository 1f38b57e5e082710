/**
 * Rebalancing is restart-safe: the new node and an old member are killed (-9) while PGs are
 * moving (learners catching up, joint changes in flight), then restarted. Each resumes its
 * groups from the Raft configuration it had (the WAL and the membership saved beside each PG),
 * whatever the map says; the leaders carry the moves on to the map's replica sets; nothing
 * written before or during the move is lost, and every replica of every PG agrees. Then every
 * node is killed and restarted: the moved configurations come back as they were.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, waitFor, describeUnhealthy } from '../helpers/cluster.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import type { ClusterStatus } from '../../src/cluster/admin-client.js';
import { describeFio, startFio } from './io.js';

const MiB = 1024 * 1024;
const pgCount = 8;
const volumeBytes = 48 * MiB;

function fioArgs(verifyOnly: boolean): string[] {
  return ['--name=all', '--rw=write', '--bs=128k', `--size=${volumeBytes}`, '--iodepth=8', ...(verifyOnly ? ['--verify_only=1'] : ['--do_verify=0'])];
}

test('kill -9 of the new node and of an old member mid-move: the moves resume and finish, data intact', { timeout: 150_000 }, async (t) => {
  if (!requireTools(t, 'fio')) return;
  const started = Date.now();
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount, volumes: [{ name: 'vol0', sizeBytes: volumeBytes, extentBytes: MiB }] });
  const dir = tempDir(t);
  const w = await startFio(cluster, 2, fioArgs(false), dir).done;
  assert.equal(w.code, 0, describeFio(w));

  await cluster.addNode();
  // Kill as soon as some PG has node 4 as a learner (or in a joint configuration).
  await waitFor('a PG with node 4 joining', 20_000, async () => {
    const s = await cluster.clusterStatus();
    return s.groups.some((g) => g.configuration && (g.configuration.learners?.includes(4) || g.configuration.votersOutgoing)) ? true : undefined;
  }, 20);
  await Promise.all([cluster.node(4).kill9(), cluster.node(1).kill9()]);
  await new Promise((r) => setTimeout(r, 500));
  await cluster.node(1).start();
  await cluster.node(4).start();

  let last: ClusterStatus | undefined;
  await waitFor('every PG configuration equal to its map replicas after the restarts', 60_000, async () => {
    const s = (last = await cluster.clusterStatus());
    const pgs = s.groups.filter((g) => g.groupId !== 0);
    if (pgs.some((g) => g.configuration !== undefined || g.health !== 'ok')) return undefined;
    for (const n of cluster.nodes) {
      for (const g of (await cluster.status(n.id)).groups) {
        if (g.groupId !== 0 && !pgs.find((x) => x.groupId === g.groupId)!.replicas.includes(n.id)) return undefined; // not retired yet
      }
    }
    return true;
  }, 250).catch((err: Error) => {
    throw new Error(`${err.message}\n${last ? describeUnhealthy(last) + '\n' + JSON.stringify(last.groups.filter((g) => g.configuration)) : ''}\n${cluster.logs(10)}`);
  });

  const onNew = (await cluster.status(4)).groups.filter((g) => g.groupId !== 0 && g.voters.includes(4));
  assert.ok(onNew.length > 0, 'node 4 holds no PG');
  for (const via of [4, 1]) {
    const v = await startFio(cluster, via, fioArgs(true), dir).done;
    assert.equal(v.code, 0, `verify through node ${via}: ${describeFio(v)}`);
  }
  assert.equal(await cluster.waitReplicasIdentical(30_000), pgCount);

  // Every node killed and restarted after the moves: each PG comes back with its moved
  // configuration (saved beside it), not the one it was created with.
  await cluster.kill9All();
  await cluster.startAll();
  await waitFor('every PG back with its moved configuration', 60_000, async () => {
    const s = (last = await cluster.clusterStatus());
    const pgs = s.groups.filter((g) => g.groupId !== 0);
    return pgs.every((g) => g.health === 'ok' && g.configuration === undefined) ? true : undefined;
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n${last ? describeUnhealthy(last) + '\n' + JSON.stringify(last.groups.filter((g) => g.configuration)) : ''}\n${cluster.logs(10)}`);
  });
  const v = await startFio(cluster, 3, fioArgs(true), dir).done;
  assert.equal(v.code, 0, `verify after restarting every node: ${describeFio(v)}`);
  assert.equal(await cluster.waitReplicasIdentical(30_000), pgCount);
  t.diagnostic(`node 4 holds ${onNew.length} PGs; ${Date.now() - started} ms in all`);
});
