/**
 * `raftblock pool verify`, the operator's scrub: on a quiet cluster every PG's replicas hold the
 * same bytes (exit 0); bytes changed on one replica's disk behind the cluster's back (a block
 * flipped in a checkpointed data file while its node was down, as a bad disk would) are found:
 * that PG is reported as a mismatch naming the odd node out (exit 1), every other PG as
 * consistent. A PG being written is never called a mismatch (pg-verify's unit test covers the
 * verdicts; here: real nodes, real files, the real CLI).
 *
 * Then `raftblock pool repair` mends it: refused for a replica holding the majority's copy,
 * while no copy has a majority (node 2 down), and even forced while the PG's other follower is
 * down (the PG would have no quorum while the replica is rebuilt); then node 3's replica is
 * rebuilt from the
 * leader and verify finds every PG consistent; a replica that leads its PG hands the leadership
 * over and is rebuilt the same way; the data reads back through the gateways. Last, `pool verify
 * --repair` finds another flipped block (on node 2) and rebuilds that replica by itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, fsyncSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pgGroupId, pgOfExtent } from '../../src/cluster/map.js';
import type { PgRepairResult, PgVerifyResult } from '../../src/cluster/admin-client.js';
import { readCheckpoint } from '../../src/store/checkpoint-file.js';
import { runCli } from '../helpers/cli.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { blockOps, requirePythonNbd } from './io.js';

const MiB = 1024 * 1024;

/**
 * Flips 16 bytes of the block written at offset 3 of extent `extent` in node `nodeId`'s copy of
 * its PG, behind the cluster's back (as a bad disk would): once that copy is checkpointed past
 * the writes (a restart then replays nothing over it), with the node killed, then restarted.
 */
