/**
 * A node listening on IPv6 advertises `[HOST]:PORT`, which its peers parse and redial: it sent
 * `::1:PORT`, which replaced the good address its peers knew and ended every one of them at
 * its next redial.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { Transport } from '../../src/cluster/transport.js';
import { until } from '../helpers/until.js';
import { requireCapability } from '../helpers/tools.js';

/** Whether this host can listen on ::1 (a container may have no IPv6 at all). */
async function haveIpv6Loopback(): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}

function transport(t: import('node:test').TestContext, id: string, got: string[]): Transport {
  const tr = new Transport({
    nodeId: id,
    listen: { host: '::1', port: 0 },
    epoch: () => 1,
    clusterId: 'c1',
    handlers: { onMessages: (from) => void got.push(from), onRequest: async () => ({}) },
  });
  t.after(() => tr.close());
  return tr;
}

test('an IPv6 node advertises its address in brackets, and a peer that learnt it redials it', async (t) => {
  // Under CI=true a host without IPv6 loopback fails the test rather than skipping it.
  if (!requireCapability(t, await haveIpv6Loopback(), 'no IPv6 loopback (::1) on this host')) return;
  const gotA: string[] = [];
  const gotB: string[] = [];
  const a = transport(t, '1', gotA);
  const b = transport(t, '2', gotB);
  const aBound = await a.start();
  const bBound = await b.start();
  assert.equal(a.address, `[::1]:${aBound.port}`);
  assert.equal(b.address, `[::1]:${bBound.port}`);

  a.setPeerAddress('2', b.address);
  a.send('2', 5, { type: 'heartbeat', from: 1, to: 2, term: 1, commit: 0, seq: 1, tick: 1 });
  await until(() => gotB.length === 1, 5000, 'B heard A');
  assert.equal(b.peerAddress('1'), a.address);

  // A restarts on the same port: B redials it at the address A advertised.
  await a.close();
  await until(() => !b.isConnected('1'), 5000, 'B saw the connection close');
  const gotA2: string[] = [];
  const a2 = new Transport({
    nodeId: '1',
    listen: { host: '::1', port: aBound.port },
    epoch: () => 1,
    clusterId: 'c1',
    handlers: { onMessages: (from) => void gotA2.push(from), onRequest: async () => ({}) },
  });
  t.after(() => a2.close());
  await a2.start();
  b.send('1', 5, { type: 'heartbeat', from: 2, to: 1, term: 1, commit: 0, seq: 1, tick: 1 });
  await until(() => gotA2.length === 1, 5000, 'the restarted A heard B over a redial');
  assert.equal(gotA.length, 0);
});
