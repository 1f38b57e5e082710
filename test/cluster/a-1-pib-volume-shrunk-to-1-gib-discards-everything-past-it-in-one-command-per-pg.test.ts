/**
 * A shrink discarded the bytes past the new end with one TRIM command per extent, all of them
 * made at once in the node that ran it: a 1 PiB volume shrunk to 1 GiB made 2^28 pieces (the
 * node ran out of memory, and the logs would have taken as many entries). It now sends each PG
 * one discard-from command. Real nodes, real NBD clients: a 1 PiB volume written below 1 GiB,
 * just at it, past 16 TiB, past 256 TiB and in its last block is shrunk to 1 GiB within a
 * minute and grown back; the bytes below 1 GiB are intact, every block past it reads zeros
 * through every gateway, no replica's data files hold anything past 1 GiB, the replicas agree
 * (`pool verify`'s digest), and the range past 1 GiB takes writes again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { VolumeResponse } from '../../src/cluster/admin-client.js';
import { TestCluster } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import { blockOps, expectTagged, requirePythonNbd, writeTagged } from './io.js';

const GiB = 2 ** 30;
const TiB = 2 ** 40;
const PiB = 2 ** 50;
const B = 4096;

/** Every data file of volume `id` under `dir`, at any depth. */
function volumeFiles(dir: string, id: number): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...volumeFiles(path, id));
    else if (e.name === `vol-${id}.dat` || e.name.startsWith(`vol-${id}.s`)) out.push(path);
  }
  return out;
}

test('a 1 PiB volume shrunk to 1 GiB discards everything past 1 GiB in one command per PG, and grown back reads zeros there', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: PiB }] });
  const below = [0, GiB - B].map((offset) => offset / B);
  const past = [GiB, 17 * TiB, 300 * TiB, PiB - B].map((offset) => offset / B);
  await writeTagged(cluster, 1, [...below, ...past], 'before');
  await expectTagged(cluster, 2, [...below, ...past], 'before');
  const volumeId = (await cluster.map()).volumes.find((v) => v.name === 'vol0')!.id;
  for (const n of cluster.nodes) {
    assert.ok(volumeFiles(join(n.dir, 'data'), volumeId).some((f) => /\.s\d+\.dat$/.test(f)), `node ${n.id} holds files past the first span`);
  }

  const server = ['--server', cluster.node(3).addrs.http];
  const started = Date.now();
  let r = await runCli(['volume', 'resize', 'vol0', '--size', String(GiB), '--shrink', '--json', ...server], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `the shrink did not finish within 60 s (${Date.now() - started} ms): ${r.stderr}\n${cluster.logs(8)}`);
  const shrunk = JSON.parse(r.stdout) as VolumeResponse;
  assert.equal(shrunk.volume.sizeBytes, GiB);
  assert.equal((shrunk.volume as { discardToBytes?: number }).discardToBytes, undefined, 'the discard finished before the command answered');
  t.diagnostic(`shrink from 1 PiB to 1 GiB: ${Date.now() - started} ms`);

  r = await runCli(['volume', 'resize', 'vol0', '--size', String(PiB), '--json', ...server]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as VolumeResponse).volume.sizeBytes, PiB);

  for (const via of [1, 2, 3]) {
    await expectTagged(cluster, via, below, 'before');
    // Each block written past the cut, and its neighbours: zeros.
    const around = past.flatMap((b) => (b === PiB / B - 1 ? [b - 1, b] : [b - 1, b, b + 1])).filter((b) => b >= GiB / B);
    const reads = await blockOps(cluster, via, 'read', around, { timeoutS: 20 });
    assert.deepEqual(reads.map((x) => x.value), around.map(() => null), `reads past 1 GiB via node ${via}: ${JSON.stringify(reads)}`);
  }
  // Every replica applied it (the command answered once each PG's leader had): nothing is left
  // past 1 GiB in any data file, and the replicas hold the same bytes.
  assert.equal(await cluster.waitReplicasIdentical(60_000), 4);
  for (const n of cluster.nodes) {
    for (const f of volumeFiles(join(n.dir, 'data'), volumeId)) {
      const limit = f.endsWith(`vol-${volumeId}.dat`) ? GiB : 0;
      assert.ok(statSync(f).size <= limit, `node ${n.id}: ${f} is ${statSync(f).size} bytes, past the cut`);
    }
  }
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped`);

  // The regrown range takes writes again, in the files the discard cut to nothing.
  await writeTagged(cluster, 2, past, 'after');
  await expectTagged(cluster, 3, [...past], 'after');
  await expectTagged(cluster, 3, below, 'before');
  assert.equal(await cluster.waitReplicasIdentical(60_000), 4);
});
