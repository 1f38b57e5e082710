/**
 * A gateway that holds no replica of a PG learns of a new leader from the PG's replicas, not
 * from its request timeout. Four nodes, three replicas per PG: for a PG that node G does not
 * hold, its leader is frozen (SIGSTOP: its connections stay open, nothing answers). A write
 * through G's gateway to that PG must complete inside the 4 s a forwarded request waits for an
 * answer, moved on by the other replicas (counted in raftblock_gateway_leader_probe_redirects_total):
 * they elect a leader in about an election timeout, G's probes of them name it, and G resends
 * the write there under the same request id. Once the old leader
 * runs again, every replica of the PG holds the same bytes and the block reads back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { locateExtent, pgOfGroup } from '../../src/cluster/map.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { blockOps, expectTagged, requirePythonNbd, writeTagged } from './io.js';

/** What a forwarded request waits for an answer before it is retried elsewhere (node.ts). */
const requestTimeoutMs = 4000;

test('a gateway without a replica of a PG moves on from its frozen leader within about an election timeout', { timeout: 180_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 4, replicas: 3, pgCount: 8, volumes: [{ name: 'vol0', sizeBytes: 64 * 1024 * 1024 }] });
  await cluster.waitCaughtUp();
  const map = await cluster.map();
  const vol = map.volumes.find((v) => v.name === 'vol0')!;
  const pool = map.pools.find((p) => p.name === vol.pool)!;

  // A gateway G and a block of a PG G holds no replica of (with 3 of 4 nodes per PG, each
  // node lacks about a quarter of them).
  let found: { gateway: number; block: number; groupId: number } | undefined;
  for (let block = 0; block < vol.sizeBytes / 4096 && !found; block += vol.extentBytes / 4096) {
    const loc = locateExtent(map, vol, block * 4096);
    const gateway = [1, 2, 3, 4].find((n) => !loc.replicas.includes(n));
    if (gateway !== undefined) found = { gateway, block, groupId: loc.groupId };
  }
  assert.ok(found, `every PG of ${pool.pgCount} is on every node`);
  const { gateway, block, groupId } = found;
  const leader = await waitFor(`a leader of group ${groupId}`, 30_000, async () => (await cluster.leaderOf(groupId)) || undefined);
  assert.notEqual(leader, gateway);
  t.diagnostic(`gateway ${gateway}, block ${block}, PG ${pgOfGroup(groupId).pgIndex} (group ${groupId}) led by node ${leader}`);

  // G has routed to that leader before, as a gateway in use would have.
  await writeTagged(cluster, gateway, [block], 'before-freeze');

  const frozen = cluster.node(leader).proc!;
  frozen.kill('SIGSTOP');
  let thawed = false;
  const thaw = (): void => {
    if (!thawed) frozen.kill('SIGCONT');
    thawed = true;
  };
  t.after(thaw);
  const redirectsBefore = await cluster.metric(gateway, 'raftblock_gateway_leader_probe_redirects_total');
  try {
    const started = Date.now();
    const w = await blockOps(cluster, gateway, 'write', [block], { tag: 'while-frozen', timeoutS: 20 });
    const elapsedMs = Date.now() - started;
    t.diagnostic(`the write through node ${gateway} took ${elapsedMs} ms with node ${leader} frozen`);
    assert.equal(w[0].result, 'ok', `write via node ${gateway}: ${JSON.stringify(w)}`);
    // Without the probes it waits out the request timeout on the frozen node before anything
    // else. With them the other replicas' new leader is named once elected (about an election
    // timeout, longer when a pre-vote meets a lease still running on a loaded machine).
    const redirects = (await cluster.metric(gateway, 'raftblock_gateway_leader_probe_redirects_total')) - redirectsBefore;
    assert.ok(redirects >= 1, `the write through node ${gateway} was not moved on by the other replicas' answer (${elapsedMs} ms)`);
    assert.ok(elapsedMs < requestTimeoutMs, `the write took ${elapsedMs} ms: it waited for the frozen leader's request timeout`);
  } finally {
    thaw();
  }

  // The old leader rejoins as a follower; nothing was applied twice or lost.
  const newLeader = await waitFor(`a leader of group ${groupId}`, 30_000, async () => (await cluster.leaderOf(groupId)) || undefined);
  t.diagnostic(`group ${groupId} is led by node ${newLeader} after the thaw`);
  await expectTagged(cluster, gateway, [block], 'while-frozen');
  await cluster.waitReplicasIdentical();
  await expectTagged(cluster, leader, [block], 'while-frozen');
});
