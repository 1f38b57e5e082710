/**
 * What a connection can make a node hold: the join exchange needs no membership, and a client
 * that sent many getMap requests and read none of the answers made the node queue gigabytes
 * (every answer the whole map). A joining connection has at most
 * maxJoinExchangeRequestsInFlight requests served at once and is closed once more than
 * maxJoinExchangeQueuedBytes wait to be written to it (any connection past
 * maxQueuedBytesPerConnection); an accepted connection that sends no frame is closed after
 * firstFrameTimeoutMs (nothing else limited one without a cluster key).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame } from '../../src/cluster/frame.js';
import { maxJoinExchangeQueuedBytes, maxJoinExchangeRequestsInFlight, Transport } from '../../src/cluster/transport.js';
import { dialWatched } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';
import { listeningTransport } from '../helpers/transport.js';

const mapBytes = Buffer.alloc(1024 * 1024, 7);

function node(t: import('node:test').TestContext, served: { n: number }, firstFrameTimeoutMs?: number): Promise<Transport> {
  return listeningTransport(t, {
    clusterId: 'c1',
    firstFrameTimeoutMs,
    handlers: {
      onMessages: () => undefined,
      onRequest: async () => {
        served.n++;
        return { map: mapBytes };
      },
    },
  });
}

function getMaps(from: number, n: number): Buffer {
  return encodeFrame({ from: '99', addr: '', epoch: 0, c: '', v: 1, reqs: Array.from({ length: n }, (_, i) => ({ id: from + i, op: 'getMap', a: {} })) });
}

test('a frame asking the join exchange for more than a joining node does at once is refused unserved', async (t) => {
  const served = { n: 0 };
  const tr = await node(t, served);
  const c = await dialWatched(t, tr.address);
  c.s.resume();
  c.s.write(getMaps(1, 50_000));
  await until(() => c.closed(), 5000, 'the connection closed');
  assert.equal(served.n, 0);
});

test('a joining client that reads none of its answers is closed once they fill the queue, not given more', async (t) => {
  const served = { n: 0 };
  const tr = await node(t, served);
  const c = await dialWatched(t, tr.address);
  c.s.pause(); // never reads
  let id = 1;
  // Within the in-flight bound each time; the answers pile up behind the unread socket.
  for (let i = 0; i < 400 && !c.closed(); i++) {
    c.s.write(getMaps(id, maxJoinExchangeRequestsInFlight));
    id += maxJoinExchangeRequestsInFlight;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(c.closed(), 'the connection was closed');
  // What the kernel's buffers take on both sides, the bound, and one round of answers: not 400 rounds.
  assert.ok(served.n * mapBytes.length < 64 * 1024 * 1024 + maxJoinExchangeQueuedBytes, `${served.n} maps served`);
});

test('a joining client that reads its answers is served as many as it asks, one round after another', async (t) => {
  const served = { n: 0 };
  const tr = await node(t, served);
  const c = await dialWatched(t, tr.address);
  let got = 0;
  c.s.on('data', (d: Buffer) => (got += d.length));
  for (let i = 0; i < 20; i++) {
    c.s.write(getMaps(1 + i * 2, 2));
    const want = (i + 1) * 2 * mapBytes.length;
    await until(() => got >= want, 5000, `round ${i} answered`);
  }
  assert.equal(c.closed(), false);
  assert.equal(served.n, 40);
});

test('an accepted connection that sends no frame is closed after the first-frame limit; one that did is kept', async (t) => {
  const tr = await node(t, { n: 0 }, 300);
  const silent = await dialWatched(t, tr.address);
  const talking = await dialWatched(t, tr.address);
  talking.s.write(encodeFrame({ from: '3', addr: '', epoch: 1, c: 'c1', v: 1 }));
  await until(() => silent.closed(), 5000, 'the silent connection closed');
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(talking.closed(), false);
  assert.equal(tr.isConnected('3'), true);
});
