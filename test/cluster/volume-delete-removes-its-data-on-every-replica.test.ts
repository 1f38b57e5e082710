/**
 * `volume delete` removes the volume's data files (`vol-<id>.dat`) from every PG replica on
 * every node within seconds — including a node that was killed (-9) while the volume was being
 * written, whose WAL still holds writes to it: at restart it replays them without recreating
 * anything and drops what it had. The other volume's data is untouched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { VolumeResponse } from '../../src/cluster/admin-client.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { requirePythonNbd, systemPython } from './io.js';

const cli = (...args: string[]): Promise<CliResult> => runCli(args);

/** Writes `count` 64 KiB blocks of `byte` spread over the volume (every extent). */
function writeBlocks(uri: string, byte: number, count: number, stride: number): void {
  const script = [
    'import nbd, sys',
    'h = nbd.NBD()',
    `h.connect_uri(${JSON.stringify(uri)})`,
    `for i in range(${count}):`,
    `    h.pwrite(bytes([${byte}]) * 65536, i * ${stride})`,
    'h.shutdown()',
  ].join('\n');
  const r = spawnSync(systemPython, ['-c', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `writes through ${uri} failed: ${r.stderr}`);
}

function readBlock(uri: string, offset: number): Buffer {
  const script = ['import nbd, sys', 'h = nbd.NBD()', `h.connect_uri(${JSON.stringify(uri)})`, `sys.stdout.buffer.write(h.pread(65536, ${offset}))`].join('\n');
  const r = spawnSync(systemPython, ['-c', script], { timeout: 30_000 });
  assert.equal(r.status, 0, `read through ${uri} failed: ${r.stderr}`);
  return r.stdout;
}

test('volume delete removes its data files on every replica, a killed node at restart too', { timeout: 120_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const extentBytes = 1024 * 1024;
  const cluster = await TestCluster.start(t, {
    nodes: 3,
    pgCount: 4,
    volumes: [
      { name: 'keep', sizeBytes: 16 * extentBytes, extentBytes },
      { name: 'gone', sizeBytes: 16 * extentBytes, extentBytes },
    ],
  });
  const map = await cluster.map();
  const gone = map.volumes.find((v) => v.name === 'gone')!;
  const keep = map.volumes.find((v) => v.name === 'keep')!;
  const files = (volumeId: number, nodeIds = cluster.nodes.map((n) => n.id)): string[] =>
    nodeIds.flatMap((id) => {
      const pgs = join(cluster.node(id).dir, 'data', 'pgs');
      if (!existsSync(pgs)) return [];
      return readdirSync(pgs).filter((g) => existsSync(join(pgs, g, `vol-${volumeId}.dat`))).map((g) => `node ${id} group ${g}`);
    });

  writeBlocks(cluster.nbdUri(1, 'keep'), 0x4b, 16, extentBytes);
  writeBlocks(cluster.nbdUri(2, 'gone'), 0x47, 16, extentBytes);
  // Every replica of every PG has applied them: 4 PGs x 3 replicas hold a file of each volume.
  await cluster.waitCaughtUp();
  assert.equal(files(gone.id).length, 12, files(gone.id).join(', '));
  assert.equal(files(keep.id).length, 12);

  // Node 3 dies with the writes to `gone` in its WAL (kill -9: no checkpoint at stop).
  writeBlocks(cluster.nbdUri(1, 'gone'), 0x48, 16, extentBytes);
  await cluster.node(3).kill9();

  const r = await cli('volume', 'delete', 'gone', '--json', '--server', cluster.node(2).addrs.http);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as VolumeResponse).volume.id, gone.id);
  await waitFor('the running nodes drop the volume', 10_000, async () => (files(gone.id, [1, 2]).length === 0 ? true : undefined)).catch((err) => {
    throw new Error(`${(err as Error).message}: ${files(gone.id, [1, 2]).join(', ')}`);
  });
  assert.equal(files(gone.id, [3]).length, 4, 'the killed node could not have dropped anything');

  await cluster.node(3).start();
  await waitFor('the restarted node drops the volume', 15_000, async () => (files(gone.id).length === 0 ? true : undefined)).catch((err) => {
    throw new Error(`${(err as Error).message}: ${files(gone.id).join(', ')}`);
  });
  await cluster.waitCaughtUp();
  assert.deepEqual(files(gone.id), [], 'replaying the WAL recreated a file');
  assert.equal(files(keep.id).length, 12, 'the other volume lost files');
  for (const offset of [0, 7 * extentBytes, 15 * extentBytes]) {
    assert.ok(readBlock(cluster.nbdUri(3, 'keep'), offset).equals(Buffer.alloc(65536, 0x4b)), `keep at ${offset}`);
  }
  // A new volume takes a new id: nothing of the old one shows through.
  const again = await cli('volume', 'create', 'gone', '--size', '16M', '--extent-size', '1M', '--json', '--server', cluster.node(1).addrs.http);
  assert.equal(again.code, 0, again.stderr);
  assert.ok((JSON.parse(again.stdout) as VolumeResponse).volume.id > gone.id);
  await waitFor('the new volume served by node 3', 10_000, async () => ((await cluster.admin<{ volumes: { name: string }[] }>(3, 'listVolumes')).volumes.some((v) => v.name === 'gone') ? true : undefined));
  assert.ok(readBlock(cluster.nbdUri(3, 'gone'), 0).equals(Buffer.alloc(65536)), 'a new volume shows the deleted one\'s data');
});
