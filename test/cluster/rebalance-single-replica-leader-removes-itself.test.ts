/**
 * A PG whose only replica sits on a node marked out: no wanted voter exists to hand
 * leadership to, so the leader adds the new replica as a learner, lets it catch up, and
 * removes itself in the joint change (it steps down once that commits and hands over). The
 * data written before moves intact, and the drained node keeps no PG.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../helpers/cluster.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { pgGroupId } from '../../src/cluster/map.js';
import { describeFio, startFio } from './io.js';

const MiB = 1024 * 1024;
const soloBytes = 16 * MiB;

function fioSolo(cluster: TestCluster, via: number, verifyOnly: boolean): string[] {
  // The job's --uri overrides the one startFio puts before it.
  return ['--name=solo', `--uri=${cluster.nbdUri(via, 'solo')}`, '--rw=write', '--bs=64k', `--size=${soloBytes}`, '--iodepth=8', ...(verifyOnly ? ['--verify_only=1'] : ['--do_verify=0'])];
}

test('a single-replica PG on a drained node moves: its leader removes itself, data intact', { timeout: 120_000 }, async (t) => {
  if (!requireTools(t, 'fio')) return;
  const started = Date.now();
  const cluster = await TestCluster.start(t, { nodes: 4, pgCount: 4 });
  const dir = tempDir(t);
  await cluster.admin(1, 'createPool', { name: 'solo', replicas: 1, pgCount: 8, failureDomain: 'zone' });
  await cluster.admin(1, 'createVolume', { name: 'solo', sizeBytes: soloBytes, pool: 'solo', extentBytes: MiB });
  await cluster.waitLeaders(30_000);
  const w = await startFio(cluster, 2, fioSolo(cluster, 2, false), dir).done;
  assert.equal(w.code, 0, describeFio(w));

  const solo = (await cluster.map()).pools.find((p) => p.name === 'solo')!;
  const onNode1 = solo.pgs.map((pg, i) => ({ i, pg })).filter(({ pg }) => pg.replicas[0] === 1).map(({ i }) => pgGroupId(solo.id, i));
  assert.ok(onNode1.length > 0, 'placement put no single-replica PG on node 1');

  await cluster.drainNode(1, 2);
  const s = await cluster.clusterStatus();
  for (const g of onNode1) {
    const view = s.groups.find((x) => x.groupId === g)!;
    assert.equal(view.replicas.length, 1);
    assert.equal(view.leader, view.replicas[0], `group ${g} is led by its new only replica`);
  }
  const v = await startFio(cluster, 3, fioSolo(cluster, 3, true), dir).done;
  assert.equal(v.code, 0, `verify through node 3: ${describeFio(v)}`);
  assert.equal(await cluster.waitReplicasIdentical(30_000), 4 + 8);
  t.diagnostic(`${onNode1.length} single-replica PGs moved off node 1; ${Date.now() - started} ms in all`);
});
