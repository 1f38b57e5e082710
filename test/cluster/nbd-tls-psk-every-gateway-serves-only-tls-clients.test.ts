/**
 * A cluster that is encrypted end to end: every node requires TLS of its NBD clients
 * (`--nbd-tls-psk`) and speaks TLS to its peers (`--peer-tls`). An image copied in through one
 * gateway with nbdcopy (libnbd, TLS-PSK) reads back unchanged through another, so the pieces
 * forwarded between nodes made the trip too; a client without TLS is refused by every gateway.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../helpers/cluster.js';
import { describeRun, runTool, runToolOk } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

test('every gateway of a TLS cluster serves TLS-PSK clients, forwards over TLS, and refuses plain clients', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdcopy', 'nbdinfo', 'cmp')) return;
  const dir = tempDir(t);
  const keys = join(dir, 'nbd.psk');
  writeFileSync(keys, `ops:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 8, peerTls: true, nbdTlsPskFile: keys, volumes: [{ name: 'vol0', sizeBytes: 64 * MiB, extentBytes: MiB }] });
  const tlsUri = (id: number): string => `nbds://ops@${cluster.node(id).addrs.nbd}/vol0?tls-psk-file=${keys}`;

  const source = join(dir, 'source.raw');
  const image = Buffer.allocUnsafe(24 * MiB);
  randomFillSync(image);
  writeFileSync(source, image);
  await runToolOk('nbdcopy', ['--flush', source, tlsUri(1)], { timeoutMs: 120_000 });
  const back = join(dir, 'back.raw');
  await runToolOk('nbdcopy', [tlsUri(3), back], { timeoutMs: 120_000 });
  const cmp = await runTool('cmp', ['-n', String(24 * MiB), source, back]);
  assert.equal(cmp.code, 0, describeRun('cmp', cmp));

  for (const n of cluster.nodes) {
    const info = await runToolOk('nbdinfo', [tlsUri(n.id)]);
    assert.match(info.stdout, /with TLS/, `node ${n.id}: ${info.stdout}`);
    const plain = await runTool('nbdinfo', [cluster.nbdUri(n.id)]);
    assert.notEqual(plain.code, 0, describeRun(`nbdinfo without TLS to node ${n.id}`, plain));
    assert.ok((await cluster.metric(n.id, 'raftblock_transport_tls_connections_total')) >= 1, `node ${n.id} made no TLS peer connection`);
  }
  const compared = await cluster.waitReplicasIdentical(60_000);
  assert.equal(compared, 8);
});
