/**
 * A cluster moves to a new key without stopping: three rolling restarts, one node at a time
 * (accept the new key; prove it; drop the old one), with the peers on TLS keyed by whichever
 * key each connection settles on. Writes go through every gateway at every step, no node ever
 * refuses a peer, and at the end a node that still holds only the old key is shut out, while
 * the same node with the new key is back in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterKey } from '../../src/cluster/peer-auth.js';
import { logRecords, TestCluster, waitFor, type TestNode } from '../helpers/cluster.js';
import { expectTagged, requirePythonNbd, writeTagged } from './io.js';

const MiB = 1024 * 1024;
const blocks = [0, 300, 700, 1100, 1500, 1900, 2300, 2700];

/**
 * Connections node `n` closed because the far end proved no key it holds. (Not the counter:
 * it also counts exchanges cut short by a peer's restart, which a rolling restart makes.)
 */
function keyRefusals(n: TestNode): string[] {
  return logRecords(n, 'peer connection closed: the cluster key was not proved')
    .map((r) => String(r.err))
    .filter((e) => /does not hold this cluster's key/.test(e));
}

test('cluster key rotation by rolling restarts: I/O throughout, no refusal, and the old key is shut out at the end', { timeout: 300_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 8, peerTls: true, volumes: [{ name: 'vol0', sizeBytes: 16 * MiB, extentBytes: MiB }] });
  const oldFile = cluster.clusterKeyFile!;
  const newFile = join(cluster.dir, 'cluster-new.key');
  writeFileSync(newFile, ClusterKey.generateText(), { mode: 0o600 });

  const steps: [string, string[]][] = [
    ['accept the new key', [oldFile, newFile]],
    ['prove the new key', [newFile, oldFile]],
    ['drop the old key', [newFile]],
  ];
  for (const [step, files] of steps) {
    for (const n of cluster.nodes) {
      n.clusterKeyFiles = files;
      await n.restart();
      await cluster.waitCaughtUp(60_000);
      const tag = `${step.replace(/ /g, '-')}-${n.id}`;
      await writeTagged(cluster, (n.id % 3) + 1, blocks, tag);
      await expectTagged(cluster, n.id, blocks, tag);
    }
    for (const n of cluster.nodes) assert.deepEqual(keyRefusals(n), [], `node ${n.id} refused a peer's key during "${step}"`);
  }

  // A node that missed the rotation: its peers refuse it, and it cannot serve.
  const lagging = cluster.node(3);
  lagging.clusterKeyFiles = [oldFile];
  await lagging.restart();
  await waitFor('the old key refused', 30_000, async () => (keyRefusals(cluster.node(1)).length + keyRefusals(cluster.node(2)).length > 0 && keyRefusals(lagging).length > 0 ? true : undefined));
  await writeTagged(cluster, 1, blocks, 'without-node-3');
  lagging.clusterKeyFiles = [newFile];
  await lagging.restart();
  await cluster.waitCaughtUp(60_000);
  await expectTagged(cluster, 3, blocks, 'without-node-3');
  assert.equal(await cluster.waitReplicasIdentical(60_000), 8);
});