async function flipWrittenBlock(cluster: TestCluster, nodeId: number, extent: number): Promise<{ pgIndex: number; groupId: number; applied: number }> {
  const map = await cluster.map();
  const pool = map.pools.find((p) => p.name === 'default')!;
  const volume = map.volumes.find((v) => v.name === 'vol0')!;
  const pgIndex = pgOfExtent(volume.id, extent, pool.pgCount);
  const groupId = pgGroupId(pool.id, pgIndex);
  const pgDir = join(cluster.node(nodeId).dir, 'data', 'pgs', String(groupId));
  const applied = (await cluster.clusterStatus()).groups.find((g) => g.groupId === groupId)?.members.find((m) => m.nodeId === nodeId)?.appliedIndex;
  assert.ok(applied !== undefined && applied > 0, `node ${nodeId}'s applied index of PG ${pgIndex}`);
  await waitFor(`node ${nodeId}'s replica of PG ${pgIndex} checkpointed at ${applied}`, 30_000, async () => ((await readCheckpoint(pgDir)).appliedIndex >= applied ? true : undefined));
  await cluster.node(nodeId).kill9();
  // A PG replica keeps each volume in one sparse file at the volume's own offsets.
  const offset = extent * volume.extentBytes + 3 * 4096;
  const fd = openSync(join(pgDir, `vol-${volume.id}.dat`), 'r+');
  try {
    const block = Buffer.alloc(4096);
    assert.equal(readSync(fd, block, 0, 4096, offset), 4096);
    assert.ok(block.some((b) => b !== 0), 'the written block is not in the data file where expected');
    for (let i = 0; i < 16; i++) block[i] ^= 0xff;
    writeSync(fd, block, 0, 4096, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  await cluster.node(nodeId).start();
  await cluster.waitCaughtUp();
  return { pgIndex, groupId, applied };
}

test('pool verify finds a block flipped on one replica, pool repair rebuilds that replica from its leader', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 4, volumes: [{ name: 'vol0', sizeBytes: 16 * MiB, extentBytes: MiB }] });
  const blocksPerExtent = MiB / 4096;
  const written = await blockOps(cluster, 1, 'write', Array.from({ length: 16 }, (_, e) => e * blocksPerExtent + 3), { tag: 'scrub', timeoutS: 20 });
  assert.deepEqual(written.filter((r) => r.result !== 'ok'), []);
  await cluster.waitReplicasIdentical();
  const http = cluster.node(1).addrs.http;

  const clean = await runCli(['pool', 'verify', '--server', http]);
  assert.equal(clean.code, 0, clean.stdout + clean.stderr);
  assert.match(clean.stdout, /4 PGs: 4 consistent, 0 mismatched, 0 not compared/);

  const map = await cluster.map();
  const pool = map.pools.find((p) => p.name === 'default')!;
  const { pgIndex, groupId, applied } = await flipWrittenBlock(cluster, 3, 5);

  const found = await runCli(['pool', 'verify', 'default', '--server', http]);
  assert.equal(found.code, 1, found.stdout + found.stderr);
  assert.match(found.stdout, /4 PGs: 3 consistent, 1 mismatched, 0 not compared/);
  assert.match(found.stdout, new RegExp(`default\\s+${pgIndex}\\s+${groupId}\\s.*MISMATCH: nodes 1,2 hold \\w+; node 3 holds \\w+`));
  const json = await runCli(['pool', 'verify', 'default', '--pg', String(pgIndex), '--json', '--server', http]);
  assert.equal(json.code, 1, json.stderr);
  const [only] = JSON.parse(json.stdout) as PgVerifyResult[];
  assert.equal(only.groupId, groupId);
  assert.equal(only.result, 'mismatch');
  assert.deepEqual(only.result === 'mismatch' && only.groups.map((g) => g.nodeIds), [[1, 2], [3]]);

  const bad = await runCli(['pool', 'verify', 'nope', '--server', http]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /pool nope is not in the map \[NOT_FOUND\]/);

  // Repair: never of a replica holding the majority's copy (it would be rebuilt from the leader).
  const majority = await runCli(['pool', 'repair', 'default', String(pgIndex), '--node', '1', '--server', http]);
  assert.equal(majority.code, 2, majority.stdout + majority.stderr);
  assert.match(majority.stderr, /node 1 holds the copy a majority holds \(nodes 1,2\); the odd one out is node 3 .*\[REPAIR_REFUSED\]/);
  // With node 2 down, nodes 1 and 3 disagree and neither is a majority: the operator's call.
  await cluster.node(2).kill9();
  const undecided = await runCli(['pool', 'repair', 'default', String(pgIndex), '--node', '3', '--server', http]);
  assert.equal(undecided.code, 2, undecided.stdout + undecided.stderr);
  assert.match(undecided.stderr, /no copy of the PG is held by a majority of its replicas \(node 1 holds \w+; node 3 holds \w+\).*\[REPAIR_REFUSED\]/);
  // Even forced, refused: nodes 1 and 3 are the PG's quorum while node 2 is down.
  const refused = await runCli(['pool', 'repair', 'default', String(pgIndex), '--node', '3', '--force', '--server', http]);
  assert.equal(refused.code, 2, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /\[PG_QUORUM_AT_RISK\]/);
  const notThere = await runCli(['pool', 'repair', 'default', String(pgIndex), '--node', '9', '--server', http]);
  assert.equal(notThere.code, 2);
  assert.match(notThere.stderr, /not on node 9 \[INVALID_ARGUMENT\]/);
  await cluster.node(2).start();
  await cluster.waitCaughtUp();

  const repaired = await runCli(['pool', 'repair', 'default', String(pgIndex), '--node', '3', '--json', '--server', http]);
  assert.equal(repaired.code, 0, repaired.stdout + repaired.stderr);
  const r = JSON.parse(repaired.stdout) as PgRepairResult;
  assert.equal(r.groupId, groupId);
  assert.equal(r.nodeId, 3);
  assert.equal(r.verdictBefore, 'mismatch');
  assert.ok(r.leader === 1 || r.leader === 2, `rebuilt from node ${r.leader}, a holder of the majority's copy`);
  assert.ok(r.appliedIndex >= applied, `rebuilt replica at ${r.appliedIndex}, the writes at ${applied}`);
  assert.match(readFileSync(cluster.node(3).logPath, 'utf8'), /PG replica held until it is rebuilt from its leader: an operator asked for it/);
  const mended = await runCli(['pool', 'verify', 'default', '--server', http]);
  assert.equal(mended.code, 0, mended.stdout + mended.stderr);
  assert.match(mended.stdout, /4 PGs: 4 consistent, 0 mismatched, 0 not compared/);

  // The replica that leads a PG: it hands the leadership over, then is rebuilt like any other.
  const other = (pgIndex + 1) % pool.pgCount;
  const otherGroup = pgGroupId(pool.id, other);
  const leader = (await cluster.clusterStatus()).groups.find((g) => g.groupId === otherGroup)?.leader;
  assert.ok(leader !== undefined && leader > 0, `PG ${other} has a leader`);
  const led = await runCli(['pool', 'repair', 'default', String(other), '--node', String(leader), '--server', http]);
  assert.equal(led.code, 0, led.stdout + led.stderr);
  assert.match(led.stdout, new RegExp(`rebuilt node ${leader}'s replica of PG default/${other} \\(group ${otherGroup}\\) from node (?!${leader}\\b)\\d+`));
  const all = await runCli(['pool', 'verify', '--server', http]);
  assert.equal(all.code, 0, all.stdout + all.stderr);
  for (const via of [1, 2, 3]) {
    const read = await blockOps(cluster, via, 'read', written.map((w) => w.block), { timeoutS: 20 });
    assert.deepEqual(read.map((x) => x.value), written.map(() => 'scrub'), `reads via node ${via}`);
  }

  // `pool verify --repair` finds an odd replica and rebuilds it by itself.
  const second = await flipWrittenBlock(cluster, 2, 6);
  const auto = await runCli(['pool', 'verify', '--repair', '--server', http]);
  assert.equal(auto.code, 0, auto.stdout + auto.stderr);
  assert.match(auto.stdout, /4 PGs: 3 consistent, 1 mismatched, 0 not compared/);
  assert.match(auto.stdout, new RegExp(`rebuilt node 2's replica of PG default/${second.pgIndex} \\(group ${second.groupId}\\) from node [13]:`));
  assert.match(auto.stdout, /after the repairs:[\s\S]*4 PGs: 4 consistent, 0 mismatched, 0 not compared/);
});
