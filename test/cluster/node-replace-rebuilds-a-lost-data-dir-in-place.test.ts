/**
 * `raftblock node replace` on real processes: a 3-node cluster, 3 replicas over three zones
 * (no spare fault domain, so the lost node cannot be drained and removed), group 0 on all three.
 *  - replacing a node that runs is refused (NODE_ALIVE), and so is an id not in the map;
 *  - node 3 is killed and its data dir wiped; started again empty it is refused (another
 *    incarnation under a member's id) and starts no PG replica;
 *  - `node replace 3`: node 3 leaves group 0, the map forgets its incarnation; started empty
 *    again (same addresses) it registers and rebuilds its PG replicas from their leaders
 *    before they take part; killed after its first rebuild and started again, it rebuilds
 *    the rest (every PG is logged rebuilt), and group 0 takes it back as a voter;
 *  - its replicas are then identical to the others', and they hold the data: with node 2
 *    killed, node 1 and the rebuilt node 3 serve every block written before and after.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { logRecords, metaVoters, TestCluster, TestNode, waitFor } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import { metric } from '../helpers/hand-peer.js';
import type { ReplaceNodeResponse } from '../../src/cluster/admin-client.js';
import { expectTagged, requirePythonNbd, writeTagged } from './io.js';

const blocks = [0, 3, 9, 40, 77, 130, 260, 511];

const writeAll = (cluster: TestCluster, via: number, tag: string): Promise<void> => writeTagged(cluster, via, blocks, tag, 30);
const readAll = (cluster: TestCluster, via: number, tag: string): Promise<void> => expectTagged(cluster, via, blocks, tag, 30);


test('node replace: a node whose data dir was lost rejoins under its id and rebuilds every replica from its leader', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const pgCount = 8;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount, replicas: 3 });
  await writeAll(cluster, 1, 'before');
  const http = cluster.node(1).addrs.http;

  // A running node is never replaced; an unknown id is not found.
  const alive = await runCli(['node', 'replace', '2', '--server', http]);
  assert.equal(alive.code, 2, alive.stderr);
  assert.match(alive.stderr, /node 2 is running and reachable.*\[NODE_ALIVE\]/);
  const unknown = await runCli(['node', 'replace', '9', '--server', http]);
  assert.equal(unknown.code, 2, unknown.stderr);
  assert.match(unknown.stderr, /\[NOT_FOUND\]/);

  // Node 3 loses its disk.
  const lost = cluster.node(3);
  const member = (await cluster.map()).nodes.find((n) => n.id === 3)!;
  await lost.kill9();
  rmSync(join(lost.dir, 'data'), { recursive: true, force: true });
  await writeAll(cluster, 1, 'degraded');

  // Started empty without the operator's word: refused, and it starts nothing.
  const early = new TestNode(cluster, 3, lost.dir, lost.addrs);
  t.after(() => early.kill9());
  await early.start();
  await waitFor('the empty node 3 is refused', 30_000, async () => logRecords(early, 'registration refused')[0]);
  const pgsDir = join(early.dir, 'data', 'pgs');
  assert.deepEqual(existsSync(pgsDir) ? readdirSync(pgsDir) : [], [], 'the refused node started PG replicas');
  await early.stop();

  // The operator says the data dir is lost.
  const replaced = await runCli(['node', 'replace', '3', '--server', http, '--json']);
  assert.equal(replaced.code, 0, replaced.stderr);
  const answer = JSON.parse(replaced.stdout) as ReplaceNodeResponse;
  assert.equal(answer.nodeId, 3);
  assert.equal(answer.metaVoterRemoved, true);
  const during = (await cluster.map()).nodes.find((n) => n.id === 3)!;
  assert.equal(during.incarnation, undefined);
  assert.equal(during.replacing, true);
  assert.equal(during.rebuiltAtEpoch, answer.epoch);
  assert.ok(!metaVoters(await cluster.clusterStatus()).includes(3), 'node 3 still votes in group 0');
  const shown = await runCli(['status', '--server', http]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /^3\s+in \(replacing\)\s+no /m, shown.stdout);

  // Node 3 starts empty again: taken, and every replica rebuilt before it counts. It is
  // killed once its first replica is rebuilt, and started again on that data dir: the
  // replicas rebuilt already resume, the others are rebuilt (never started empty).
  const first = new TestNode(cluster, 3, lost.dir, lost.addrs);
  t.after(() => first.kill9());
  await first.start();
  await waitFor('node 3 registered again', 30_000, async () => ((await fetch(`http://${first.addrs.http}/healthz`)).status === 200 ? true : undefined));
  const after = (await cluster.map()).nodes.find((n) => n.id === 3)!;
  assert.ok(after.incarnation && after.incarnation !== member.incarnation, `incarnation ${String(after.incarnation)} after ${String(member.incarnation)}`);
  assert.equal(after.replacing, undefined);
  await waitFor('a first replica of node 3 rebuilt', 60_000, async () => ((await metric(first.addrs.http, 'raftblock_raft_replicas_repaired_total')) >= 1 ? true : undefined));
  await first.kill9();
  t.diagnostic(`replicas rebuilt before node 3 was killed: ${logRecords(first, 'PG replica repaired from its leader').length} of ${pgCount}`);
  const fresh = new TestNode(cluster, 3, lost.dir, lost.addrs);
  cluster.nodes[2] = fresh;
  await fresh.start();
  const groups = (await cluster.clusterStatus()).groups.filter((g) => g.groupId !== 0).map((g) => g.groupId).sort((a, b) => a - b);
  assert.equal(groups.length, pgCount);
  const rebuilt = (): number[] => [...new Set(logRecords(fresh, 'PG replica repaired from its leader').map((r) => r.group as number))].sort((a, b) => a - b);
  await waitFor('every replica of node 3 rebuilt', 60_000, async () => (rebuilt().length === pgCount ? true : undefined));
  assert.deepEqual(rebuilt(), groups);
  assert.ok(logRecords(fresh, "PG replica held until it is rebuilt from its leader: this node's data dir was replaced").length >= pgCount);
  assert.deepEqual(logRecords(fresh, 'registration refused').length, 1, 'the restarted node 3 was refused');
  await waitFor('group 0 takes node 3 back', 60_000, async () => (metaVoters(await cluster.clusterStatus()).includes(3) ? true : undefined));
  assert.equal(await cluster.waitReplicasIdentical(), pgCount);
  await writeAll(cluster, 3, 'after');

  // The rebuilt replicas hold the data: without node 2, nodes 1 and 3 make every quorum.
  await cluster.node(2).kill9();
  await cluster.waitLeaders();
  await readAll(cluster, 1, 'after');
  await readAll(cluster, 3, 'after');
});
