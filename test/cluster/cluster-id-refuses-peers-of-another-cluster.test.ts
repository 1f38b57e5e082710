/**
 * Cluster identity on real processes: two clusters, A (3 nodes) and B (2 nodes), with the same
 * node ids, each with its own cluster id (in its map, in every node's node.json, and in
 * `raftblock status`). Then B's nodes reach for A's peer ports:
 *  (a) a hand-made peer speaking as B's node 2 with B's id: A refuses it (connection closed,
 *      counted); without an id only the join exchange passes, and a join may only add a node;
 *  (b) a node of B (its node.json holds B's id) that joins through A's seed: A refuses every
 *      attempt, and the node stays out of A's map;
 *  (c) a node of B started on the peer address of A's stopped node 3 (a reused port): it
 *      refuses A's nodes when they dial what they take for node 3.
 * Throughout, A's map is unchanged, its data too, and it keeps serving I/O; node 3 of A,
 * restarted, rejoins with its cluster id and its replicas match the others'.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePortRange } from '../../src/common/ports.js';
import { logRecords, TestCluster, TestNode, waitFor } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import { HandPeer, metric } from '../helpers/hand-peer.js';
import { blockOps, requirePythonNbd } from './io.js';
import type { ClusterStatus } from '../../src/cluster/admin-client.js';

const foreignMetric = 'raftblock_transport_foreign_frames_total';
const blocks = [0, 1, 2, 3, 17, 33, 100, 511];

function nodeJson(n: TestNode): { id: number; clusterId: string | null; incarnation: string } {
  return JSON.parse(readFileSync(join(n.dir, 'data', 'node.json'), 'utf8')) as { id: number; clusterId: string | null; incarnation: string };
}

async function readsAll(a: TestCluster, via: number, tag: string): Promise<void> {
  const r = await blockOps(a, via, 'read', blocks, { timeoutS: 20 });
  assert.deepEqual(r.map((x) => x.value), blocks.map(() => tag), `reads via node ${via}: ${JSON.stringify(r)}`);
}

test('cluster id: nodes of another cluster are refused on the peer port; the cluster keeps its map, data and I/O', { timeout: 240_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const a = await TestCluster.start(t, { nodes: 3, pgCount: 4 });
  // The same key as A (an operator who reuses one): what keeps them apart is the cluster id.
  const b = await TestCluster.start(t, { nodes: 2, pgCount: 2, clusterKeyFile: a.clusterKeyFile });
  const mapA = await a.map();
  const idA = mapA.clusterId!;
  const idB = (await b.map()).clusterId!;
  assert.match(idA, /^[0-9a-f-]{36}$/, `cluster A's map has no cluster id: ${JSON.stringify(mapA.clusterId)}`);
  assert.match(idB, /^[0-9a-f-]{36}$/);
  assert.notEqual(idA, idB);
  // Every node keeps its cluster's id in its own state (the joined ones learned it from the join).
  // ... next to the data dir's incarnation, which the map records for the node.
  for (const [c, id] of [[a, idA], [b, idB]] as const) {
    const map = await c.map();
    for (const n of c.nodes) {
      const { incarnation, ...rest } = nodeJson(n);
      assert.deepEqual(rest, { id: n.id, clusterId: id });
      assert.match(incarnation, /^[0-9a-f]{16}$/);
      assert.equal(map.nodes.find((m) => m.id === n.id)?.incarnation, incarnation);
    }
  }
  // `raftblock status` names the cluster, and every node reports it.
  const json = await runCli(['status', '--json', '--server', a.node(2).addrs.http]);
  assert.equal(json.code, 0, json.stderr);
  const status = JSON.parse(json.stdout) as ClusterStatus;
  assert.equal(status.clusterId, idA);
  assert.deepEqual(status.nodes.map((n) => n.clusterId), [idA, idA, idA]);
  const plain = await runCli(['status', '--server', b.node(1).addrs.http]);
  assert.match(plain.stdout, new RegExp(`^cluster ${idB}; map epoch`), plain.stdout);

  const w = await blockOps(a, 1, 'write', blocks, { tag: 'before', timeoutS: 20 });
  assert.ok(w.every((x) => x.result === 'ok'), JSON.stringify(w));
  const foreignA1 = async (): Promise<number> => metric(a.node(1).addrs.http, foreignMetric);
  assert.equal(await foreignA1(), 0, 'frames of its own cluster counted as foreign');

  // (a) By hand: B's node 2 (with B's id) at A's node 1, with a Raft message and a request.
  const peers: HandPeer[] = [];
  t.after(() => peers.forEach((p) => p.close()));
  const open = async (from: string, clusterId: string): Promise<HandPeer> => {
    const p = await HandPeer.open(a.node(1).addrs.peer, from, clusterId, undefined, a.clusterKey);
    peers.push(p);
    return p;
  };
  const intruder = await open('2', idB);
  intruder.send({ epoch: mapA.epoch + 5, msgs: [{ g: 0, m: { type: 'heartbeat', from: 2, to: 1, term: 1000, commit: 0, seq: 1, tick: 1 } }], reqs: [{ id: 1, op: 'getMap', a: {} }] });
  await waitFor('A closes the connection of another cluster', 10_000, async () => (intruder.closed ? true : undefined));
  assert.equal(intruder.frames.length, 0, 'A answered a node of another cluster');
  assert.equal(await foreignA1(), 1);
  // Without an id (a new node): only the join exchange (here a map read) is answered ...
  const stranger = await open('9', '');
  const got = await stranger.request(0, 'getMap', {});
  assert.equal(got.e, undefined, JSON.stringify(got.e));
  // ... and a join only registers a node: anything else is refused, the connection kept.
  const sneaky = await stranger.request(0, 'join', { cmd: { type: 'deleteVolume', name: 'vol0' } });
  assert.equal(sneaky.e?.code, 'INVALID_ARGUMENT', JSON.stringify(sneaky));
  assert.ok(!stranger.closed);
  // Any other request without an id closes the connection.
  stranger.send({ epoch: mapA.epoch, reqs: [{ id: 99, op: 'meta', a: { cmd: { type: 'deleteVolume', name: 'vol0' } } }] });
  await waitFor('A closes the connection without an id', 10_000, async () => (stranger.closed ? true : undefined));
  assert.equal(await foreignA1(), 2);
  const warned = logRecords(a.node(1), 'refusing a peer of another cluster: connection closed');
  assert.ok(
    warned.some((r) => r.cluster === idA && r.peerCluster === idB && r.peerNode === '2' && typeof r.remote === 'string' && (r.remote as string).startsWith('127.0.0.1:')),
    `no warning naming both clusters and the remote address: ${JSON.stringify(warned)}`,
  );

  // (b) A node of B (node.json holds B's id) joins through A's seed: refused, again and again.
  const taken = new Set([...a.nodes, ...b.nodes].flatMap((n) => [n.addrs.peer, n.addrs.nbd, n.addrs.http]).map((x) => Number(x.split(':')[1])));
  const port4 = await freePortRange(3, taken);
  for (let i = 0; i < 3; i++) taken.add(port4 + i);
  const b4 = new TestNode(b, 4, join(b.dir, 'node-4'), { peer: `127.0.0.1:${port4}`, nbd: `127.0.0.1:${port4 + 1}`, http: `127.0.0.1:${port4 + 2}` });
  b.nodes.push(b4);
  mkdirSync(join(b4.dir, 'data'), { recursive: true });
  writeFileSync(join(b4.dir, 'data', 'node.json'), JSON.stringify({ id: 4, clusterId: idB }) + '\n');
  b4.joinVia = a.node(1).addrs.peer;
  const before = await foreignA1();
  await b4.start();
  await waitFor('A refuses the join of a node of B', 20_000, async () => ((await foreignA1()) >= before + 2 ? true : undefined));
  assert.ok(
    logRecords(a.node(1), 'refusing a peer of another cluster: connection closed').some((r) => r.peerCluster === idB && r.remote !== undefined),
    'no warning for the join of a node of B',
  );
  assert.equal(nodeJson(b4).clusterId, idB, 'the node of B changed its cluster');
  const h = await fetch(`http://${b4.addrs.http}/healthz`);
  assert.notEqual(h.status, 200, 'a node of B registered through A');
  await b4.stop();

  // (c) A's node 3 stops; a new node of B (id 3) comes up on its peer address.
  await a.node(3).stop();
  const nbdPort = await freePortRange(2, taken);
  const b3 = new TestNode(b, 3, join(b.dir, 'node-3'), { peer: a.node(3).addrs.peer, nbd: `127.0.0.1:${nbdPort}`, http: `127.0.0.1:${nbdPort + 1}` });
  b.nodes.push(b3);
  await b3.start();
  await waitFor('the node of B on the reused address joins B', 30_000, async () => ((await b.map()).nodes.some((n) => n.id === 3) ? true : undefined));
  // The map lists it once group 0 commits its join; it saves B's id when the answer reaches it.
  await waitFor('the node of B stores its cluster id', 10_000, async () => (nodeJson(b3).clusterId === idB ? true : undefined));
  // A's nodes send node 3's Raft traffic there: the node of B refuses it.
  await waitFor('the node of B refuses A', 20_000, async () => ((await metric(b3.addrs.http, foreignMetric)) > 0 ? true : undefined));
  assert.ok(logRecords(b3, 'refusing a peer of another cluster: connection closed').some((r) => r.cluster === idB && r.peerCluster === idA));

  // A: the same map, the same data, and it keeps serving reads and writes.
  assert.deepEqual(await a.map(), mapA, "A's map changed");
  for (const n of [1, 2]) assert.equal((await a.status(n)).epoch, mapA.epoch);
  await readsAll(a, 2, 'before');
  const w2 = await blockOps(a, 2, 'write', blocks, { tag: 'after', timeoutS: 20 });
  assert.ok(w2.every((x) => x.result === 'ok'), JSON.stringify(w2));
  await readsAll(a, 1, 'after');
  // B was not disturbed either.
  assert.ok((await b.map()).nodes.every((n) => n.addresses.peer !== a.node(1).addrs.peer && n.addresses.peer !== a.node(2).addrs.peer));

  // A's node 3 comes back on its address: it rejoins with its id, and catches up.
  await b3.stop();
  await a.node(3).start();
  await a.waitLeaders();
  assert.equal((await a.status(3)).clusterId, idA);
  assert.equal(await a.waitReplicasIdentical(), 4);
  await readsAll(a, 3, 'after');
  assert.deepEqual((await a.map()).nodes, mapA.nodes);
});
