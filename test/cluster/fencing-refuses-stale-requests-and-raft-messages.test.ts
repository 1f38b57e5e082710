/**
 * Fencing on the peer port of real nodes, through hand-made peer connections (frame.ts over a
 * plain socket):
 *  (a) a forwarded write routed with a map older than its PG's replica set is refused with
 *      STALE_EPOCH and changes nothing; the same write at the current epoch is served;
 *  (b) Raft messages of an older term (a deposed leader's appends, heartbeats, votes) leave the
 *      group's term, leader and data as they were, and Raft messages from a node that is not
 *      a replica of the PG are dropped before the core (counted as fenced);
 *  (c) a garbage or oversized frame closes only its own connection; the node keeps serving;
 *  (d) a write routed with a map from before a volume's delete is refused; a node restarted
 *      with that old map learns the newer one before it routes I/O: a write through it to the
 *      volume deleted while it was down fails and recreates nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pgGroupId, pgOfExtent, type ClusterMap } from '../../src/cluster/map.js';
import { encodeWrite } from '../../src/store/ops.js';
import type { GroupStatus } from '../../src/cluster/admin-client.js';
import { TestCluster, sleep, waitFor } from '../helpers/cluster.js';
import { HandPeer, metric } from '../helpers/hand-peer.js';
import { requirePythonNbd, systemPython } from './io.js';

function groupOn(statuses: { groups: GroupStatus[] }, groupId: number): GroupStatus {
  const g = statuses.groups.find((x) => x.groupId === groupId);
  assert.ok(g, `group ${groupId} not on the node`);
  return g;
}

test('fencing: stale forwarded writes and stale-term Raft messages are refused, bad frames close one connection', { timeout: 120_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, {
    nodes: 3,
    pgCount: 2,
    volumes: [
      { name: 'vol0', sizeBytes: 16 * 1024 * 1024 },
      { name: 'doomed', sizeBytes: 16 * 1024 * 1024 },
    ],
  });
  const peers: HandPeer[] = [];
  t.after(() => peers.forEach((p) => p.close()));
  // The hand-made peers speak as nodes of this cluster (a node refuses frames of another one).
  const clusterId = (await cluster.map()).clusterId ?? '';
  assert.ok(clusterId, 'the map has no cluster id');
  // ... and, under a member's id, as its data dir (a node refuses another incarnation's frames).
  const incarnations = new Map((await cluster.map()).nodes.map((n) => [String(n.id), n.incarnation]));
  const open = async (nodeId: number, from: string): Promise<HandPeer> => {
    const p = await HandPeer.open(cluster.node(nodeId).addrs.peer, from, clusterId, incarnations.get(from), cluster.clusterKey);
    peers.push(p);
    return p;
  };

  let map: ClusterMap = await cluster.map();
  const pool = map.pools.find((p) => p.name === 'default')!;
  const vol = map.volumes.find((v) => v.name === 'vol0')!;
  const pgIndex = pgOfExtent(vol.id, 0, pool.pgCount);
  const groupId = pgGroupId(pool.id, pgIndex);
  const sinceEpoch = pool.pgs[pgIndex].sinceEpoch;
  const leader = await waitFor('a leader of the PG', 20_000, async () => (await cluster.leaderOf(groupId)) || undefined);
  const block = (byte: number): Buffer => Buffer.alloc(4096, byte);
  const write = (byte: number, seq: number) => ({ g: groupId, q: { k: 'write', v: vol.id, o: 0, d: block(byte), s: 4242, q: seq } });
  const read = { g: groupId, q: { k: 'read', v: vol.id, o: 0, l: 4096 } };

  // (a) A forwarded write routed with a map from before the PG's replica set: refused.
  const gw = await open(leader, '99');
  let r = await gw.request(sinceEpoch - 1, 'io', write(0xab, 1));
  assert.equal(r.e?.code, 'STALE_EPOCH', `stale write answered ${JSON.stringify(r.e ?? 'ok')}`);
  r = await gw.request(map.epoch, 'io', read);
  assert.equal(r.e, undefined);
  assert.ok(Buffer.from(r.r as Uint8Array).equals(block(0)), 'the refused write changed the data');
  // The same write at the current epoch is served (so the refusal above is the fence).
  r = await gw.request(map.epoch, 'io', write(0xab, 2));
  assert.equal(r.e, undefined, JSON.stringify(r.e));
  r = await gw.request(map.epoch, 'io', read);
  assert.ok(Buffer.from(r.r as Uint8Array).equals(block(0xab)));
  r = await gw.request(0, 'io', write(0xcd, 3));
  assert.equal(r.e?.code, 'STALE_EPOCH');
  r = await gw.request(map.epoch, 'io', read);
  assert.ok(Buffer.from(r.r as Uint8Array).equals(block(0xab)), 'a write at epoch 0 changed the data');

  // (b) A deposed replica (killed, impersonated here) sends its old term's traffic.
  const deposed = pool.pgs[pgIndex].replicas.find((id) => id !== leader)!;
  const follower = pool.pgs[pgIndex].replicas.find((id) => id !== leader && id !== deposed)!;
  await cluster.node(deposed).kill9();
  const before = new Map<number, GroupStatus>();
  for (const id of [leader, follower]) before.set(id, groupOn(await cluster.status(id), groupId));
  const term = before.get(leader)!.term;
  assert.ok(term >= 1);
  const oldTerm = term - 1;
  for (const target of [leader, follower]) {
    const p = await open(target, String(deposed));
    const last = before.get(target)!.lastIndex;
    const entry = { index: last + 1, term: oldTerm, type: 0, data: encodeWrite(vol.id, 0, block(0xee)) };
    p.send({
      epoch: map.epoch,
      msgs: [
        { g: groupId, m: { type: 'app', from: deposed, to: target, term: oldTerm, index: last, logTerm: oldTerm, entries: [entry], commit: last + 1, seq: 1, tick: 1 } },
        { g: groupId, m: { type: 'heartbeat', from: deposed, to: target, term: oldTerm, commit: last + 1, seq: 2, tick: 2 } },
        { g: groupId, m: { type: 'vote', from: deposed, to: target, term: oldTerm, index: last + 100, logTerm: oldTerm, transfer: true } },
        { g: groupId, m: { type: 'preVote', from: deposed, to: target, term: oldTerm, index: last + 100, logTerm: oldTerm, transfer: false } },
      ],
    });
    // The core saw them (they passed the membership fence) and told the sender its newer term.
    await waitFor(`node ${target} answers the stale leader with its term`, 10_000, async () =>
      p.frames.some((f) => (f.msgs ?? []).some((m) => m.g === groupId && (m.m as { type: string; term: number }).type === 'appResp' && (m.m as { term: number }).term === term))
        ? true
        : undefined,
    );
  }
  // Every Raft message the cluster sent itself so far was well formed.
  for (const n of cluster.nodes) {
    if (n.running) assert.equal(await metric(n.addrs.http, 'raftblock_transport_malformed_messages_total'), 0, `node ${n.id} dropped a message of its peers`);
  }
  // Malformed messages from a replica's identity: a string where a number belongs, a message
  // speaking for another node, a group id that names no group. Dropped before the core.
  {
    const p = await open(leader, String(deposed));
    p.send({
      epoch: map.epoch,
      msgs: [
        { g: groupId, m: { type: 'app', from: deposed, to: leader, term: term + 7, index: 'x', logTerm: 0, entries: 5, commit: 'y', seq: 0, tick: 0 } },
        { g: groupId, m: { type: 'vote', from: follower, to: leader, term: term + 7, index: 1e6, logTerm: term + 7, transfer: true } },
        { g: 5, m: { type: 'heartbeat', from: deposed, to: leader, term: term + 7, commit: 0, seq: 0, tick: 0 } },
      ],
    });
    await waitFor('the malformed messages counted', 10_000, async () =>
      (await metric(cluster.node(leader).addrs.http, 'raftblock_transport_malformed_messages_total')) === 3 ? true : undefined,
    );
  }
  // A node outside the PG's replica set, with a higher term: dropped before the core.
  const fencedBefore = await metric(cluster.node(leader).addrs.http, 'raftblock_transport_fenced_messages_total');
  gw.send({ epoch: map.epoch, msgs: [{ g: groupId, m: { type: 'vote', from: 99, to: leader, term: term + 5, index: 1e6, logTerm: term + 5, transfer: true } }] });
  await waitFor('the outsider vote counted as fenced', 10_000, async () =>
    (await metric(cluster.node(leader).addrs.http, 'raftblock_transport_fenced_messages_total')) > fencedBefore ? true : undefined,
  );
  await sleep(500);
  for (const id of [leader, follower]) {
    const now = groupOn(await cluster.status(id), groupId);
    // Nothing sent here can move a term by less than 5; an election of its own on a loaded
    // machine (term + 1 or 2) is not what this checks.
    assert.ok(now.term < term + 5, `node ${id}: term ${now.term} — the outsider's vote was counted`);
    if (now.term === term) assert.equal(now.leader, leader, `node ${id}: leader moved within term ${term}`);
  }
  r = await gw.request(map.epoch, 'io', read);
  assert.ok(Buffer.from(r.r as Uint8Array).equals(block(0xab)), 'stale-term Raft messages changed the data');

  // (c) Bad frames: an oversized length, an undecodable body, a body that is not a frame.
  const badBefore = await metric(cluster.node(leader).addrs.http, 'raftblock_transport_bad_frames_total');
  const head = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  for (const bytes of [head(0xffffffff), Buffer.concat([head(3), Buffer.from([0xc1, 0xc1, 0xc1])]), Buffer.concat([head(1), Buffer.from([0x05])])]) {
    const bad = await open(leader, '98');
    bad.socket.write(bytes);
    await waitFor('the bad connection closed by the node', 10_000, async () => (bad.closed ? true : undefined));
  }
  assert.equal((await metric(cluster.node(leader).addrs.http, 'raftblock_transport_bad_frames_total')) - badBefore, 3);
  // Well-framed but malformed forwarded requests: refused one by one, the connection stays.
  for (const [g, q] of [
    [groupId, { k: 'write', v: vol.id, o: -4096, d: block(1), s: 4242, q: 20 }],
    [groupId, { k: 'write', v: vol.id, o: 0, d: 'not bytes', s: 4242, q: 21 }],
    [groupId, { k: 'erase', v: vol.id, o: 0, l: 4096 }],
    [groupId, { k: 'read', v: vol.id, o: 0, l: 2 ** 40 }],
    [groupId, null],
    [7, read.q],
  ] as const) {
    r = await gw.request(map.epoch, 'io', { g, q });
    assert.equal(r.e?.code, 'INVALID_ARGUMENT', `${JSON.stringify(q)} answered ${JSON.stringify(r.e ?? 'ok')}`);
  }
  assert.ok(!gw.closed, 'a good connection was closed');
  r = await gw.request(map.epoch, 'io', read);
  assert.ok(Buffer.from(r.r as Uint8Array).equals(block(0xab)));

  // (d) `doomed` is written (its PG's replicas hold a file), then deleted while one replica is
  // down. A write routed with the map from before the delete is refused; a client of the
  // replica restarted with that old map, connecting as soon as it listens, cannot write to it
  // (the node routes no I/O before its map caught up; in practice the export is already gone
  // when the client arrives); every replica, the restarted one included, deletes the file.
  await cluster.node(deposed).start();
  await cluster.waitLeaders();
  const doomed = map.volumes.find((v) => v.name === 'doomed')!;
  const dpg = pgOfExtent(doomed.id, 0, pool.pgCount);
  const dg = pgGroupId(pool.id, dpg);
  const doomedLeader = await waitFor('a leader of the PG of doomed', 20_000, async () => (await cluster.leaderOf(dg)) || undefined);
  const viaLeader = await open(doomedLeader, '97');
  map = await cluster.map();
  r = await viaLeader.request(map.epoch, 'io', { g: dg, q: { k: 'write', v: doomed.id, o: 0, d: block(0x77), s: 4242, q: 10 } });
  assert.equal(r.e, undefined, JSON.stringify(r.e));
  const epochBeforeDelete = map.epoch;
  const restarted = pool.pgs[dpg].replicas.find((id) => id !== doomedLeader)!;
  const files = (): string[] =>
    cluster.nodes.flatMap((n) => {
      const dir = join(n.dir, 'data', 'pgs', String(dg));
      return existsSync(dir) ? readdirSync(dir).filter((f) => f === `vol-${doomed.id}.dat`).map(() => `node ${n.id}`) : [];
    });
  await waitFor('the write applied on every replica', 10_000, async () => (files().length === 3 ? true : undefined));
  await cluster.node(restarted).stop();
  await cluster.admin(doomedLeader, 'deleteVolume', 'doomed');
  // The serving leader fences with its own map: once that has the delete (it may apply it a
  // moment after the admin call returns), a write routed with an older map is refused.
  await waitFor('the leader of the PG applies the delete', 10_000, async () =>
    (await cluster.admin<{ volumes: { name: string }[] }>(doomedLeader, 'listVolumes')).volumes.some((v) => v.name === 'doomed') ? undefined : true,
  );
  r = await viaLeader.request(epochBeforeDelete, 'io', { g: dg, q: { k: 'write', v: doomed.id, o: 4096, d: block(0x78), s: 4242, q: 11 } });
  assert.equal(r.e?.code, 'STALE_EPOCH', `a write routed before the delete answered ${JSON.stringify(r.e ?? 'ok')}`);
  await cluster.node(restarted).start();
  // The client connects as soon as the node listens (its map may still list the volume).
  const script = `import nbd\nh = nbd.NBD()\ntry:\n  h.connect_uri(${JSON.stringify(cluster.nbdUri(restarted, 'doomed'))})\nexcept nbd.Error as e:\n  print("refused at connect:", e)\n  raise SystemExit(3)\ntry:\n  h.pwrite(b"y" * 4096, 8192)\nexcept nbd.Error as e:\n  print("write refused:", e)\n  raise SystemExit(4)\n`;
  const nbd = spawnSync(systemPython, ['-c', script], { timeout: 40_000, encoding: 'utf8' });
  t.diagnostic(`write through the restarted node: ${nbd.stdout.trim()}`);
  assert.ok(nbd.status === 3 || nbd.status === 4, `a write to a deleted volume through the restarted node: exit ${nbd.status}, ${nbd.stdout} ${nbd.stderr}`);
  await waitFor('no replica holds the deleted volume', 15_000, async () => (files().length === 0 ? true : undefined)).catch((err) => {
    throw new Error(`${(err as Error).message}: ${files().join(', ')}`);
  });
  const vols = await cluster.admin<{ volumes: { name: string }[] }>(restarted, 'listVolumes');
  assert.deepEqual(vols.volumes.map((v) => v.name), ['vol0']);
});
