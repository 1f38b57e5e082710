/**
 * Every node killed (-9) at once while clients write, then all restarted: every write a client
 * saw acknowledged is there, through every gateway (the writes and the final reads, as one
 * block history, pass the linearizability checker), and the replicas agree byte for byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, sleep } from '../helpers/cluster.js';
import { tempDir } from '../helpers/tools.js';
import { checkBlockHistory, finalReadsAsHistory, requirePythonNbd, startJepsenClient } from './io.js';

const MiB = 1024 * 1024;
const pgCount = 8;

test('kill -9 of every node at once, then restart: every acknowledged write is there', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount, volumes: [{ name: 'vol0', sizeBytes: 64 * MiB, extentBytes: MiB }] });
  // 48 blocks over 48 extents, so every PG is written; one writer per gateway.
  const blocks = Array.from({ length: 48 }, (_, e) => e * 256);
  const writers = [1, 2, 3].map((via) => startJepsenClient(cluster, via, { process: via, blocks, durationS: 8, timeoutS: 5, seed: via }));
  await sleep(4000);
  await cluster.kill9All();
  const histories = (await Promise.all(writers.map((w) => w.done))).join('');
  const acked = histories.split('\n').filter((l) => l.includes('"type": "ok"') && l.includes('"f": "write"')).length;
  assert.ok(acked >= 24, `only ${acked} writes acknowledged before the kill`);

  await cluster.startAll();
  await cluster.waitLeaders(60_000);
  // Every gateway reads every block; a lost acknowledged write makes the history convict.
  let finals = '';
  for (const n of cluster.nodes) finals += await finalReadsAsHistory(cluster, n.id, 10 + n.id, blocks);
  const check = checkBlockHistory(tempDir(t), histories + finals);
  assert.equal(check.status, 0, `check-history: ${check.stdout}\n${check.stderr}`);
  assert.equal(await cluster.waitReplicasIdentical(60_000), pgCount);
  t.diagnostic(`${acked} writes acknowledged before every node was killed`);
});
