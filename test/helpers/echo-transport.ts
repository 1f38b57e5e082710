/**
 * A Transport on a loopback port whose requests are answered with an echo and whose Raft
 * messages are recorded, for transport tests (cluster ids, incarnations, the cluster key).
 */
import type { TestContext } from 'node:test';
import { Registry } from 'prom-client';
import type { GroupMessage } from '../../src/cluster/frame.js';
import { Transport, type TransportOptions } from '../../src/cluster/transport.js';

export interface EchoTransport {
  t: Transport;
  /** Raft messages delivered, in order. */
  got: { from: string; msgs: GroupMessage[] }[];
  /** Requests served, in order; `joining`: it came as the join exchange of a node without the cluster id. */
  requests: { from: string; op: string; args: unknown; joining: boolean }[];
  registry: Registry;
  /** The value of one of the transport's counters (0 before its first increment). */
  counter(name: string): Promise<number>;
}

/** Starts one; closed when the test ends. Every request is answered `{ from, op, args }`. */
export async function startEchoTransport(t: TestContext, opts: Omit<TransportOptions, 'listen' | 'epoch' | 'handlers' | 'registry'>): Promise<EchoTransport> {
  const got: EchoTransport['got'] = [];
  const requests: EchoTransport['requests'] = [];
  const registry = new Registry();
  const tr = new Transport({
    ...opts,
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    registry,
    handlers: {
      onMessages: (from, _epoch, msgs) => got.push({ from, msgs }),
      onRequest: async (from, _epoch, op, args, joining) => {
        requests.push({ from, op, args, joining });
        return { from, op, args };
      },
    },
  });
  await tr.start();
  t.after(() => tr.close());
  const counter = async (name: string): Promise<number> => (await registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;
  return { t: tr, got, requests, registry, counter };
}
