/**
 * Cluster identity: the map's cluster id (set once by setClusterId), the frame field that
 * carries a sender's cluster id, and the transport's check: a node that knows its cluster id
 * refuses frames of another cluster, or without an id outside the join exchange, closing only
 * that connection; a new node waiting for its join answer takes nothing but answers; a node
 * whose state predates cluster ids takes everything; a frame under a member id from another data
 * dir (incarnation) than the map records is refused. `raftblock status` names the cluster.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { Registry } from 'prom-client';
import type { Transport } from '../../src/cluster/transport.js';
import { encodeFrame, FrameDecoder, maxFrameClusterIdChars, wireProtocolVersion, type Frame, type GroupMessage } from '../../src/cluster/frame.js';
import { HandPeer } from '../helpers/hand-peer.js';
import { applyCommand, decodeMap, emptyMap, encodeMap } from '../../src/cluster/map.js';
import { startEchoTransport } from '../helpers/echo-transport.js';
import { ProtocolError } from '../../src/common/errors.js';
import { mergeClusterStatus, type GroupStatus, type NodeStatus } from '../../src/cluster/admin-client.js';
import { renderStatus } from '../../src/cli/commands/status.js';
import { zonedMap } from '../helpers/map.js';
import { until } from '../helpers/until.js';
import { transportWithBoundPeer } from '../helpers/transport.js';

test('setClusterId names the cluster once: the same id changes nothing, another is refused', () => {
  const id = randomUUID();
  const r = applyCommand(emptyMap(), { type: 'setClusterId', id });
  assert.ok(r.ok && r.changed);
  assert.equal(r.map.clusterId, id);
  assert.equal(r.map.epoch, 1);
  assert.equal(decodeMap(encodeMap(r.map)).clusterId, id, 'the id survives the map codec (group-0 snapshots, map-cache.bin)');
  const again = applyCommand(r.map, { type: 'setClusterId', id });
  assert.ok(again.ok && !again.changed && again.map === r.map);
  const other = applyCommand(r.map, { type: 'setClusterId', id: randomUUID() });
  assert.ok(!other.ok && other.error.code === 'INVALID_ARGUMENT');
  for (const bad of ['', 'a b', 'x'.repeat(65), 7]) {
    const b = applyCommand(emptyMap(), { type: 'setClusterId', id: bad as string });
    assert.ok(!b.ok && b.error.code === 'INVALID_ARGUMENT', `accepted ${JSON.stringify(bad)}`);
  }
  assert.equal(emptyMap().clusterId, undefined);
});

test('frames carry the cluster id through the decoder, cut at any chunk boundaries', () => {
  const idArb = fc.oneof(fc.constant(''), fc.uuid(), fc.string({ maxLength: maxFrameClusterIdChars }));
  fc.assert(
    fc.property(
      fc.array(fc.record({ c: fc.option(idArb, { nil: undefined }), epoch: fc.nat(), payload: fc.uint8Array({ maxLength: 3000 }) }), { minLength: 1, maxLength: 5 }),
      fc.integer({ min: 1, max: 4000 }),
      (specs, cut) => {
        const frames: Frame[] = specs.map((s) => ({ from: '1', addr: 'a:1', epoch: s.epoch, ...(s.c === undefined ? {} : { c: s.c }), msgs: [{ g: 1, m: { data: s.payload } }] }));
        const bytes = Buffer.concat(frames.map((f) => encodeFrame(f)));
        const d = new FrameDecoder();
        const out: Frame[] = [];
        for (let at = 0; at < bytes.length; at += cut) out.push(...d.push(bytes.subarray(at, at + cut)));
        assert.equal(out.length, frames.length);
        for (let i = 0; i < frames.length; i++) {
          assert.equal(out[i].c, frames[i].c);
          assert.equal(out[i].epoch, frames[i].epoch);
          assert.deepEqual(Buffer.from((out[i].msgs![0].m as { data: Uint8Array }).data), Buffer.from(specs[i].payload));
        }
      },
    ),
    { numRuns: 200 },
  );
});

test('a cluster id that is not a string, or too long, is a protocol error', () => {
  assert.throws(() => new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, c: 7 as unknown as string })), ProtocolError);
  assert.throws(() => new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, c: 'x'.repeat(maxFrameClusterIdChars + 1) })), ProtocolError);
  assert.equal(new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, c: 'x'.repeat(maxFrameClusterIdChars) }))[0].c?.length, maxFrameClusterIdChars);
});

interface Node {
  t: Transport;
  got: { from: string; msgs: GroupMessage[] }[];
  served: string[];
  /** Per request served: whether it came as the join exchange of a node without the cluster id. */
  joining: boolean[];
  foreign: () => Promise<number>;
  staleIncarnations: () => Promise<number>;
  registry: Registry;
}

