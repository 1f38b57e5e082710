/**
 * Transports listening on loopback as node 1, for tests of what a transport does with the
 * connections and frames it is sent; closed when the test ends.
 */
import type { Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { encodeFrame } from '../../src/cluster/frame.js';
import { Transport, type TransportOptions } from '../../src/cluster/transport.js';
import { dialWatched } from './sockets.js';
import { until } from './until.js';

/** Node 1 on a free loopback port (epoch 1, handlers that do nothing unless given), started. */
export async function listeningTransport(t: TestContext, opts: Partial<TransportOptions> = {}): Promise<Transport> {
  const tr = new Transport({
    nodeId: '1',
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    handlers: { onMessages: () => undefined, onRequest: async () => ({}) },
    ...opts,
  });
  await tr.start();
  t.after(() => tr.close());
  return tr;
}

/**
 * As listeningTransport, and beside it a hand-made connection bound as node 3, which must stay
 * open whatever misbehaving connections do.
 */
export async function transportWithBoundPeer(
  t: TestContext,
  opts: Partial<TransportOptions> = {},
): Promise<{ tr: Transport; peer: { s: Socket; closed: () => boolean } }> {
  const tr = await listeningTransport(t, opts);
  const peer = await dialWatched(t, tr.address);
  peer.s.write(encodeFrame({ from: '3', addr: '', epoch: 1 }));
  await until(() => tr.isConnected('3'), 5000, 'node 3 bound');
  return { tr, peer };
}
