/**
 * During a rolling upgrade some replicas run a build that knows fewer store commands. One that
 * meets a command it does not know stops (and again at every restart that replays it), so a
 * PG leader must not propose one before every replica's node can apply it. Each node
 * tells its peers the level of store commands its build applies (on every frame); here node 3
 * tells level 1 (a build before offsets past 256 TiB and before discard-from commands), as
 * RAFTBLOCK_STORE_OPS_LEVEL makes it. While it does: a write below 256 TiB works, a write past
 * it fails (EIO) and a shrink is refused naming node 3, and every node keeps running. Once node
 * 3 tells this build's level, both work.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
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

  cluster.node(3).env = { RAFTBLOCK_STORE_OPS_LEVEL: '1' };
  await cluster.node(3).restart();
  // Back in the cluster (its frames, which tell its level, reach the other nodes).
  await waitFor('node 3 serving again', 60_000, async () => {
    const w = await blockOps(cluster, 3, 'write', near, { tag: 'old', timeoutS: 10 });
    return w[0].result === 'ok' ? true : undefined;
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
  r = await runCli(['volume', 'resize', 'vol0', '--size', String(GiB), '--shrink', '--json', ...server], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await cluster.waitReplicasIdentical(60_000), 4);
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);
});
