/**
 * A write through a gateway whose PG has lost its quorum is retried (the client never sees
 * NotLeader or a timeout) — but only while its NBD client is there: once the client
 * disconnects, the gateway gives its pieces up within one attempt instead of retrying for the
 * full I/O deadline (~30 s), and counts them as given up for that cause.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { TestCluster, sleep, waitFor } from '../helpers/cluster.js';
import { requirePythonNbd, systemPython } from './io.js';

test('the gateway stops retrying the requests of an NBD client that disconnected', { timeout: 90_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 1, volumes: [{ name: 'vol0', sizeBytes: 16 * 1024 * 1024 }] });
  await cluster.node(2).kill9();
  await cluster.node(3).kill9();
  const retries = (): Promise<number> => cluster.metric(1, 'raftblock_gateway_retries_total');
  const abandoned = (cause = 'client_gone'): Promise<number> => cluster.metric(1, `raftblock_gateway_abandoned_total{cause="${cause}"}`);
  assert.equal(await abandoned(), 0);
  assert.equal(await abandoned('scan_over'), 0);

  const script = `import nbd\nh = nbd.NBD()\nh.connect_uri(${JSON.stringify(cluster.nbdUri(1))})\nh.pwrite(b"Z" * 4096, 0)\n`;
  const client = spawn(systemPython, ['-c', script], { stdio: 'ignore' });
  t.after(() => client.kill('SIGKILL'));
  const exited = new Promise((r) => client.once('exit', r));
  // The write cannot commit: the gateway keeps retrying it.
  const before = await retries();
  await waitFor("the gateway retrying the write", 15_000, async () => ((await retries()) >= before + 3 ? true : undefined)).catch(async (err) => {
    throw new Error(`${(err as Error).message}; retries ${await retries()}, client exit ${client.exitCode}\n${cluster.logs(8)}`);
  });
  assert.equal(client.exitCode, null, 'the write finished without a quorum');

  client.kill('SIGKILL');
  await exited;
  // At most one attempt in flight (a peer request times out after 4 s) finishes, then nothing.
  await waitFor('the write given up', 10_000, async () => ((await abandoned()) >= 1 ? true : undefined));
  const settled = await retries();
  await sleep(2000);
  assert.equal(await retries(), settled, 'the gateway still retries for a client that is gone');
  assert.equal(await abandoned('scan_over'), 0);
});
