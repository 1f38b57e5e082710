/**
 * TRIM and WRITE_ZEROES over a whole extent larger than one store command may cover (extents go
 * up to 1 GiB, a range command up to 64 MiB): the gateway splits them into commands the store
 * accepts, every node stays up, and the range reads back as zeros around data that stays.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TestCluster } from '../helpers/cluster.js';
import { requirePythonNbd, systemPython } from './io.js';

const MiB = 1024 * 1024;

test('trim and write-zeroes of a 256 MiB extent are split for the store; every node stays up', { timeout: 120_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 2, volumes: [{ name: 'big', sizeBytes: 512 * MiB, extentBytes: 256 * MiB }] });
  const script = [
    'import nbd, sys',
    'h = nbd.NBD()',
    `h.connect_uri(${JSON.stringify(cluster.nbdUri(2, 'big'))})`,
    `M = ${MiB}`,
    'h.pwrite(b"a" * 65536, 0)',
    'h.pwrite(b"b" * 65536, 200 * M)',
    'h.pwrite(b"c" * 65536, 300 * M)',
    'h.trim(256 * M, 0)',
    'h.zero(256 * M, 256 * M)',
    'assert h.pread(65536, 0) == bytes(65536)',
    'assert h.pread(65536, 200 * M) == bytes(65536)',
    'assert h.pread(65536, 300 * M) == bytes(65536)',
    'h.pwrite(b"d" * 65536, 100 * M)',
    'assert h.pread(65536, 100 * M) == b"d" * 65536',
    'h.shutdown()',
  ].join('\n');
  const r = spawnSync(systemPython, ['-c', script], { encoding: 'utf8', timeout: 90_000 });
  assert.equal(r.status, 0, `client: ${r.stderr}\n${cluster.logs(6)}`);
  for (const n of cluster.nodes) assert.ok(n.running, `node ${n.id} stopped:\n${n.logTail(10)}`);
  assert.equal(await cluster.waitReplicasIdentical(30_000), 2);
});
