/**
 * During a rolling upgrade some replicas run a build that knows fewer store commands. One that
 * meets a command it does not know stops (and again at every restart that replays it), so a
 * PG leader must not propose one before every replica's node can apply it. Each node registers
 * the level of store commands its build applies (NodeInfo.storeOps); here node 3 registers
 * level 1 (a build before offsets past 256 TiB and before discard-from commands), as
 * RAFTBLOCK_STORE_OPS_LEVEL makes it. While it does: a write below 256 TiB works, a write past
 * it fails (EIO) and a shrink is refused naming node 3, and every node keeps running. Once node
 * 3 registers this build's level, both work.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import { blockOps, expectTagged, requirePythonNbd, writeTagged } from './io.js';
import { storeOpsLevel } from '../../src/store/ops.js';

const GiB = 2 ** 30;
const TiB = 2 ** 40;
const B = 4096;

test('a node of an earlier store command level holds back commands it cannot apply, and nothing stops', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: 400 * TiB }] });
  const levelOf3 = async (): Promise<number | undefined> => (await cluster.map()).nodes.find((n) => n.id === 3)?.storeOps;
  assert.equal(await levelOf3(), storeOpsLevel, 'a node registers its build\'s level');

  cluster.node(3).env = { RAFTBLOCK_STORE_OPS_LEVEL: '1' };
  await cluster.node(3).restart();
  await waitFor('node 3 registered level 1', 30_000, async () => ((await levelOf3()) === 1 ? true : undefined));

  const near = [17 * TiB / B];
  const far = [300 * TiB / B];
  await writeTagged(cluster, 1, near, 'old');
  const refused = await blockOps(cluster, 2, 'write', far, { tag: 'old', timeoutS: 20 });
  assert.equal(refused[0].result, 'error', `a write past 256 TiB with node 3 at level 1: ${JSON.stringify(refused)}`);
  const server = ['--server', cluster.node(1).addrs.http];
  let r = await runCli(['volume', 'resize', 'vol0', '--size', String(GiB), '--shrink', ...server], { timeoutMs: 60_000 });
  assert.notEqual(r.code, 0, 'the shrink was not refused');
  assert.match(r.stderr, /upgrade node 3/, r.stderr);
  assert.equal((await cluster.map()).volumes.find((v) => v.name === 'vol0')?.sizeBytes, 400 * TiB, 'a refused shrink leaves the volume as it was');
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);

  cluster.node(3).env = {};
  await cluster.node(3).restart();
  await waitFor('node 3 registered this build\'s level', 30_000, async () => ((await levelOf3()) === storeOpsLevel ? true : undefined));
  await writeTagged(cluster, 2, far, 'new');
  await expectTagged(cluster, 3, [...far], 'new');
  await expectTagged(cluster, 3, near, 'old');
  r = await runCli(['volume', 'resize', 'vol0', '--size', String(GiB), '--shrink', '--json', ...server], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await cluster.waitReplicasIdentical(60_000), 4);
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);
});
