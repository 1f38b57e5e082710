/**
 * Down-out on a real 4-node cluster (`--down-out-interval 3`): a node holding PG replicas is
 * killed (-9) after the volume was written; group 0's leader finds it unreachable past the
 * interval and marks it out on its own (autoOut), and placement moves its PGs to the three
 * nodes left, which rebuild them (learner, snapshot, joint change). Every PG is then healthy
 * without the dead node, `raftblock status` shows it `out (down)`, and every byte reads back
 * (fio crc32c verify). Restarted with its data dir, the node answers again: the leader marks
 * it in, PGs move back to it, every replica of every PG holds the same bytes, and every byte
 * reads back through its own gateway.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TestCluster, describePlacement, pgsPlacedOn, waitFor, describeUnhealthy, logRecords } from '../helpers/cluster.js';
import { cliPath } from '../helpers/paths.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import type { ClusterStatus } from '../../src/cluster/admin-client.js';
import type { ClusterMap } from '../../src/cluster/map.js';
import { describeFio, startFio } from './io.js';

const MiB = 1024 * 1024;
const pgCount = 8;
const volumeBytes = 32 * MiB;

function fioWhole(verifyOnly: boolean): string[] {
  return [
    '--name=whole',
    '--rw=write',
    '--bs=64k',
    '--offset=0',
    `--size=${volumeBytes}`,
    '--iodepth=8',
    '--randrepeat=1',
    ...(verifyOnly ? ['--verify_only=1'] : ['--do_verify=0']),
  ];
}

/** The sum of a metric's samples on one node whose labels include `labels` (e.g. `state="out"`). */
async function metricSum(http: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://${http}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name + '{') && line.includes(labels)) sum += Number(line.split(' ').pop());
  return sum;
}

test('a node unreachable past the down-out interval is marked out, its PGs move to the nodes left, and it comes back in when restarted', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'fio')) return;
  const started = Date.now();
  const cluster = await TestCluster.start(t, {
    nodes: 4,
    replicas: 3,
    pgCount,
    volumes: [{ name: 'vol0', sizeBytes: volumeBytes, extentBytes: MiB }],
    nodeFlags: ['--down-out-interval', '3'],
  });
  const dir = tempDir(t);

  // The whole volume, written while every node is up.
  const written = await startFio(cluster, 1, fioWhole(false), dir).done;
  assert.equal(written.code, 0, describeFio(written));

  // The victim: a node other than 1 holding PG replicas, node 4 if it holds any.
  const before = await cluster.map();
  const victim = [4, 3, 2].find((id) => pgsPlacedOn(before, id) > 0);
  assert.ok(victim !== undefined, `no node but 1 holds a PG: ${describePlacement(before)}`);
  const held = pgsPlacedOn(before, victim);
  const live = cluster.nodes.filter((n) => n.id !== victim).map((n) => n.id);
  await cluster.node(victim).kill9();
  const killedAt = Date.now();

  /** Every PG settled on the map's replicas once `mapReady` holds (see waitPlacementSettled). */
  const settled = async (what: string, ask: number[], mapReady: (map: ClusterMap) => string | undefined): Promise<void> => {
    await cluster.waitPlacementSettled(what, { via: 1, ask, mapReady });
  };

  // Marked out by group 0's leader, its PGs placed on the nodes left and rebuilt there.
  await settled(`node ${victim} marked out (autoOut) and its PGs moved off it`, live, (map) => {
    const n = map.nodes.find((x) => x.id === victim);
    if (n?.state !== 'out' || n.autoOut !== true) return `node ${victim} is ${n?.state}${n?.autoOut ? ' (auto)' : ''}`;
    const still = map.pools[0].pgs.filter((pg) => pg.replicas.includes(victim)).length;
    return still > 0 ? `${still} PGs still placed on node ${victim}` : undefined;
  });
  const outAfterMs = Date.now() - killedAt;

  // `raftblock status` says so.
  const json = spawnSync(process.execPath, [cliPath, 'status', '--json', '--server', cluster.node(1).addrs.http], { encoding: 'utf8' });
  assert.equal(json.status, 0, json.stderr);
  const status = JSON.parse(json.stdout) as ClusterStatus;
  const view = status.nodes.find((n) => n.id === victim);
  assert.equal(view?.state, 'out', `status --json: ${JSON.stringify(view)}`);
  assert.equal(view?.autoOut, true, `status --json: ${JSON.stringify(view)}`);
  assert.equal(view?.reachable, false, `status --json: ${JSON.stringify(view)}`);
  assert.ok(status.groups.filter((g) => g.groupId !== 0).every((g) => g.health === 'ok' && !g.replicas.includes(victim)), describeUnhealthy(status));
  const text = spawnSync(process.execPath, [cliPath, 'status', '--server', cluster.node(1).addrs.http], { encoding: 'utf8' });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /out \(down\)/, text.stdout);

  // Every byte, without the dead node.
  const v1 = await startFio(cluster, 1, fioWhole(true), dir).done;
  assert.equal(v1.code, 0, `verify with node ${victim} out: ${describeFio(v1)}`);
  let outs = 0;
  for (const id of live) outs += await metricSum(cluster.node(id).addrs.http, 'raftblock_node_down_out_changes_total', 'state="out"');
  assert.ok(outs >= 1, `raftblock_node_down_out_changes_total{state="out"} summed over nodes ${live.join(',')} is ${outs}`);

  // Back with its data dir: marked in again, PGs placed on it again.
  await cluster.node(victim).start();
  const restartedAt = Date.now();
  await settled(`node ${victim} marked in again and holding PGs`, cluster.nodes.map((n) => n.id), (map) => {
    const n = map.nodes.find((x) => x.id === victim);
    if (n?.state !== 'in' || n.autoOut !== undefined) return `node ${victim} is ${n?.state}${n?.autoOut ? ' (auto)' : ''}`;
    return pgsPlacedOn(map, victim) > 0 ? undefined : `no PG placed on node ${victim}`;
  });
  const inAfterMs = Date.now() - restartedAt;
  const after = await cluster.map();
  assert.equal(after.nodes.find((n) => n.id === victim)?.autoOut, undefined);

  let ins = 0;
  for (const n of cluster.nodes) ins += await metricSum(n.addrs.http, 'raftblock_node_down_out_changes_total', 'state="in"');
  assert.ok(ins >= 1, `raftblock_node_down_out_changes_total{state="in"} summed over every node is ${ins}`);

  // Every replica of every PG holds the same bytes; every byte through the returned node.
  assert.equal(await cluster.waitReplicasIdentical(60_000), pgCount);
  const v2 = await startFio(cluster, victim, fioWhole(true), dir).done;
  assert.equal(v2.code, 0, `verify through node ${victim}'s gateway: ${describeFio(v2)}`);

  const warnings = cluster.nodes.flatMap((n) =>
    [
      ...logRecords(n, 'node unreachable past the down-out interval, left in'),
      ...logRecords(n, 'down-out round failed; the next round tries again'),
    ].map((r) => `node ${n.id}: ${r.msg} ${JSON.stringify({ ...r, msg: undefined, time: undefined })}`),
  );
  if (warnings.length > 0) t.diagnostic(`down-out warnings:\n${warnings.join('\n')}`);
  t.diagnostic(
    `node ${victim} (held ${held} of ${pgCount} PGs) out and its PGs moved ${outAfterMs} ms after kill -9, ` +
      `back in and settled ${inAfterMs} ms after restart (holding ${pgsPlacedOn(after, victim)}); ${Date.now() - started} ms in all`,
  );
});
