/**
 * `raftblock node remove` on real processes. First a 4-node cluster, pool of 3 replicas,
 * group 0 on three of the nodes:
 *  - removing a node that is `in` is refused (NODE_STILL_IN), nothing changes;
 *  - a group-0 voter is marked out: until its PGs' configurations have moved, removing it is
 *    refused (NODE_HOLDS_REPLICAS, naming them); its PGs move away, and group 0 replaces it
 *    (the fourth node joins group 0, the out voter leaves); then `node remove` succeeds, the
 *    map and `raftblock status` no longer list it, group 0 has three voters without it, and
 *    repeating the command answers NOT_FOUND;
 *  - the removed node's process learns it, serves nothing (healthz says so) and the cluster
 *    goes on: data written before reads back, and new writes work, through the remaining nodes,
 *    which forget the store command level it told them;
 *  - its old data dir never starts again (NODE_REMOVED), and a fresh node with a new data dir
 *    joins with the removed id and is accepted (the "lost its data dir" case).
 * Then a 3-node cluster, pool of 2 replicas, where no node can replace a group-0 voter: the
 * group-0 leader, drained, is removed through its own admin API: it hands group 0 over, the
 * new leader takes it out of group 0 by a conf change, then out of the map.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { peerLevelsFileName } from '../../src/cluster/peer-levels-file.js';
import { logRecords, metaVoters, TestCluster, TestNode, waitFor } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import type { ClusterStatus, RemoveNodeResponse } from '../../src/cluster/admin-client.js';
import { expectTagged, requirePythonNbd, writeTagged } from './io.js';

const blocks = [0, 3, 9, 40, 77, 130];

const writeAll = (cluster: TestCluster, via: number, tag: string): Promise<void> => writeTagged(cluster, via, blocks, tag);
const readAll = (cluster: TestCluster, via: number, tag: string): Promise<void> => expectTagged(cluster, via, blocks, tag);


test('node remove: refused while in; a drained group-0 voter is replaced and removed; its id joins again from a new data dir', { timeout: 150_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const started = Date.now();
  const cluster = await TestCluster.start(t, { nodes: 4, pgCount: 8, replicas: 3 });
  const before = await cluster.waitCaughtUp();
  await writeAll(cluster, 1, 'before');
  const http = cluster.node(1).addrs.http;

  // Group 0 runs on three nodes: remove one of them that is neither node 1 (the seed of the
  // joins below) nor group 0's leader.
  const voters = metaVoters(before);
  assert.equal(voters.length, 3, `group 0 voters ${JSON.stringify(voters)}`);
  const metaLeader = before.groups.find((g) => g.groupId === 0)!.leader;
  const victim = voters.filter((v) => v !== 1 && v !== metaLeader).pop()!;
  assert.ok(victim !== undefined, `no voter to remove among ${JSON.stringify(voters)} (leader ${metaLeader})`);
  const spare = [1, 2, 3, 4].find((id) => !voters.includes(id))!;

  // An `in` node is not removed.
  const epochBefore = (await cluster.map()).epoch;
  const refused = await runCli(['node', 'remove', String(victim), '--server', http]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /mark it out first.*\[NODE_STILL_IN\]/);
  assert.equal((await cluster.map()).epoch, epochBefore, 'a refused removal changed the map');

  // Marked out: the map moves its PGs at once, their Raft configurations follow (in under a
  // second for PGs this small); until then it is refused, naming the PGs. Asked in-process
  // right after the change: a CLI process can take longer to start than such a move.
  await cluster.admin(1, 'setNodeState', victim, 'out');
  await assert.rejects(
    cluster.admin(1, 'removeNode', victim),
    (err: Error & { code?: string }) => err.code === 'NODE_HOLDS_REPLICAS' && /node \d+ still holds replicas of PGs default\/\d+.*in their Raft configuration/.test(err.message),
  );

  // Its PGs move away, and group 0 takes the spare node in its place.
  await cluster.drainNode(victim, 1);
  const replaced = await waitFor('group 0 replaced the out voter', 30_000, async () => {
    const s = await cluster.clusterStatus();
    const v = metaVoters(s);
    return v.length === 3 && !v.includes(victim) && v.includes(spare) ? v : undefined;
  });
  t.diagnostic(`group 0 voters ${JSON.stringify(voters)} → ${JSON.stringify(replaced)} after node ${victim} was marked out`);

  const removed = await runCli(['node', 'remove', String(victim), '--server', http, '--json']);
  assert.equal(removed.code, 0, removed.stderr);
  const answer = JSON.parse(removed.stdout) as RemoveNodeResponse;
  assert.equal(answer.nodeId, victim);
  const map = await cluster.map();
  assert.ok(map.epoch >= answer.epoch);
  assert.ok(!map.nodes.some((n) => n.id === victim), `node ${victim} is still in the map`);
  const status = await runCli(['status', '--json', '--server', http]);
  assert.equal(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout) as ClusterStatus;
  assert.deepEqual(s.nodes.map((n) => n.id).sort(), [1, 2, 3, 4].filter((id) => id !== victim));
  assert.ok(s.groups.every((g) => !g.replicas.includes(victim)), 'a group still lists the removed node');
  assert.equal(metaVoters(s).length, 3);

  // Again: NOT_FOUND.
  const again = await runCli(['node', 'remove', String(victim), '--server', cluster.node(spare).addrs.http]);
  assert.equal(again.code, 2, again.stderr);
  assert.match(again.stderr, /\[NOT_FOUND\]/);

  // The removed process learns it, stays up and serves nothing.
  const old = cluster.node(victim);
  await waitFor('the removed node knows it', 15_000, async () => (logRecords(old, 'this node was removed from the cluster map: it serves nothing and takes part in nothing; stop it (to rejoin as this id, start it with an empty data dir)').length > 0 ? true : undefined));
  assert.ok(old.running, 'the removed node exited');
  const health = await fetch(`http://${old.addrs.http}/healthz`);
  assert.equal(health.status, 503);
  assert.match(await health.text(), /removed from the cluster map/);

  // The cluster goes on without it: old data, new writes, through the remaining nodes.
  const remaining = [1, 2, 3, 4].filter((id) => id !== victim);
  await cluster.waitLeaders();
  await readAll(cluster, remaining[1], 'before');
  await writeAll(cluster, remaining[2], 'after');
  for (const id of remaining) await readAll(cluster, id, 'after');

  // The others forget the store command level the removed node told them, in their files too.
  for (const id of remaining) {
    await waitFor(`node ${id} forgot node ${victim}'s level`, 15_000, async () => {
      const saved = JSON.parse(await readFile(join(cluster.node(id).dir, 'data', peerLevelsFileName), 'utf8')) as { levels: Record<string, number> };
      return saved.levels[String(victim)] === undefined && Object.keys(saved.levels).length === 2 ? true : undefined;
    });
  }

  // Its old data dir does not come back.
  await old.stop();
  await assert.rejects(old.start(), /exited/);
  assert.match(old.logTail(5), /NODE_REMOVED/);

  // A fresh node (new data dir) takes the id, from the same addresses.
  const fresh = new TestNode(cluster, victim, join(cluster.dir, `node-${victim}-fresh`), old.addrs);
  cluster.nodes[victim - 1] = fresh;
  await fresh.start();
  await waitFor(`the fresh node ${victim} registered`, 30_000, async () => {
    const m = await cluster.map();
    const n = m.nodes.find((x) => x.id === victim);
    if (n?.state !== 'in') return undefined;
    return (await fetch(`http://${fresh.addrs.http}/healthz`)).status === 200 ? true : undefined;
  });
  assert.deepEqual(logRecords(fresh, 'registration refused'), []);
  await readAll(cluster, victim, 'after');
  assert.equal(metaVoters(await cluster.clusterStatus()).length, 3);
  t.diagnostic(`done in ${Date.now() - started} ms`);
});

test('node remove of the group-0 leader, asked through itself, with no replacement: it hands over, leaves group 0 by a conf change, then the map', { timeout: 120_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  // Three nodes, two replicas: a node can drain, and no fourth node can replace it in group 0.
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, replicas: 2 });
  const leader = await waitFor('a group 0 leader', 30_000, async () => (await cluster.leaderOf(0)) || undefined);
  const others = [1, 2, 3].filter((id) => id !== leader);
  await writeAll(cluster, others[0], 'before');

  await cluster.drainNode(leader, others[0]);
  // No replacement: the out leader stays a voter until it is removed.
  assert.deepEqual(metaVoters(await cluster.clusterStatus()), [1, 2, 3]);

  // Asked through the node being removed itself: it hands group 0 over, the new leader removes
  // it, and the answer comes back before it stops talking.
  const removed = await runCli(['node', 'remove', String(leader), '--server', cluster.node(leader).addrs.http, '--json']);
  assert.equal(removed.code, 0, removed.stderr);
  const answer = JSON.parse(removed.stdout) as RemoveNodeResponse;
  assert.deepEqual({ nodeId: answer.nodeId, metaVoterRemoved: answer.metaVoterRemoved }, { nodeId: leader, metaVoterRemoved: true });
  const s = await cluster.clusterStatus(others[0]);
  // Group 0 is left on the two others, and soon on one of them: with no third node to join,
  // the plan drops a group of two voters to one (meta-group-of-two-voters-drops-to-one).
  const voters = metaVoters(s);
  assert.ok(voters.length >= 1 && voters.every((v) => others.includes(v)), `group 0 voters ${voters.join(',')}, expected within ${others.join(',')}`);
  assert.deepEqual(s.nodes.map((n) => n.id), others);
  assert.ok(others.includes(s.groups.find((g) => g.groupId === 0)!.leader), 'group 0 has no leader among the remaining nodes');

  t.diagnostic(`node ${leader} led group 0 when removed; handed over: ${logRecords(cluster.node(leader), 'handing the metadata group leadership over before leaving it').length > 0}`);

  await cluster.waitLeaders();
  await readAll(cluster, others[1], 'before');
  await writeAll(cluster, others[0], 'after');
  await readAll(cluster, others[1], 'after');
  const health = await fetch(`http://${cluster.node(leader).addrs.http}/healthz`);
  assert.equal(health.status, 503, 'the removed node still says it is healthy');
});
