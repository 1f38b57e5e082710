/**
 * Rebalancing on a real 3-node cluster: a 4th node joins in a new zone after the volume was
 * written; placement moves about three quarters of the PGs to it, and their Raft membership
 * follows (learner, snapshot in chunks, one joint change, old replica retired) while a client
 * keeps writing. Then every PG's configuration equals its map replicas, the new node holds PGs,
 * the old replicas of moved PGs are gone, every byte reads back (fio crc32c verify) through the
 * new node's gateway, and every replica of every PG holds the same bytes. Then node 1 is marked
 * out and drains the same way (leaders on it hand over first), its gateway still serving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TestCluster, waitFor, describeUnhealthy, logRecords } from '../helpers/cluster.js';
import { cliPath } from '../helpers/paths.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import type { ClusterStatus } from '../../src/cluster/admin-client.js';
import { describeFio, startFio } from './io.js';
import { maxMovesPerNode } from '../../src/cluster/pg-mover.js';

const MiB = 1024 * 1024;
const pgCount = 16;
const volumeBytes = 32 * MiB;
const half = volumeBytes / 2;

function fioRegion(offset: number, verifyOnly: boolean): string[] {
  return [
    '--name=region',
    '--rw=write',
    '--bs=64k',
    `--offset=${offset}`,
    `--size=${half}`,
    '--iodepth=8',
    '--randrepeat=1',
    ...(verifyOnly ? ['--verify_only=1'] : ['--do_verify=0']),
  ];
}

async function metricSum(http: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${http}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sum += Number(line.split(' ').pop());
  return sum;
}

test('a node joining in a new zone takes over PGs, a node marked out drains: configurations follow the map, data intact everywhere', { timeout: 120_000 }, async (t) => {
  if (!requireTools(t, 'fio')) return;
  const started = Date.now();
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount, volumes: [{ name: 'vol0', sizeBytes: volumeBytes, extentBytes: MiB }] });
  const dir = tempDir(t);

  // The first half, written before the move.
  const first = await startFio(cluster, 1, fioRegion(0, false), dir).done;
  assert.equal(first.code, 0, describeFio(first));

  const before = await cluster.map();
  await cluster.addNode();
  const after = await cluster.map();
  const moved = after.pools[0].pgs.map((pg, i) => ({ i, pg })).filter(({ i, pg }) => pg.replicas.join() !== before.pools[0].pgs[i].replicas.join());
  assert.ok(moved.length > 0, 'placement moved no PG to the new node');
  assert.ok(moved.every(({ pg }) => pg.replicas.includes(4)), 'a moved PG does not include the new node');

  // The second half, written while the PGs move (through a gateway that stays).
  const second = startFio(cluster, 2, fioRegion(half, false), dir);

  let last: ClusterStatus | undefined;
  let mostMovingOnOneLeader = 0;
  await waitFor('every PG configuration equal to its map replicas, old replicas retired', 60_000, async () => {
    const s = (last = await cluster.clusterStatus());
    const pgs = s.groups.filter((g) => g.groupId !== 0);
    // At most maxMovesPerNode PGs led by one node have learners or a joint configuration.
    const perLeader = new Map<number, number>();
    for (const g of pgs) if (g.configuration?.learners?.length || g.configuration?.votersOutgoing?.length) perLeader.set(g.leader, (perLeader.get(g.leader) ?? 0) + 1);
    for (const [leader, n] of perLeader) {
      mostMovingOnOneLeader = Math.max(mostMovingOnOneLeader, n);
      assert.ok(n <= maxMovesPerNode, `node ${leader} moves ${n} PGs at once`);
    }
    if (pgs.some((g) => g.configuration !== undefined || g.health !== 'ok')) return undefined;
    for (const n of cluster.nodes) {
      const st = await cluster.status(n.id);
      for (const g of st.groups) {
        if (g.groupId === 0) continue;
        const want = pgs.find((x) => x.groupId === g.groupId)!.replicas;
        if (!want.includes(n.id)) return undefined; // not retired yet
      }
    }
    return true;
  }, 250).catch((err: Error) => {
    throw new Error(`${err.message}\n${last ? describeUnhealthy(last) + '\n' + JSON.stringify(last.groups.filter((g) => g.configuration), null, 1) : ''}\n${cluster.logs(8)}`);
  });
  const r2 = await second.done;
  assert.equal(r2.code, 0, describeFio(r2));

  // `raftblock status --json` agrees: no PG moving, the new node holds PGs.
  const cli = spawnSync(process.execPath, [cliPath, 'status', '--json', '--server', cluster.node(1).addrs.http], { encoding: 'utf8' });
  assert.equal(cli.status, 0, cli.stderr);
  const status = JSON.parse(cli.stdout) as ClusterStatus;
  const pgs = status.groups.filter((g) => g.groupId !== 0);
  assert.equal(pgs.length, pgCount);
  assert.ok(pgs.every((g) => g.configuration === undefined), 'a PG configuration still differs from its map replicas');
  const onNew = (await cluster.status(4)).groups.filter((g) => g.groupId !== 0 && g.voters.includes(4));
  assert.equal(onNew.length, moved.length, `node 4 is a voter of ${onNew.length} PGs, placement moved ${moved.length}`);

  // Every byte through the new node's gateway.
  for (const offset of [0, half]) {
    const v = await startFio(cluster, 4, fioRegion(offset, true), dir).done;
    assert.equal(v.code, 0, describeFio(v));
  }
  // Every replica of every PG holds the same bytes.
  assert.equal(await cluster.waitReplicasIdentical(30_000), pgCount);

  let completed = 0;
  let retired = 0;
  for (const n of cluster.nodes) {
    completed += await metricSum(n.addrs.http, 'raftblock_pg_moves_completed_total');
    retired += await metricSum(n.addrs.http, 'raftblock_pg_replicas_retired_total');
    assert.equal(await metricSum(n.addrs.http, 'raftblock_pg_moves_in_progress'), 0);
  }
  assert.ok(completed >= 1, `${completed} moves completed, ${moved.length} PGs moved`);
  // On a mismatch, what the nodes said of their retirements (a failed one logs its error).
  const retirements = (): string =>
    JSON.stringify(cluster.nodes.flatMap((n) => [...logRecords(n, 'retired a PG replica after its removal committed'), ...logRecords(n, 'could not retire a PG replica')].map((r) => ({ node: n.id, ...r }))));
  assert.equal(retired, moved.length, `every moved PG retired exactly one old replica: ${retirements()}`);
  t.diagnostic(`${moved.length} of ${pgCount} PGs moved to node 4 in ${Date.now() - started} ms; at most ${mostMovingOnOneLeader} moving on one leader`);

  // Node 1 marked out (`raftblock node-state 1 out`): it drains; PGs it leads hand over first.
  await cluster.drainNode(1, 2);
  for (const offset of [0, half]) {
    const v = await startFio(cluster, 1, fioRegion(offset, true), dir).done;
    assert.equal(v.code, 0, `verify through the drained node's gateway: ${describeFio(v)}`);
  }
  assert.equal(await cluster.waitReplicasIdentical(30_000), pgCount);
  t.diagnostic(`node 1 drained; ${Date.now() - started} ms in all`);
});
