/**
 * Shrinking a volume discards the bytes past the new end on every replica, through the PG logs
 * (one discard-from command per PG): grown back, the volume reads zeros there, the bytes below
 * the cut are intact, and every replica of every PG holds the same bytes. The map forgets the
 * pending discard once it is done (a volume cannot grow while one is pending).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { VolumeResponse } from '../../src/cluster/admin-client.js';
import { TestCluster } from '../helpers/cluster.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { requirePythonNbd, systemPython } from './io.js';

const MiB = 1024 * 1024;
const KiB = 1024;

const cli = (...args: string[]): Promise<CliResult> => runCli(args);

function python(lines: string[]): void {
  const r = spawnSync(systemPython, ['-c', lines.join('\n')], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `client: ${r.stderr}`);
}

test('a shrunk volume grown back reads zeros past the cut and keeps the bytes below it', { timeout: 60_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const sizeBytes = 24 * MiB;
  // The cut falls inside an extent (1 MiB extents) and inside the run of data written at 10.5 MiB.
  const cut = 10 * MiB + 512 * KiB + 4 * KiB;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'shrinking', sizeBytes, extentBytes: MiB }] });
  const uri = (id: number): string => cluster.nbdUri(id, 'shrinking');
  // A pattern of 64 KiB runs every 512 KiB over the whole volume.
  python([
    'import nbd',
    'h = nbd.NBD()',
    `h.connect_uri(${JSON.stringify(uri(2))})`,
    `for i in range(${sizeBytes / (512 * KiB)}):`,
    `    h.pwrite(bytes([i % 251 + 1]) * 65536, i * ${512 * KiB})`,
    'h.flush()',
    'h.shutdown()',
  ]);

  const server = ['--server', cluster.node(3).addrs.http];
  let r = await cli('volume', 'resize', 'shrinking', '--size', String(cut), '--shrink', '--json', ...server);
  assert.equal(r.code, 0, `${r.stderr}\n${cluster.logs(8)}`);
  const shrunk = JSON.parse(r.stdout) as VolumeResponse;
  assert.equal(shrunk.volume.sizeBytes, cut);
  assert.equal((shrunk.volume as { discardToBytes?: number }).discardToBytes, undefined, 'the discard finished before the command answered');

  r = await cli('volume', 'resize', 'shrinking', '--size', String(sizeBytes), '--json', ...server);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as VolumeResponse).volume.sizeBytes, sizeBytes);

  // Through every node's gateway (a new connection sees the new size).
  for (const id of [1, 2, 3]) {
    python([
      'import nbd',
      'h = nbd.NBD()',
      `h.connect_uri(${JSON.stringify(uri(id))})`,
      `assert h.get_size() == ${sizeBytes}, h.get_size()`,
      `cut = ${cut}`,
      `for i in range(${sizeBytes / (512 * KiB)}):`,
      `    at = i * ${512 * KiB}`,
      '    got = h.pread(65536, at)',
      '    want = bytes([i % 251 + 1]) * 65536',
      '    if at >= cut: want = bytes(65536)',
      '    elif at + 65536 > cut: want = want[:cut - at] + bytes(at + 65536 - cut)',
      '    assert got == want, f"run at {at}: {got[:8]!r}... differs"',
      'h.shutdown()',
    ]);
  }
  const map = await cluster.map();
  assert.equal(map.volumes.find((v) => v.name === 'shrinking')?.discardToBytes, undefined);
  assert.equal(await cluster.waitReplicasIdentical(20_000), 4);
});
