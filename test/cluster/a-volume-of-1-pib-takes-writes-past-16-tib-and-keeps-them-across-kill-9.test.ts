/**
 * A 1 PiB volume (the largest) written past 16 TiB, past 256 TiB and in its last block. Each PG
 * replica kept a volume in one file addressed by volume offset: ext4 refuses bytes at or past
 * 16 TiB − 4 KiB, and the write-behind's EFBIG stopped every replica of the PG (and again at every
 * restart, replaying the write), taking the volume down; past 256 TiB a command could not name
 * the offset at all. Real nodes, real NBD clients: the writes are acknowledged, read back
 * through the other gateways, every node stays up, after all are killed (-9) and restarted
 * the bytes are there, and the replicas hold the same bytes (`pool verify`'s digest).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../helpers/cluster.js';
import { expectTagged, requirePythonNbd, writeTagged } from './io.js';

const TiB = 2 ** 40;
const B = 4096;
const volumeBytes = 2 ** 50;

test('a 1 PiB volume takes writes past 16 TiB and 256 TiB and keeps them across kill -9 of every node', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: volumeBytes }] });
  const blocks = [0, 17 * TiB, 300 * TiB, volumeBytes - B].map((offset) => offset / B);
  await writeTagged(cluster, 1, blocks, 'far-1');
  for (const via of [2, 3]) await expectTagged(cluster, via, blocks, 'far-1');
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped`);

  await cluster.kill9All();
  await cluster.startAll();
  await cluster.waitLeaders(60_000);
  for (const n of cluster.nodes) await expectTagged(cluster, n.id, blocks, 'far-1');
  // And written again after the restart: the files past the first are opened, not made anew.
  await writeTagged(cluster, 2, blocks, 'far-2');
  await expectTagged(cluster, 3, blocks, 'far-2');
  // And the replicas agree byte for byte (a digest reads what each holds, not the 1 PiB).
  assert.equal(await cluster.waitReplicasIdentical(60_000), 4);
});
