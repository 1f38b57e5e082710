/**
 * During a rolling upgrade some replicas run a build that knows fewer store commands. One that
 * meets a command it does not know stops (and again at every restart that replays it), so a
 * PG leader must not propose one before every replica's node can apply it. Each node
 * tells its peers the level of store commands its build applies (on every frame); here node 3
 * tells level 1 (a build before offsets past 256 TiB and before discard-from commands), as
 * RAFTBLOCK_STORE_OPS_LEVEL makes it. While it does: a write below 256 TiB works, a write past
 * it fails (EIO) and a shrink is refused naming node 3, and every node keeps running. Once node
 * 3 tells this build's level, both work.
 *
 * The proposal's gate judges by the level a node last told. A node stopped at this build's
 * level and started on an earlier one (a rollback) is judged by its previous life's until its
 * first frame arrives, so a write past 256 TiB made while it was down commits on the other two.
 * Told level 1, node 3's stores stop at such a command as that build's would; the send-time gate
 * (store-ops-gate.ts) holds the command back from it, so it keeps running, behind in that PG,
 * and catches up once it runs this build's level again. When the leader's log no longer reaches
 * back to it, the image it would be sent holds data past 256 TiB: that is refused too, and it
 * catches up from the image once upgraded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCli } from '../helpers/cli.js';
import { pgOfExtent } from '../../src/cluster/map.js';
import { blockOps, expectTagged, requirePythonNbd, writeTagged } from './io.js';

const GiB = 2 ** 30;
const TiB = 2 ** 40;
const B = 4096;

test('a node of an earlier store command level holds back commands it cannot apply, and nothing stops', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: 400 * TiB }] });
  const near = [17 * TiB / B];
  const far = [300 * TiB / B];
  // Every node at this build's level: a write past 256 TiB goes through.
  await writeTagged(cluster, 1, far, 'first');
  // Node 3 applies it before it is rolled back: a node rolled back with a command of a higher
  // level in its own log, not yet applied (the write commits on two replicas, and node 3 may
  // hold it uncommitted), stops when it applies it after the restart, as a build of that level
  // would. No gate can cover that: an orderly rollback waits for its replicas to catch up.
  await cluster.waitCaughtUp();

  cluster.node(3).env = { RAFTBLOCK_STORE_OPS_LEVEL: '1' };
  await cluster.node(3).restart();
  // Back in the cluster (its frames, which tell its level, reach the other nodes).
  await waitFor('node 3 serving again', 60_000, async () => {
    const w = await blockOps(cluster, 3, 'write', near, { tag: 'old', timeoutS: 10 });
    return w[0].result === 'ok' ? true : undefined;
  });
  // Until a node has a frame of node 3's new life, it judges by the old one's level.
  await waitFor('nodes 1 and 2 know node 3 tells level 1', 30_000, async () => {
    for (const id of [1, 2]) if ((await cluster.metric(id, 'raftblock_peer_store_ops_level{peer="3"}')) !== 1) return undefined;
    return true;
  });
  const refused = await blockOps(cluster, 2, 'write', far, { tag: 'old', timeoutS: 20 });
  assert.equal(refused[0].result, 'error', `a write past 256 TiB with node 3 at level 1: ${JSON.stringify(refused)}`);
  await expectTagged(cluster, 1, far, 'first');
  const server = ['--server', cluster.node(1).addrs.http];
  let r = await runCli(['volume', 'resize', 'vol0', '--size', String(GiB), '--shrink', ...server], { timeoutMs: 60_000 });
  assert.notEqual(r.code, 0, 'the shrink was not refused');
  assert.match(r.stderr, /node 3 runs a build that applies store commands up to level 1.*upgrade \(or start\) node 3/, r.stderr);
  assert.equal((await cluster.map()).volumes.find((v) => v.name === 'vol0')?.sizeBytes, 400 * TiB, 'a refused shrink leaves the volume as it was');
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);

  cluster.node(3).env = {};
  await cluster.node(3).restart();
  await waitFor('a write past 256 TiB once node 3 runs this build\'s level', 60_000, async () => {
    const w = await blockOps(cluster, 2, 'write', far, { tag: 'new', timeoutS: 10 });
    return w[0].result === 'ok' ? true : undefined;
  });
  await expectTagged(cluster, 3, [...far], 'new');
  await expectTagged(cluster, 3, near, 'old');

  // A rollback while a write past 256 TiB commits: node 3 stops at this build's level, the write
  // commits on nodes 1 and 2 (their last word from node 3 says level 3), node 3 starts told level 1.
  await cluster.node(3).stop();
  await waitFor('a write past 256 TiB with node 3 down', 60_000, async () => {
    const w = await blockOps(cluster, 1, 'write', far, { tag: 'during', timeoutS: 10 });
    return w[0].result === 'ok' ? true : undefined;
  });
  const heldBack = async (): Promise<number> => (await cluster.metric(1, 'raftblock_store_ops_held_back_entries_total')) + (await cluster.metric(2, 'raftblock_store_ops_held_back_entries_total'));
  const heldBefore = await heldBack();
  cluster.node(3).env = { RAFTBLOCK_STORE_OPS_LEVEL: '1' };
  await cluster.node(3).start();
  await waitFor('the far write held back from node 3', 60_000, async () => {
    assert.equal(cluster.node(3).running, true, `node 3 stopped: ${cluster.node(3).logTail()}`);
    return (await heldBack()) > heldBefore ? true : undefined;
  });
  await writeTagged(cluster, 3, near, 'rolled-back');
  // Several heartbeat rounds, each of which would carry the write to node 3 without the gate.
  await sleep(2_000);
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);
  await expectTagged(cluster, 2, far, 'during');
  // 12 MiB more into the same PG, below 256 TiB: the leader checkpoints and compacts its log
  // past the held-back write, so node 3 can only catch up from an image, and the image holds
  // data past 256 TiB, which its build cannot hold (its store stops at one, as that build's
  // would): the leader refuses it (the puller retries), and node 3 stays behind, running.
  const map = await cluster.map();
  const vol = map.volumes.find((v) => v.name === 'vol0')!;
  const pgCount = map.pools.find((p) => p.name === vol.pool)!.pgCount;
  const farPg = pgOfExtent(vol.id, Math.floor((300 * TiB) / vol.extentBytes), pgCount);
  const samePg: number[] = [];
  for (let e = 0; samePg.length < 3; e++) if (pgOfExtent(vol.id, e, pgCount) === farPg) samePg.push(e);
  const MiB = 2 ** 20;
  const fill = samePg.flatMap((e) => Array.from({ length: vol.extentBytes / MiB }, (_, i) => (e * vol.extentBytes) / MiB + i));
  const w = await blockOps(cluster, 1, 'write', fill, { tag: 'fill', timeoutS: 30, blockBytes: MiB });
  assert.ok(w.every((x) => x.result === 'ok'), JSON.stringify(w));
  const imagesHeldBack = async (): Promise<number> => (await cluster.metric(1, 'raftblock_store_ops_held_back_images_total')) + (await cluster.metric(2, 'raftblock_store_ops_held_back_images_total'));
  await waitFor('an image refused to node 3', 60_000, async () => {
    assert.equal(cluster.node(3).running, true, `node 3 stopped: ${cluster.node(3).logTail()}`);
    return (await imagesHeldBack()) > 0 ? true : undefined;
  });
  await sleep(1_000);
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);
  cluster.node(3).env = {};
  await cluster.node(3).restart();
  await waitFor('node 3 caught up past the held-back write', 60_000, async () => {
    const r = await blockOps(cluster, 3, 'read', far, { timeoutS: 10 });
    return r[0].value === 'during' ? true : undefined;
  });
  await expectTagged(cluster, 3, near, 'rolled-back');
  r = await runCli(['volume', 'resize', 'vol0', '--size', String(GiB), '--shrink', '--json', ...server], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await cluster.waitReplicasIdentical(60_000), 4);
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);
});
