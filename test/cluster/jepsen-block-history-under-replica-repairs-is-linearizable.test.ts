/**
 * Jepsen-style, with `raftblock pool repair` as the nemesis: concurrent clients, each on its own
 * NBD connection through a different node's gateway, write unique tags to blocks on three PGs
 * and read them back, while every replica of those PGs is rebuilt from its leader in turn
 * (leaders included: they hand over first). The history, final reads included, must pass
 * `raftblock check-history --model block`, and afterwards every PG's replicas hold the same
 * bytes. (What a leader that still counted a rebuilt replica's old acknowledgements would do
 * needs a window of a few hundred microseconds and a leader loss right after: the simulator's
 * `rebuild` profile convicts it, test/unit/sim-sweep.test.ts; here, real processes and the real
 * command under client load.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, sleep } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tools.js';
import { pgGroupId, pgOfExtent } from '../../src/cluster/map.js';
import type { PgRepairResult } from '../../src/cluster/admin-client.js';
import { checkBlockHistory, finalReadsAsHistory, requirePythonNbd, startJepsenClient } from './io.js';

const MiB = 1024 * 1024;
const extentBytes = MiB;
const blocksPerExtent = extentBytes / 4096;
const pgCount = 4;
const clientSeconds = 25;

test('a block history recorded while replicas are rebuilt from their leaders is linearizable', { timeout: 300_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount, volumes: [{ name: 'vol0', sizeBytes: 32 * MiB, extentBytes }] });
  const volume = (await cluster.volumes()).volumes[0];
  const poolId = (await cluster.map()).pools.find((p) => p.name === volume.pool)!.id;
  // Six blocks in six extents on three distinct PGs.
  const blocks: number[] = [];
  const pgs: number[] = [];
  for (let e = 0; blocks.length < 6; e++) {
    const pg = pgOfExtent(volume.id, e, pgCount);
    if (!pgs.includes(pg)) {
      if (pgs.length === 3) continue;
      pgs.push(pg);
    }
    blocks.push(e * blocksPerExtent);
  }

  const vias = [1, 1, 2, 3];
  const clients = vias.map((via, i) => startJepsenClient(cluster, via, { process: i + 1, blocks, durationS: clientSeconds, timeoutS: 3, seed: 300 + i }));
  t.after(() => clients.forEach((c) => c.proc.kill('SIGKILL')));

  // The nemesis: every replica of the three PGs rebuilt in turn, round after round, while the
  // clients run.
  const started = Date.now();
  await sleep(2000);
  const http = cluster.node(1).addrs.http;
  const repaired: string[] = [];
  for (let round = 0; round === 0 || Date.now() - started < (clientSeconds - 5) * 1000; round++) {
    for (const [node, pg] of [3, 1, 2].flatMap((n) => pgs.map((p) => [n, p] as const))) {
      // --force: under these writes a verify never settles, and there is no odd copy to find.
      const r = await runCli(['pool', 'repair', 'default', String(pg), '--node', String(node), '--force', '--json', '--server', http]);
      if (r.code !== 0) {
        assert.fail(`repair of node ${node}'s replica of PG ${pg}: ${r.stdout}${r.stderr}\nrepairs before: ${repaired.join(', ')}\n${cluster.groupLogs([pgGroupId(poolId, pg)])}`);
      }
      const result = JSON.parse(r.stdout) as PgRepairResult;
      assert.notEqual(result.leader, node);
      repaired.push(`PG ${pg} on node ${node} from node ${result.leader} (${result.elapsedMs} ms)`);
    }
  }
  assert.ok(repaired.length >= 9, `only ${repaired.length} repairs while the clients ran`);

  const histories = await Promise.all(clients.map((c) => c.done));
  await cluster.waitLeaders(60_000);
  let finals = '';
  for (const n of cluster.nodes) finals += await finalReadsAsHistory(cluster, n.id, 10 + n.id, blocks);
  const lines = (histories.join('') + finals).split('\n').filter((l) => l !== '');
  const okWrites = lines.filter((l) => l.includes('"type": "ok"') && l.includes('"f": "write"')).length;
  const okReads = lines.filter((l) => l.includes('"type": "ok"') && l.includes('"f": "read"')).length;
  assert.ok(okWrites >= 20 && okReads >= 20, `too little got through: ${okWrites} writes, ${okReads} reads acknowledged`);
  const check = checkBlockHistory(tempDir(t), lines.join('\n') + '\n');
  if (check.status !== 0) assert.fail(`check-history: ${check.stdout}\n${check.stderr}\nrepairs: ${repaired.join(', ')}`);
  assert.match(check.stdout, /^linearizable/);

  const verify = await runCli(['pool', 'verify', '--server', http]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  t.diagnostic(`${lines.length} events (${okWrites} writes, ${okReads} reads acknowledged); ${repaired.length} repairs: ${repaired.join(', ')}`);
});
