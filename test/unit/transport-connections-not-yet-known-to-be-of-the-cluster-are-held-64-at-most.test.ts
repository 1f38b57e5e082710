/**
 * A node held every connection it accepted: one not yet known to be of its cluster (no first
 * frame yet, or in the join exchange, which needs no membership) for 10 s each or, in the join
 * exchange, for as long as it lasted, and without a cluster key nothing else limited them, so a
 * client opening them without end used up the process's descriptors. At most
 * maxUnidentifiedConnections are held: one more is closed at once and counted, while the
 * connections of the cluster's nodes carry on and never count. And a connection still in the
 * join exchange joinExchangeLimitMs after its first frame is closed, freeing its place.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Registry } from 'prom-client';
import { encodeFrame } from '../../src/cluster/frame.js';
import { maxUnidentifiedConnections, Transport } from '../../src/cluster/transport.js';
import { closedWithin, dial, dialWatched } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';
import { listeningTransport } from '../helpers/transport.js';

function node(t: import('node:test').TestContext, registry: Registry, served: { n: number }, joinExchangeLimitMs?: number): Promise<Transport> {
  return listeningTransport(t, {
    clusterId: 'c1',
    registry,
    // Far past the test: only the cap may close a connection that says nothing.
    firstFrameTimeoutMs: 120_000,
    silentConnectionLimitMs: 120_000,
    joinExchangeLimitMs,
    handlers: {
      onMessages: () => undefined,
      onRequest: async () => {
        served.n++;
        return {};
      },
    },
  });
}

async function refusedCount(registry: Registry): Promise<number> {
  return (await registry.getSingleMetric('raftblock_transport_unidentified_connections_refused_total')!.get()).values[0].value;
}

/** A frame of node `from` of cluster c1 (or, with c '', of the join exchange) with one request. */
function frame(from: string, c: string, op: string, id: number): Buffer {
  return encodeFrame({ from, addr: '', epoch: 1, c, v: 1, reqs: [{ id, op, a: {} }] });
}

test('connections not known to be of the cluster are held up to the cap: one more is closed at once; the cluster\'s nodes carry on', async (t) => {
  const registry = new Registry();
  const served = { n: 0 };
  const tr = await node(t, registry, served);
  // A node of the cluster, connected before the flood.
  const member = await dialWatched(t, tr.address);
  member.s.write(frame('3', 'c1', 'ping', 1));
  await until(() => served.n === 1, 5000, 'the member served');
  // Half the cap says nothing; the other half is in the join exchange.
  const strangers: Socket[] = [];
  for (let i = 0; i < maxUnidentifiedConnections; i++) {
    const s = await dial(t, tr.address);
    if (i % 2 === 1) s.write(frame(String(100 + i), '', 'getMap', 1));
    strangers.push(s);
  }
  await until(() => served.n === 1 + maxUnidentifiedConnections / 2, 5000, 'the join exchange served');
  const over = await dial(t, tr.address);
  assert.equal(await closedWithin([over], 2000), 1, 'the connection past the cap was not closed at once');
  assert.equal(await closedWithin(strangers, 200), 0, 'a connection within the cap was closed');
  assert.equal(await refusedCount(registry), 1);
  // The member is undisturbed, and still served.
  assert.equal(member.closed(), false);
  assert.equal(tr.isConnected('3'), true);
  member.s.write(frame('3', 'c1', 'ping', 2));
  await until(() => served.n === 2 + maxUnidentifiedConnections / 2, 5000, 'the member served again');
  // A node of the cluster that dials now is one more that is not known yet: refused too, and
  // it gets in once a place is free (a closed connection, or one that shows the cluster id).
  assert.equal(await closedWithin([await dial(t, tr.address)], 2000), 1, 'the cap was not kept');
  strangers[0].destroy();
  // (Once the node has seen that close.)
  let late: Awaited<ReturnType<typeof dialWatched>> | undefined;
  await until(async () => {
    const c = await dialWatched(t, tr.address);
    if ((await closedWithin([c.s], 100)) === 0) late = c;
    return late !== undefined;
  }, 5000, 'a place freed by a closed connection taken');
  late!.s.write(frame('4', 'c1', 'ping', 1));
  await until(() => tr.isConnected('4'), 5000, 'node 4 bound');
  strangers[1].write(frame('101', 'c1', 'ping', 2));
  await until(() => tr.isConnected('101'), 5000, 'node 101 bound');
  // Two places are free: the closed connection's (taken by node 4, then freed by its frame) and node 101's.
  const more = [await dial(t, tr.address), await dial(t, tr.address)];
  assert.equal(await closedWithin(more, 300), 0, 'a place freed by a connection that showed the cluster id was not taken');
  const refused = await refusedCount(registry);
  assert.equal(await closedWithin([await dial(t, tr.address)], 2000), 1, 'the cap was not kept');
  assert.equal(await refusedCount(registry), refused + 1);
  assert.equal(late!.closed(), false);
});

test('a connection still in the join exchange after the limit is closed; one that showed the cluster id in time stays, as do members', async (t) => {
  const limitMs = 1500;
  const registry = new Registry();
  const served = { n: 0 };
  const tr = await node(t, registry, served, limitMs);
  const member = await dialWatched(t, tr.address);
  member.s.write(frame('3', 'c1', 'ping', 1));
  const lingering = await dialWatched(t, tr.address);
  const lingeringSince = Date.now();
  lingering.s.write(frame('100', '', 'getMap', 1));
  // A joiner's exchange, then its first frame with the cluster id, as a node's once its join is
  // answered (in one write: no stall of a loaded machine can put the limit between them).
  const joined = await dialWatched(t, tr.address);
  joined.s.write(Buffer.concat([frame('101', '', 'join', 1), frame('101', 'c1', 'ping', 2)]));
  // Read (and drop) the answers, so that each socket sees its end.
  for (const c of [member, lingering, joined]) c.s.resume();
  await until(() => served.n === 4 && tr.isConnected('101'), 5000, 'all served, node 101 bound');
  // The lingering one keeps asking for the map, well within the limit each time: it stays
  // until the limit, and is closed then.
  lingering.s.write(frame('100', '', 'getMap', 2));
  await until(() => served.n === 5, 5000, 'the second map request served');
  assert.equal(lingering.closed(), false, 'closed before the limit');
  await until(() => lingering.closed(), 10_000, 'the connection still in the join exchange closed');
  assert.ok(Date.now() - lingeringSince >= limitMs - 50, `closed after ${Date.now() - lingeringSince} ms, before the ${limitMs} ms limit`);
  // Past the joiner's own limit too: it and the member stay.
  assert.equal(await closedWithin([joined.s, member.s], 600), 0, 'a member, or a node that joined in time, was closed');
  assert.equal(tr.isConnected('3'), true);
  assert.equal(tr.isConnected('101'), true);
});

test('a node that learns the cluster id in its join exchange shows it at once on the connection it dialed: the seed takes it for a member', async (t) => {
  const registry = new Registry();
  const served = { n: 0 };
  const seed = await node(t, registry, served, 1000);
  const joiner = await listeningTransport(t, { nodeId: '7', clusterId: '', awaitingJoin: true });
  await joiner.requestAddress(seed.address, 'join', {}, 5000);
  assert.equal(seed.isConnected('7'), false, 'the seed took a connection in the join exchange for a member');
  // As a node does with its join answer; it sends nothing else to the seed.
  joiner.setClusterId('c1');
  await until(() => seed.isConnected('7'), 5000, 'the seed bound node 7');
  // And keeps it past the join-exchange limit.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(seed.isConnected('7'), true, 'the seed closed a connection that showed the cluster id');
});
