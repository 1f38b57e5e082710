/**
 * A node without the cluster id (a new or wiped data dir) that claims the id of a member can
 * neither take that member's place in the map nor its connections. On real processes, a
 * 4-node cluster (group 0 on three of them), then:
 *  (a) by hand, a peer claiming node 2's id, without a cluster id, joins through node 1 from
 *      other addresses while node 2 is connected: refused with ALREADY_EXISTS, answered on its
 *      own connection; the same join from node 2's own addresses and data dir (incarnation) is
 *      idempotent (a new node whose first answer was lost asks again) and changes nothing, while
 *      from another data dir it is refused even at node 2's addresses;
 *  (b) a real `raftblock node --join` with a fresh data dir and node 2's id: refused, logged,
 *      never registered, never given the cluster id;
 *  (c) the node outside group 0 (which registers through the join exchange, with its cluster
 *      id) restarts on new ports: its new addresses are taken;
 *  (d) that node's data dir is wiped and it starts again at its very addresses: another
 *      incarnation under a member's id is refused (its empty replicas must never vote or
 *      acknowledge as the member that held the data), and it starts no PG replica.
 * Throughout, the map keeps node 2's addresses, node 2 keeps its traffic: its PG replicas stay
 * caught up and identical, and writes through its NBD gateway go on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePortRange } from '../../src/common/ports.js';
import { decodeMap } from '../../src/cluster/map.js';
import { logRecords, TestCluster, TestNode, waitFor, type NodeAddrs } from '../helpers/cluster.js';
import { HandPeer, metric } from '../helpers/hand-peer.js';
import { blockOps, requirePythonNbd } from './io.js';

const blocks = [0, 1, 2, 5, 17, 33, 100, 200];

async function writesAndReads(a: TestCluster, via: number, tag: string): Promise<void> {
  const w = await blockOps(a, via, 'write', blocks, { tag, timeoutS: 20 });
  assert.ok(w.every((x) => x.result === 'ok'), `writes via node ${via}: ${JSON.stringify(w)}`);
  for (const from of [1, via]) {
    const r = await blockOps(a, from, 'read', blocks, { timeoutS: 20 });
    assert.deepEqual(r.map((x) => x.value), blocks.map(() => tag), `reads via node ${from}: ${JSON.stringify(r)}`);
  }
}

test('join: a new node claiming a member id is refused (ALREADY_EXISTS); the member keeps its addresses and traffic', { timeout: 300_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const a = await TestCluster.start(t, { nodes: 4, pgCount: 4 });
  await a.waitCaughtUp();
  const before = await a.map();
  const clusterId = before.clusterId!;
  const real2 = before.nodes.find((n) => n.id === 2)!;
  await writesAndReads(a, 2, 'before');
  const taken = new Set(a.nodes.flatMap((n) => [n.addrs.peer, n.addrs.nbd, n.addrs.http]).map((x) => Number(x.split(':')[1])));
  const freshAddrs = async (): Promise<NodeAddrs> => {
    const p = await freePortRange(3, taken);
    for (let i = 0; i < 3; i++) taken.add(p + i);
    return { peer: `127.0.0.1:${p}`, nbd: `127.0.0.1:${p + 1}`, http: `127.0.0.1:${p + 2}` };
  };

  // (a) By hand: "node 2" without a cluster id, from other addresses, through node 1.
  const other = await freshAddrs();
  const peer = await HandPeer.open(a.node(1).addrs.peer, '2', '', undefined, a.clusterKey);
  t.after(() => peer.close());
  peer.send({ epoch: 0 });
  await waitFor("node 1's introduction", 10_000, async () => (peer.frames.length > 0 ? true : undefined));
  const refused = await peer.request(0, 'join', { cmd: { type: 'addNode', id: 2, addresses: other, labels: { zone: 'z2', rack: 'r2', host: 'h2' } } });
  assert.equal(refused.e?.code, 'ALREADY_EXISTS', refused.e ? JSON.stringify(refused.e) : 'the join was accepted');
  assert.match(refused.e!.message, new RegExp(`node 2 is already a member at peer ${real2.addresses.peer}, nbd ${real2.addresses.nbd}, http ${real2.addresses.http}`));
  assert.match(refused.e!.message, /remove it from the map first/);
  assert.ok(!peer.closed, 'a refused join closes its connection');
  // Another data dir at node 2's very addresses (a wiped disk): refused.
  assert.ok(real2.incarnation, 'node 2 registered without an incarnation');
  const wiped = await peer.request(0, 'join', { cmd: { type: 'addNode', id: 2, addresses: real2.addresses, labels: real2.labels, incarnation: 'feed'.repeat(4) } });
  assert.equal(wiped.e?.code, 'ALREADY_EXISTS', wiped.e ? JSON.stringify(wiped.e) : 'the join was accepted');
  assert.match(wiped.e!.message, new RegExp(`node 2 is a member whose data dir is incarnation ${real2.incarnation}`));
  // The same join from node 2's own addresses and data dir is idempotent: the map, as it was.
  const again = await peer.request(0, 'join', { cmd: { type: 'addNode', id: 2, addresses: real2.addresses, labels: real2.labels, incarnation: real2.incarnation } });
  assert.equal(again.e, undefined, JSON.stringify(again.e));
  const answer = again.r as { map: Uint8Array; clusterId: string };
  assert.equal(answer.clusterId, clusterId);
  assert.deepEqual(decodeMap(answer.map).nodes, before.nodes);
  peer.close();
  assert.equal(await metric(a.node(1).addrs.http, 'raftblock_transport_foreign_frames_total'), 0);

  // (b) A real node with a fresh data dir and node 2's id joins through node 1.
  const impostor = new TestNode(a, 2, join(a.dir, 'impostor-2'), await freshAddrs());
  t.after(() => impostor.kill9());
  impostor.joinVia = a.node(1).addrs.peer;
  await impostor.start();
  const refusal = await waitFor('the impostor is refused', 30_000, async () => logRecords(impostor, 'registration refused')[0]);
  assert.equal((refusal.err as { code?: string }).code, 'ALREADY_EXISTS', JSON.stringify(refusal));
  assert.notEqual((await fetch(`http://${impostor.addrs.http}/healthz`)).status, 200, 'the impostor registered');
  const identity = JSON.parse(readFileSync(join(impostor.dir, 'data', 'node.json'), 'utf8')) as { clusterId: string | null };
  assert.equal(identity.clusterId, null, 'the impostor learned the cluster id');
  // While it keeps asking, node 2 keeps its place and its traffic.
  await writesAndReads(a, 2, 'during');
  await impostor.stop();

  assert.deepEqual((await a.map()).nodes, before.nodes, "node 2's entry in the map changed");
  for (const n of a.nodes) assert.equal((await a.status(n.id)).epoch, before.epoch, `node ${n.id} saw the map change`);
  const s = await a.waitCaughtUp();
  for (const g of s.groups.filter((x) => x.replicas.includes(2))) {
    assert.ok(g.members.some((m) => m.nodeId === 2 && m.appliedIndex === g.commitIndex), `node 2 fell behind in group ${g.groupId}`);
  }
  assert.ok(s.groups.some((g) => g.groupId !== 0 && g.replicas.includes(2)), 'node 2 holds no PG replica');
  assert.equal(await a.waitReplicasIdentical(), 4);

  // (c) The node outside group 0 restarts on new ports: its re-registration, through the join
  // exchange with its cluster id, moves its addresses.
  const metaMembers = s.groups.find((g) => g.groupId === 0)!.replicas;
  const outsider = a.nodes.find((n) => !metaMembers.includes(n.id));
  assert.ok(outsider, `every node runs the metadata group: ${JSON.stringify(metaMembers)}`);
  await outsider.stop();
  const moved = new TestNode(a, outsider.id, outsider.dir, await freshAddrs());
  a.nodes[outsider.id - 1] = moved;
  await moved.start();
  await waitFor(`node ${moved.id} at its new addresses`, 30_000, async () =>
    (await a.map()).nodes.find((n) => n.id === moved.id)?.addresses.peer === moved.addrs.peer ? true : undefined,
  );
  assert.deepEqual(logRecords(moved, 'registration refused'), []);
  await a.waitLeaders();
  await writesAndReads(a, 2, 'after');
  assert.deepEqual((await a.map()).nodes.find((n) => n.id === 2), real2);

  // (d) Its data dir wiped, the same node starts again at the same addresses.
  const member = (await a.map()).nodes.find((n) => n.id === moved.id)!;
  await moved.stop();
  rmSync(join(moved.dir, 'data'), { recursive: true, force: true });
  const blank = new TestNode(a, moved.id, moved.dir, moved.addrs);
  t.after(() => blank.kill9());
  blank.joinVia = a.node(1).addrs.peer;
  await blank.start();
  const wipedRefusal = await waitFor('the wiped node is refused', 30_000, async () => logRecords(blank, 'registration refused')[0]);
  assert.equal((wipedRefusal.err as { code?: string }).code, 'ALREADY_EXISTS', JSON.stringify(wipedRefusal));
  assert.match(String((wipedRefusal.err as { message?: string }).message), new RegExp(`incarnation ${member.incarnation}`));
  assert.notEqual((await fetch(`http://${blank.addrs.http}/healthz`)).status, 200, 'the wiped node registered');
  const blankIdentity = JSON.parse(readFileSync(join(blank.dir, 'data', 'node.json'), 'utf8')) as { clusterId: string | null; incarnation: string };
  assert.equal(blankIdentity.clusterId, null, 'the wiped node learned the cluster id');
  assert.notEqual(blankIdentity.incarnation, member.incarnation);
  const pgDirs = existsSync(join(blank.dir, 'data', 'pgs')) ? readdirSync(join(blank.dir, 'data', 'pgs')) : [];
  assert.deepEqual(pgDirs, [], 'the wiped node started PG replicas');
  assert.deepEqual((await a.map()).nodes.find((n) => n.id === moved.id), member, 'the member entry changed');
  await writesAndReads(a, 2, 'wiped');
  await blank.stop();
});
