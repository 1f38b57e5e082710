/**
 * A peer connection with more than maxQueuedBytesPerConnection (1 GiB) queued is taken for a
 * peer that does not read, and closed. That leaves room for the forwarded writes of the
 * default NBD memory budget (512 MiB), which may all be on their way to one leader; a node whose
 * --nbd-memory-budget is larger lets its connections queue what the budget holds beyond that
 * (peerQueueLimitBytes), or a gateway forwarding its clients' writes to one slow leader would
 * have the connection closed under them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { peerQueueLimitBytes } from '../../src/cluster/node.js';
import { maxQueuedBytesPerConnection, Transport } from '../../src/cluster/transport.js';
import { defaultNbdMemoryBudgetBytes } from '../../src/nbd/server.js';
import { listen } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';
import { listeningTransport } from '../helpers/transport.js';

const mib = 1024 * 1024;

test("a node's peer connections may queue the transport's bound plus what its NBD budget holds past the default", () => {
  assert.equal(peerQueueLimitBytes(), maxQueuedBytesPerConnection);
  assert.equal(peerQueueLimitBytes(defaultNbdMemoryBudgetBytes), maxQueuedBytesPerConnection);
  assert.equal(peerQueueLimitBytes(64 * mib), maxQueuedBytesPerConnection, 'a smaller budget does not lower the bound');
  assert.equal(peerQueueLimitBytes(4096 * mib), maxQueuedBytesPerConnection + 4096 * mib - defaultNbdMemoryBudgetBytes);
});

test('a connection is closed once more than the queue bound it was given waits to be written, and not before', async (t) => {
  // Each node's peer 9 takes connections and reads nothing. A node that closed its connection
  // may dial again for the requests that follow (once its redial backoff has passed), so
  // "closed" is: not connected, or connected again on a second connection.
  const node = async (maxQueuedBytes: number): Promise<{ tr: Transport; closedOnce: () => boolean }> => {
    let accepted = 0;
    const sink = await listen(t, (s) => {
      s.pause();
      accepted++;
    });
    const tr = await listeningTransport(t, { maxQueuedBytes });
    tr.setPeerAddress('9', sink.address);
    return { tr, closedOnce: () => accepted > 1 || (accepted === 1 && !tr.isConnected('9')) };
  };
  const small = await node(32 * mib);
  const large = await node(256 * mib);
  const payload = Buffer.alloc(4 * mib, 1);
  for (const { tr } of [small, large]) {
    tr.connect('9');
    await until(() => tr.isConnected('9'), 5000, 'connected');
    // Forwarded writes, one frame each: 96 MiB the sink never reads.
    for (let i = 0; i < 24; i++) {
      tr.request('9', 'io', { g: 1, q: { k: 'write', o: 0, d: payload } }, 60_000).catch(() => undefined);
      await new Promise((r) => setImmediate(r));
    }
  }
  await until(() => small.closedOnce(), 5000, 'the connection past its 32 MiB bound closed');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(large.closedOnce(), false, 'the connection within its 256 MiB bound was closed');
  assert.equal(large.tr.isConnected('9'), true);
});
