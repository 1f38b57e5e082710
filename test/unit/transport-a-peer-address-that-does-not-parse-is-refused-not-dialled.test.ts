/**
 * The address a frame advertises for its sender is what the transport redials it by: one that
 * does not parse as HOST:PORT is refused (the known address kept), and a dial to an address
 * that cannot be dialed fails like any dial, with backoff, instead of throwing out of the
 * flush's microtask (which ended the process).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { encodeFrame } from '../../src/cluster/frame.js';
import { Transport } from '../../src/cluster/transport.js';
import { Unavailable } from '../../src/common/errors.js';
import { dial, listen } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';

const clusterId = 'c1';

async function transport(t: import('node:test').TestContext, id: string): Promise<Transport> {
  const tr = new Transport({
    nodeId: id,
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    clusterId,
    handlers: { onMessages: () => undefined, onRequest: async () => ({}) },
  });
  await tr.start();
  t.after(() => tr.close());
  return tr;
}

const heartbeat = { type: 'heartbeat', from: 1, to: 2, term: 1, commit: 0, seq: 1, tick: 1 };

for (const bad of ['not-an-address', '::1:7000', 'host:99999', 'host:0']) {
  test(`a frame advertising ${JSON.stringify(bad)} leaves the known address, and the peer is redialed there`, async (t) => {
    const a = await transport(t, '1');
    // Node 2's real listener: where a redial must go.
    const accepted: Socket[] = [];
    const { address: good } = await listen(t, (s) => accepted.push(s));
    a.setPeerAddress('2', good);

    const s = await dial(t, a.address);
    s.write(encodeFrame({ from: '2', addr: bad, epoch: 1, c: clusterId, v: 1 }));
    await until(() => a.isConnected('2'), 5000, 'node 2 bound');
    assert.equal(a.peerAddress('2'), good);
    s.destroy();
    await until(() => !a.isConnected('2'), 5000, 'connection of node 2 gone');

    a.send('2', 5, heartbeat);
    await until(() => accepted.length === 1, 5000, 'node 2 redialed at its known address');
  });
}

test('a frame advertising an address that does not parse, from a peer whose address is unknown, leaves it unknown', async (t) => {
  const a = await transport(t, '1');
  const s = await dial(t, a.address);
  s.write(encodeFrame({ from: '2', addr: 'not-an-address', epoch: 1, c: clusterId, v: 1 }));
  await until(() => a.isConnected('2'), 5000, 'node 2 bound');
  assert.equal(a.peerAddress('2'), undefined);
  s.destroy();
  await until(() => !a.isConnected('2'), 5000, 'connection of node 2 gone');
  a.send('2', 5, heartbeat);
  await new Promise((r) => setTimeout(r, 100));
});

test('a dial to an address that cannot be dialed fails the request and backs off; it throws nowhere', async (t) => {
  const a = await transport(t, '1');
  a.setPeerAddress('2', 'not-an-address');
  a.send('2', 5, heartbeat);
  await assert.rejects(a.request('2', 'ping', {}, 2000), (err: unknown) => err instanceof Unavailable && /not-an-address/.test((err as Error).message));
  // The next attempt waits out the backoff: refused at once, the queued message kept for it.
  // (A stall past the jittered wait, 25 ms at the least, meets the same address refused again.)
  await assert.rejects(a.request('2', 'ping', {}, 2000), (err: unknown) => err instanceof Unavailable && /next is in|not-an-address/.test((err as Error).message));
  // Retried (with the queued message) after the backoff, without throwing either.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(a.isConnected('2'), false);
});
