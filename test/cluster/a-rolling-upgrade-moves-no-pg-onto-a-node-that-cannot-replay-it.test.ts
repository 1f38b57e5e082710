/**
 * A PG's new replica is sent its leader's snapshot image and the log after it. Proposals are
 * gated on every replica's store command level (the rolling-upgrade test), but what a PG holds
 * already was not: a node of an older build that placement moved a PG onto received commands
 * past 256 TiB, or an image reaching there, and stopped at them (and at every restart).
 *
 * Three nodes; a 400 TiB volume written past 256 TiB in every PG but one. A fourth node joins
 * telling store command level 1 (RAFTBLOCK_STORE_OPS_LEVEL, as a build before far offsets):
 * placement moves PGs onto it. Those holding data past 256 TiB do not gain it as a member (their
 * leaders warn, naming node 4 and level 2, and count them held), the one that holds nothing
 * there moves at once, and node 4 keeps running. Restarted at this build's level, node 4 gets
 * the held PGs: every configuration equals the map, and node 4's gateway reads the far blocks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TestCluster, waitFor, logRecords } from '../helpers/cluster.js';
import { requireTools } from '../helpers/tools.js';
import { applyCommand, locateExtent, parseLabels, pgOfExtent, pgOfGroup, type ClusterMap } from '../../src/cluster/map.js';
import { farOffsetsFromBytes, storeOpsLevel } from '../../src/store/ops.js';
import { raftblockVersion } from '../../src/common/version.js';
import { runCli } from '../helpers/cli.js';

const TiB = 2 ** 40;
const pgCount = 8;

/** Runs qemu-io commands against node `via`'s export of vol0; fails the test on an error. */
function qemuIo(cluster: TestCluster, via: number, cmds: string[]): void {
  const r = spawnSync('qemu-io', ['-f', 'raw', cluster.nbdUri(via), ...cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `qemu-io via node ${via}: ${r.stderr}${r.stdout}`);
  assert.doesNotMatch(r.stdout + r.stderr, /fail|error|Pattern verification/i, `qemu-io via node ${via}: ${r.stdout}${r.stderr}`);
}

/** The first extent at or past 256 TiB of each PG: one byte offset per PG index. */
function farOffsetPerPg(map: ClusterMap): Map<number, number> {
  const v = map.volumes.find((x) => x.name === 'vol0')!;
  const out = new Map<number, number>();
  for (let e = Math.ceil(farOffsetsFromBytes / v.extentBytes); out.size < pgCount; e++) {
    const pg = pgOfExtent(v.id, e, pgCount);
    if (!out.has(pg)) out.set(pg, e * v.extentBytes);
  }
  for (const [pg, offset] of out) assert.equal(locateExtent(map, v, offset).pgIndex, pg);
  return out;
}

test('placement moves no PG holding data past 256 TiB onto a node telling level 1, and moves it once the node is upgraded', { timeout: 120_000 }, async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const started = Date.now();
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount, volumes: [{ name: 'vol0', sizeBytes: 400 * TiB }] });
  const before = await cluster.map();
  const far = farOffsetPerPg(before);

  // Which PGs a fourth node in a zone of its own will take (placement is a pure function of
  // the map): all but one are written past 256 TiB before it joins.
  const join = applyCommand(before, { type: 'addNode', id: 4, addresses: { peer: '127.0.0.1:1', nbd: '127.0.0.1:2', http: '127.0.0.1:3' }, labels: parseLabels(cluster.labels(4)) });
  assert.ok(join.ok);
  const moved = join.map.pools[0].pgs.map((pg, i) => ({ i, pg })).filter(({ pg }) => pg.replicas.includes(4)).map(({ i }) => i);
  assert.ok(moved.length >= 2, `placement would move ${moved.length} PGs to node 4`);
  const nearOnly = moved[0];
  const heldPgs = moved.slice(1);
  qemuIo(cluster, 1, [...far].filter(([pg]) => pg !== nearOnly).map(([, offset]) => `write -P 0x5a ${offset} 4k`));

  const node4 = await cluster.addNode(30_000, { RAFTBLOCK_STORE_OPS_LEVEL: '1' });
  const after = await cluster.map();
  assert.deepEqual(after.pools[0].pgs.map((pg) => pg.replicas), join.map.pools[0].pgs.map((pg) => pg.replicas), 'placement as foreseen');
  t.diagnostic(`cluster up, written and joined in ${Date.now() - started} ms; PGs moving to node 4: ${moved.join(',')}, of which held: ${heldPgs.join(',')}`);

  const status = async () => (await cluster.clusterStatus(1)).groups.filter((g) => g.groupId !== 0);
  const isMember = (g: { configuration?: { voters: number[]; learners?: number[]; votersOutgoing?: number[] }; replicas: number[] }): boolean =>
    g.configuration ? [...g.configuration.voters, ...(g.configuration.learners ?? []), ...(g.configuration.votersOutgoing ?? [])].includes(4) : g.replicas.includes(4);

  // The PG holding nothing past 256 TiB moves to node 4 at level 1.
  await waitFor(`PG ${nearOnly} (nothing past 256 TiB) moved onto node 4`, 30_000, async () => {
    const g = (await status()).find((x) => x.pgIndex === nearOnly)!;
    return g.configuration === undefined && g.health === 'ok' && g.replicas.includes(4) ? true : undefined;
  });
  // Meanwhile, and for a few more rounds (300 ms each), no held PG gains node 4 as a member.
  for (let i = 0; i < 10; i++) {
    const pgs = await status();
    for (const pg of heldPgs) {
      const g = pgs.find((x) => x.pgIndex === pg)!;
      // No leader answered (an election, a status slow on a loaded machine): nothing to judge.
      if (g.leader === 0) continue;
      assert.equal(isMember(g), false, `PG ${pg} holds data past 256 TiB but gained node 4 at level 1: ${JSON.stringify(g)}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  // Every held PG's leader said why, naming node 4 and the level it lacks.
  await waitFor('the leaders of the PGs holding data past 256 TiB warn that their move is held', 20_000, async () => {
    const warned = new Set<number>();
    for (const n of cluster.nodes) {
      // (A leader that had not heard from node 4 yet warned first that its build is unknown.)
      for (const r of logRecords(n, 'PG move held: a new replica\'s node cannot apply what the PG holds')) {
        if (/node 4 runs a build that applies store commands up to level 1.*needs level 2: upgrade \(or start\) node 4/.test(String(r.reason))) warned.add(pgOfGroup(Number(r.group)).pgIndex);
      }
    }
    return heldPgs.every((i) => warned.has(i)) ? true : undefined;
  });
  // `raftblock status` says so too, per PG, from its leader.
  await waitFor('status names node 4 for every held PG', 10_000, async () => {
    const pgs = await status();
    return heldPgs.every((pg) => /node 4 runs a build that applies store commands up to level 1/.test(pgs.find((x) => x.pgIndex === pg)!.moveHeld ?? '')) ? true : undefined;
  });
  // And it names the builds: node 4's level, and that they differ.
  const plain = await runCli(['status', '--server', cluster.node(1).addrs.http]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, new RegExp(`^builds differ: store command level 1 on node 4; level ${storeOpsLevel} on nodes 1, 2, 3 \\(`, 'm'), plain.stdout);
  assert.match(plain.stdout, new RegExp(`^4 .*${raftblockVersion.replaceAll('.', '\\.')} \\(level 1\\)`, 'm'), plain.stdout);
  // Each leader sets its gauge at the end of its own round: summed until they agree.
  await waitFor(`raftblock_pg_moves_held_for_upgrade over the leaders sums to ${heldPgs.length}`, 10_000, async () => {
    let heldCount = 0;
    for (const n of cluster.nodes.slice(0, 3)) heldCount += await cluster.metric(n.id, 'raftblock_pg_moves_held_for_upgrade');
    return heldCount === heldPgs.length ? true : undefined;
  });
  assert.equal(node4.running, true, `node 4 stopped: ${node4.logTail()}`);
  t.diagnostic(`held while node 4 told level 1; ${Date.now() - started} ms`);

  // Node 4 upgraded: the held PGs move.
  node4.env = {};
  await node4.restart();
  await cluster.waitPlacementSettled('every PG on its map replicas once node 4 tells this build\'s level', { via: 1, ask: [1, 2, 3, 4], mapReady: () => undefined, timeoutMs: 60_000 });
  qemuIo(cluster, 4, heldPgs.map((pg) => `read -P 0x5a ${far.get(pg)!} 4k`));
  assert.equal(await cluster.waitReplicasIdentical(30_000), pgCount);
  for (const n of cluster.nodes) assert.equal(n.running, true, `node ${n.id} stopped: ${n.logTail()}`);
  t.diagnostic(`moved after the upgrade; ${Date.now() - started} ms in all`);
});