/** `incarnations`: this node's own and the map's view of every node's (incarnationOf). */
async function node(
  t: import('node:test').TestContext,
  id: string,
  clusterId: string | undefined,
  awaitingJoin = false,
  incarnations?: { self: string; map: Map<string, string> },
): Promise<Node> {
  const n = await startEchoTransport(t, {
    nodeId: id,
    clusterId,
    awaitingJoin,
    ...(incarnations ? { incarnation: incarnations.self, incarnationOf: (peer: string) => incarnations.map.get(peer) } : {}),
  });
  return {
    t: n.t,
    got: n.got,
    get served() {
      return n.requests.map((r) => r.op);
    },
    get joining() {
      return n.requests.map((r) => r.joining);
    },
    foreign: () => n.counter('raftblock_transport_foreign_frames_total'),
    staleIncarnations: () => n.counter('raftblock_transport_stale_incarnation_frames_total'),
    registry: n.registry,
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('a node of another cluster with the same node id is refused; the real peer is undisturbed', async (t) => {
  const A = randomUUID();
  const B = randomUUID();
  const a1 = await node(t, '1', A);
  const a2 = await node(t, '2', A);
  const b2 = await node(t, '2', B);
  a2.t.setPeerAddress('1', a1.t.address);
  assert.deepEqual(await a2.t.request('1', 'echo', 1), { from: '2', op: 'echo', args: 1 });
  assert.ok(a1.t.isConnected('2'));

  // Node 2 of cluster B believes node 1 listens where A's node 1 does (a reused port).
  b2.t.setPeerAddress('1', a1.t.address);
  b2.t.send('1', 7, { type: 'app', from: 2, term: 99 });
  await assert.rejects(b2.t.request('1', 'echo', 'intruder', 3000), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  await until(async () => (await a1.foreign()) >= 1);
  // A's node 1 saw nothing of it, and still talks to its own node 2, both ways.
  assert.ok(!a1.got.some((g) => g.msgs.some((m) => m.g === 7)), 'a Raft message of another cluster was delivered');
  assert.deepEqual(a1.served, ['echo'], 'a request of another cluster was served');
  assert.ok(a1.t.isConnected('2'), 'the refusal closed the connection of the real node 2');
  assert.deepEqual(await a1.t.request('2', 'echo', 2), { from: '1', op: 'echo', args: 2 });
  a2.t.send('1', 3, { type: 'heartbeat' });
  await until(() => a1.got.some((g) => g.from === '2' && g.msgs.some((m) => m.g === 3)));

  // The refused node backs off instead of redialing in a tight loop.
  const before = await a1.foreign();
  b2.t.send('1', 8, { type: 'heartbeat' });
  await until(async () => (await a1.foreign()) > before, 10_000, 'the message of another cluster refused');
  // Counted from the first refusal on: at most a few redials in 1.5 s, not a tight loop.
  const first = await a1.foreign();
  await sleep(1500);
  const refusals = (await a1.foreign()) - first;
  assert.ok(refusals <= 10, `${refusals} more refused frames in 1.5 s after the first`);
});

test("a node of this cluster under a member's id but from another data dir (incarnation) is refused; the member is undisturbed", async (t) => {
  const A = randomUUID();
  // The map as node 1 sees it: node 2 is the data dir of incarnation 2222…; node 3 predates
  // incarnations (none recorded), so any is taken from it.
  const map = new Map([
    ['1', '1'.repeat(16)],
    ['2', '2'.repeat(16)],
  ]);
  const a1 = await node(t, '1', A, false, { self: '1'.repeat(16), map });
  const a2 = await node(t, '2', A, false, { self: '2'.repeat(16), map });
  const stale2 = await node(t, '2', A, false, { self: 'dead'.repeat(4), map });
  const a3 = await node(t, '3', A, false, { self: '3'.repeat(16), map });
  const staleCount = a1.staleIncarnations;
  a2.t.setPeerAddress('1', a1.t.address);
  assert.deepEqual(await a2.t.request('1', 'echo', 1), { from: '2', op: 'echo', args: 1 });

  // A removed node 2 still running (or a wiped one): same cluster, same id, another data dir.
  stale2.t.setPeerAddress('1', a1.t.address);
  stale2.t.send('1', 7, { type: 'appResp', from: 2, term: 99 });
  await assert.rejects(stale2.t.request('1', 'echo', 'stale', 3000), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  await until(async () => (await staleCount()) >= 1);
  assert.ok(!a1.got.some((g) => g.msgs.some((m) => m.g === 7)), 'a Raft message of a stale incarnation was delivered');
  assert.deepEqual(a1.served, ['echo'], 'a request of a stale incarnation was served');
  assert.equal(await a1.foreign(), 0, 'counted as another cluster');
  // Node 1 still reaches the real node 2, both ways, on the address the map's node 2 gave.
  assert.ok(a1.t.isConnected('2'), 'the refusal closed the connection of the real node 2');
  assert.deepEqual(await a1.t.request('2', 'echo', 2), { from: '1', op: 'echo', args: 2 });
  a2.t.send('1', 3, { type: 'heartbeat' });
  await until(() => a1.got.some((g) => g.from === '2' && g.msgs.some((m) => m.g === 3)));
  // An id the map records no incarnation for is taken as before.
  a3.t.setPeerAddress('1', a1.t.address);
  assert.deepEqual(await a3.t.request('1', 'echo', 3), { from: '3', op: 'echo', args: 3 });
  // The map moves on (node 2 removed, a fresh data dir took its id): now the old one is refused.
  map.set('2', 'beef'.repeat(4));
  a2.t.send('1', 4, { type: 'heartbeat' });
  await until(async () => (await staleCount()) >= 2);
  await sleep(200);
  assert.ok(!a1.got.some((g) => g.msgs.some((m) => m.g === 4)), 'a message of the replaced incarnation was delivered');
  assert.ok(!a1.t.isConnected('2'));
});

test('without a cluster id only the join exchange is served; a request or message closes the connection', async (t) => {
  const A = randomUUID();
  const a1 = await node(t, '1', A);
  // A node whose state predates cluster ids (no id, takes everything) asks to join, and for the map.
  const legacy = await node(t, '5', undefined);
  assert.deepEqual(await legacy.t.requestAddress(a1.t.address, 'join', { x: 1 }), { from: '5', op: 'join', args: { x: 1 } });
  assert.equal(((await legacy.t.request('1', 'getMap', {})) as { op: string }).op, 'getMap');
  assert.equal(await a1.foreign(), 0);
  await assert.rejects(legacy.t.request('1', 'io', {}, 3000), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  assert.equal(await a1.foreign(), 1);
  assert.deepEqual(a1.served, ['join', 'getMap']);
  // It takes frames of any cluster (as before ids existed): A's node 1 reaches it, at the
  // address its join put in the map (a join connection never sets a peer's address).
  a1.t.setPeerAddress('5', legacy.t.address);
  a1.t.send('5', 4, { type: 'heartbeat' });
  await until(() => legacy.got.some((g) => g.from === '1'));
  // Once it knows the id, it is one of A's nodes.
  legacy.t.setClusterId(A);
  assert.equal(((await legacy.t.request('1', 'io', 1)) as { op: string }).op, 'io');
});

test('a new node waiting for its join answer takes only answers, then its cluster once it knows the id', async (t) => {
  const A = randomUUID();
  const a1 = await node(t, '1', A);
  const fresh = await node(t, '4', undefined, true);
  assert.equal(((await fresh.t.requestAddress(a1.t.address, 'join', {})) as { op: string }).op, 'join');
  // Before it knows its cluster it takes part in nothing: no Raft message, no request.
  a1.t.send('4', 9, { type: 'heartbeat' });
  // (Its connection is not bound as node 4's and its address is not known yet: refused at once.)
  await assert.rejects(a1.t.request('4', 'echo', 1, 300), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  // Nor does it take connections others open: nodes of any cluster may dial its address.
  const other = await node(t, '7', A);
  other.t.setPeerAddress('4', fresh.t.address);
  await assert.rejects(other.t.request('4', 'echo', 1, 3000), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  assert.equal(fresh.got.length, 0);
  assert.deepEqual(fresh.served, []);
  assert.equal(await fresh.foreign(), 0, 'refused as not yet joined, not as foreign');
  fresh.t.setClusterId(A);
  // The seed reaches it at the address its join put in the map.
  a1.t.setPeerAddress('4', fresh.t.address);
  a1.t.send('4', 10, { type: 'heartbeat' });
  await until(() => fresh.got.some((g) => g.msgs.some((m) => m.g === 10)));
  assert.deepEqual(await a1.t.request('4', 'echo', 2), { from: '1', op: 'echo', args: 2 });
  // A frame of another cluster now closes its connection, on the new node too.
  const b = await node(t, '1', randomUUID());
  b.t.setPeerAddress('4', fresh.t.address);
  b.t.send('4', 11, { type: 'heartbeat' });
  await until(async () => (await fresh.foreign()) >= 1);
  assert.ok(!fresh.got.some((g) => g.msgs.some((m) => m.g === 11)));
});

test("a join without a cluster id claiming a member's id is answered on its own connection; the member keeps its connection and address", async (t) => {
  const A = randomUUID();
  const a1 = await node(t, '1', A);
  const a2 = await node(t, '2', A);
  // The real node 2 talks to node 1 on a connection it opened (the one a same-id dialer would replace).
  a2.t.setPeerAddress('1', a1.t.address);
  assert.deepEqual(await a2.t.request('1', 'echo', 1), { from: '2', op: 'echo', args: 1 });
  assert.equal(a1.t.peerAddress('2'), a2.t.address);

  // A node with a wiped data dir (no cluster id) claims id 2 and joins through node 1.
  const wiped = await node(t, '2', undefined, true);
  assert.deepEqual(await wiped.t.requestAddress(a1.t.address, 'join', { x: 2 }), { from: '2', op: 'join', args: { x: 2 } });
  assert.deepEqual(a1.joining, [false, true], 'the join was not marked as coming from a node without the cluster id');
  assert.deepEqual(await wiped.t.request('1', 'getMap', {}), { from: '2', op: 'getMap', args: {} });
  // Node 1 still knows node 2 where the real one listens, and still talks to it on its connection.
  assert.equal(a1.t.peerAddress('2'), a2.t.address, "the join overwrote the member's address");
  assert.ok(a1.t.isConnected('2'));
  assert.deepEqual(await a1.t.request('2', 'echo', 3), { from: '1', op: 'echo', args: 3 });
  assert.deepEqual(a2.served, ['echo'], 'the real node 2 did not get the request meant for it');
  a1.t.send('2', 5, { type: 'heartbeat' });
  await until(() => a2.got.some((g) => g.from === '1' && g.msgs.some((m) => m.g === 5)));
  assert.equal(wiped.got.length, 0, 'traffic of the real node 2 went to the wiped one');
  a2.t.send('1', 6, { type: 'heartbeat' });
  await until(() => a1.got.some((g) => g.from === '2' && g.msgs.some((m) => m.g === 6)));
  assert.equal(await a1.foreign(), 0);

  // A new node's join connection becomes its connection once it speaks with the cluster id.
  const fresh = await node(t, '4', undefined, true);
  await fresh.t.requestAddress(a1.t.address, 'join', {});
  assert.equal(a1.t.isConnected('4'), false);
  fresh.t.setClusterId(A);
  assert.deepEqual(await fresh.t.request('1', 'echo', 4), { from: '4', op: 'echo', args: 4 });
  assert.deepEqual(a1.joining.slice(-2), [true, false]);
  assert.ok(a1.t.isConnected('4'));
  assert.deepEqual(await a1.t.request('4', 'echo', 5), { from: '1', op: 'echo', args: 5 });
});

test('status names the cluster, and a node that answers for another cluster is not counted as one of its own', () => {
  const id = randomUUID();
  const named = applyCommand(zonedMap(3, 1), { type: 'setClusterId', id });
  assert.ok(named.ok);
  const map = named.map;
  const replicas = map.pools[0].pgs[0].replicas;
  const group: GroupStatus = { groupId: 65536, role: 'leader', term: 3, leader: replicas[0], commitIndex: 9, appliedIndex: 9, lastIndex: 9, voters: replicas };
  const statuses = new Map<number, NodeStatus | Error>(replicas.map((n) => [n, { nodeId: n, clusterId: id, epoch: map.epoch, uptimeMs: 1, groups: n === replicas[0] ? [group] : [] }]));
  // Another cluster's node on the address of the PG's leader: it says it leads, it does not count.
  statuses.set(replicas[0], { nodeId: replicas[0], clusterId: randomUUID(), epoch: 1, uptimeMs: 1, groups: [group] });
  const s = mergeClusterStatus('x', map, statuses);
  assert.equal(s.clusterId, id);
  const impostor = s.nodes.find((n) => n.id === replicas[0])!;
  assert.equal(impostor.reachable, false);
  assert.match(impostor.error!, /answers as a node of cluster/);
  assert.equal(s.groups.find((g) => g.groupId === 65536)!.leader, 0);
  assert.deepEqual(s.nodes.filter((n) => n.reachable).map((n) => n.clusterId), [id, id]);
  assert.match(renderStatus(s, { problemsOnly: true }), new RegExp(`^cluster ${id}; map epoch ${map.epoch} `));
  assert.match(renderStatus(mergeClusterStatus('x', zonedMap(3, 1), new Map()), { problemsOnly: true }), /^cluster \(no id yet\); map epoch/);
});

test('a frame of a newer wire protocol is refused before anything in it is read; older and unversioned frames are served', async (t) => {
  const A = randomUUID();
  const a1 = await node(t, '1', A);
  const a2 = await node(t, '2', A);
  a2.t.setPeerAddress('1', a1.t.address);
  assert.deepEqual(await a2.t.request('1', 'echo', 'v-now'), { from: '2', op: 'echo', args: 'v-now' });
  // A node one protocol ahead (a later build) sends a Raft message and a request.
  const ahead = await HandPeer.open(a1.t.address, '3', A);
  t.after(() => ahead.socket.destroy());
  ahead.send({ epoch: 1, v: wireProtocolVersion + 1, msgs: [{ g: 9, m: { type: 'app', from: 3, to: 1, term: 5 } }], reqs: [{ id: 1, op: 'echo', a: 'ahead' }] });
  await until(() => ahead.closed);
  const refused = (await a1.registry.getSingleMetric('raftblock_transport_newer_protocol_frames_total')!.get()).values[0]?.value;
  assert.equal(refused, 1);
  assert.ok(!a1.got.some((g) => g.msgs.some((m) => m.g === 9)), 'a message of a newer protocol was delivered');
  assert.ok(!a1.served.includes('ahead') && a1.served.every((op) => op === 'echo'), 'a request of a newer protocol was served');
  // The node's own peers are undisturbed; a frame naming this protocol, or none (a build from
  // before versions), is served.
  assert.deepEqual(await a2.t.request('1', 'echo', 'still'), { from: '2', op: 'echo', args: 'still' });
  for (const v of [wireProtocolVersion, undefined]) {
    const peer = await HandPeer.open(a1.t.address, '4', A);
    t.after(() => peer.socket.destroy());
    peer.send({ epoch: 1, ...(v === undefined ? {} : { v }), reqs: [{ id: 1, op: 'echo', a: String(v) }] });
    await until(() => peer.frames.some((f) => f.resps?.length));
    const r = peer.frames.flatMap((f) => f.resps ?? [])[0];
    assert.deepEqual(r.r, { from: '4', op: 'echo', args: String(v) }, `a frame of protocol ${v} was not served`);
    assert.ok(!peer.closed, `a frame of protocol ${v} closed its connection`);
    assert.ok(peer.frames.every((f) => f.v === wireProtocolVersion), 'every frame names its protocol');
  }
});

test('a wire protocol that is not a small positive integer is a protocol error', () => {
  for (const v of [0, -1, 1.5, 0x10000, '1']) {
    assert.throws(() => new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, v: v as number })), ProtocolError, `accepted v=${JSON.stringify(v)}`);
  }
  assert.equal(new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, v: wireProtocolVersion }))[0].v, wireProtocolVersion);
});

test('a store command level on a frame is a small positive integer or absent; a transport remembers each member\'s', async (t) => {
  for (const s of [0, -1, 1.5, 0x10000, '3']) {
    assert.throws(() => new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, s: s as number })), ProtocolError, `accepted s=${JSON.stringify(s)}`);
  }
  assert.equal(new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 0, s: 3 }))[0].s, 3);

  // A member's frames: none yet, then a frame without a level (a build before levels: 1), then 2.
  const { tr, peer } = await transportWithBoundPeer(t, { storeOpsLevel: 3 });
  assert.equal(tr.storeOpsLevelOf('3'), 1, 'a frame that names no level is level 1');
  assert.equal(tr.storeOpsLevelOf('4'), undefined, 'a node never heard from has none');
  peer.s.write(encodeFrame({ from: '3', addr: '', epoch: 1, s: 2 }));
  await until(() => tr.storeOpsLevelOf('3') === 2, 5000, 'node 3 told level 2');
});
