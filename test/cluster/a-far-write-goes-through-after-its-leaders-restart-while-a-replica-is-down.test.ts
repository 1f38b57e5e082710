/**
 * A PG leader proposes a write past 256 TiB only once every replica's node told a store
 * command level that applies it. Each node keeps the levels its peers told in its data dir
 * (peer-levels-file.ts), so a leader restarted while another replica's node is down still
 * knows that node's build: one node down and a restart of the others no longer cost a volume
 * its writes past 256 TiB (a 3-replica PG keeps serving with two). Before, the restarted
 * leader refused them (UPGRADE_REQUIRED, "node 3 has not been heard from") until node 3
 * returned.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { blockOps, expectTagged, requirePythonNbd, writeTagged } from './io.js';
import { peerLevelsFileName } from '../../src/cluster/peer-levels-file.js';
import { storeOpsLevel } from '../../src/store/ops.js';

const TiB = 2 ** 40;
const B = 4096;

test('a write past 256 TiB goes through after every other node restarts while one replica is down', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: 400 * TiB }] });
  const far = [300 * TiB / B, 300 * TiB / B + 1, 333 * TiB / B];
  await writeTagged(cluster, 1, far, 'first');
  for (const id of [1, 2]) {
    const saved = JSON.parse(await readFile(join(cluster.node(id).dir, 'data', peerLevelsFileName), 'utf8')) as { levels: Record<string, number> };
    assert.equal(saved.levels['3'], storeOpsLevel, `node ${id} keeps node 3's level: ${JSON.stringify(saved)}`);
  }

  await cluster.node(3).stop();
  await cluster.node(1).restart();
  await cluster.node(2).restart();
  // Nodes 1 and 2 have heard nothing of node 3 since they started; they remember what it told.
  for (const id of [1, 2]) assert.equal(await cluster.metric(id, 'raftblock_peer_store_ops_level{peer="3"}'), storeOpsLevel, `node ${id}'s gauge for node 3`);
  await waitFor('writes past 256 TiB with node 3 down, through the restarted nodes', 60_000, async () => {
    const w = await blockOps(cluster, 1, 'write', far, { tag: 'down', timeoutS: 10 });
    return w.every((x) => x.result === 'ok') ? true : undefined;
  });
  await expectTagged(cluster, 2, far, 'down');

  await cluster.node(3).start();
  await waitFor('node 3 caught up', 60_000, async () => {
    const r = await blockOps(cluster, 3, 'read', far, { tag: 'down', timeoutS: 10 });
    return r.every((x) => x.result === 'ok' && x.value === 'down') ? true : undefined;
  });
  await cluster.waitReplicasIdentical();
});
