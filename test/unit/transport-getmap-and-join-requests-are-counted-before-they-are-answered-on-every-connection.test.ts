/**
 * A `getMap` or `join` request is answered with the whole map (or builds it): the join exchange
 * was held to maxJoinExchangeRequestsInFlight of them at once, counted before any is answered,
 * but a frame that carried the cluster id (which the map itself names, to anyone who asked for
 * it) had every request served at once: thousands of getMap requests in one frame were each
 * answered with the whole map before the write queue's check saw the first answer. The count
 * now applies to these requests on every connection; no node asks more than one at a time of
 * one peer. Other requests of the cluster (forwarded I/O at queue depth) are not held to it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, type RpcRequest } from '../../src/cluster/frame.js';
import { maxJoinExchangeRequestsInFlight, Transport } from '../../src/cluster/transport.js';
import { dialWatched } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';
import { listeningTransport } from '../helpers/transport.js';

/** Stands in for the map a node answers getMap with. */
const mapBytes = Buffer.alloc(4096, 7);

function node(t: import('node:test').TestContext, served: Map<string, number>): Promise<Transport> {
  return listeningTransport(t, {
    clusterId: 'c1',
    handlers: {
      onMessages: () => undefined,
      onRequest: async (_from, _epoch, op) => {
        served.set(op, (served.get(op) ?? 0) + 1);
        return op === 'getMap' ? { map: mapBytes } : {};
      },
    },
  });
}

/** A frame of node 3 of cluster c1 (a member, not the join exchange) carrying `reqs`. */
function memberFrame(reqs: RpcRequest[]): Buffer {
  return encodeFrame({ from: '3', addr: '', epoch: 1, c: 'c1', v: 1, reqs });
}

function requests(op: string, firstId: number, n: number): RpcRequest[] {
  return Array.from({ length: n }, (_, i) => ({ id: firstId + i, op, a: {} }));
}

for (const op of ['getMap', 'join']) {
  test(`a frame of the cluster asking for thousands of ${op} at once is refused unanswered, its connection closed`, async (t) => {
    const served = new Map<string, number>();
    const tr = await node(t, served);
    const other = await dialWatched(t, tr.address);
    other.s.write(encodeFrame({ from: '4', addr: '', epoch: 1, c: 'c1', v: 1 }));
    await until(() => tr.isConnected('4'), 5000, 'node 4 bound');
    const c = await dialWatched(t, tr.address);
    c.s.resume();
    c.s.write(memberFrame(requests(op, 1, 5_000)));
    await until(() => c.closed(), 5000, 'the connection closed');
    assert.equal(served.get(op) ?? 0, 0, `${op} requests served`);
    // Only that connection: another member's stays up.
    assert.equal(other.closed(), false);
    assert.equal(tr.isConnected('4'), true);
  });
}

test('a member asking for the map a few at a time, and reading the answers, is answered every time', async (t) => {
  const served = new Map<string, number>();
  const tr = await node(t, served);
  const c = await dialWatched(t, tr.address);
  let got = 0;
  c.s.on('data', (d: Buffer) => (got += d.length));
  for (let round = 0; round < 20; round++) {
    c.s.write(memberFrame(requests('getMap', 1 + round * maxJoinExchangeRequestsInFlight, maxJoinExchangeRequestsInFlight)));
    const want = (round + 1) * maxJoinExchangeRequestsInFlight * mapBytes.length;
    await until(() => got >= want, 5000, `round ${round} answered`);
  }
  assert.equal(c.closed(), false);
  assert.equal(served.get('getMap'), 20 * maxJoinExchangeRequestsInFlight);
});

test('other requests of the cluster are not held to the count: a frame of a thousand is served whole', async (t) => {
  const served = new Map<string, number>();
  const tr = await node(t, served);
  const c = await dialWatched(t, tr.address);
  c.s.resume();
  c.s.write(memberFrame(requests('io', 1, 1000)));
  await until(() => served.get('io') === 1000, 5000, 'every request served');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(c.closed(), false);
  assert.equal(tr.isConnected('3'), true);
});
