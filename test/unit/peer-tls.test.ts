/**
 * `--peer-tls`: peer connections run TLS 1.3 keyed by the cluster key after the key exchange.
 * What crosses the wire is read through a recording proxy between two transports: in the
 * clear without TLS (so the check can fail), ciphertext with it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { recordingProxy } from '../helpers/recording-proxy.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authenticateAsAcceptor, authenticateAsDialer, ClusterKey } from '../../src/cluster/peer-auth.js';
import { secureAsAcceptor, secureAsDialer } from '../../src/cluster/peer-tls.js';
import { startEchoTransport, type EchoTransport } from '../helpers/echo-transport.js';
import { runCli } from '../helpers/cli.js';
import { until } from '../helpers/until.js';

const key = ClusterKey.fromBytes(randomBytes(32));

/** Node 2 sends node 1 a request carrying `marker` (and gets it echoed) through a proxy. */
async function exchangeThroughProxy(t: import('node:test').TestContext, peerTls: boolean, marker: Buffer): Promise<{ wire: Buffer; n1: EchoTransport }> {
  const cluster = randomUUID();
  const n1 = await startEchoTransport(t, { nodeId: '1', clusterId: cluster, clusterKey: key, peerTls });
  const n2 = await startEchoTransport(t, { nodeId: '2', clusterId: cluster, clusterKey: key, peerTls });
  const proxy = await recordingProxy(t, n1.t.address);
  n2.t.setPeerAddress('1', proxy.address);
  const answer = (await n2.t.request('1', 'echo', { data: marker })) as { args: { data: Uint8Array } };
  assert.ok(Buffer.from(answer.args.data).equals(marker), 'the payload came back changed');
  n2.t.send('1', 9, { type: 'app', data: marker });
  await until(() => n1.got.some((g) => g.msgs.some((m) => m.g === 9)));
  return { wire: proxy.bytes(), n1 };
}

test('with --peer-tls a request and a Raft message cross the wire encrypted; without it, in the clear', async (t) => {
  const marker = Buffer.from(`raftblock-plaintext-marker-${randomUUID()}`.repeat(8));
  const clear = await exchangeThroughProxy(t, false, marker);
  assert.ok(clear.wire.includes(marker), 'without TLS the payload should be readable on the wire (the check below could not fail)');
  const secret = await exchangeThroughProxy(t, true, marker);
  assert.ok(secret.wire.length > marker.length * 2, `too few bytes recorded (${secret.wire.length}) for the two payloads`);
  assert.ok(!secret.wire.includes(marker), 'with TLS the payload crossed the wire readable');
  assert.ok(!secret.wire.includes(marker.subarray(0, 16)), 'with TLS a piece of the payload crossed the wire readable');
  assert.equal(await secret.n1.counter('raftblock_transport_unauthenticated_connections_total'), 0);
  assert.equal(await secret.n1.counter('raftblock_transport_tls_connections_total'), 1, 'node 1 counts the one TLS connection it accepted');
  assert.equal(await clear.n1.counter('raftblock_transport_tls_connections_total'), 0);
});

test('a TLS node and a keyed node without TLS refuse each other, both ways, before any frame', async (t) => {
  const cluster = randomUUID();
  const tlsNode = await startEchoTransport(t, { nodeId: '1', clusterId: cluster, clusterKey: key, peerTls: true });
  const plainNode = await startEchoTransport(t, { nodeId: '2', clusterId: cluster, clusterKey: key, peerTls: false });
  plainNode.t.setPeerAddress('1', tlsNode.t.address);
  tlsNode.t.setPeerAddress('2', plainNode.t.address);
  await assert.rejects(plainNode.t.request('1', 'echo', 'plain→tls', 3000));
  await assert.rejects(tlsNode.t.request('2', 'echo', 'tls→plain', 3000));
  await until(async () => (await tlsNode.counter('raftblock_transport_unauthenticated_connections_total')) >= 1);
  await until(async () => (await plainNode.counter('raftblock_transport_unauthenticated_connections_total')) >= 1);
  assert.deepEqual(tlsNode.requests, [], 'the TLS node served a request sent in the clear');
  assert.deepEqual(plainNode.requests, [], 'the plain node served a request of the TLS node');
});

test('the acceptor names a TLS mismatch; a TLS handshake with another key fails on both sides', async (t) => {
  const accepted: Socket[] = [];
  const server = createServer((s) => accepted.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const dial = (): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => resolve(s));
      s.once('error', reject);
    });
  const nextAccepted = async (): Promise<Socket> => {
    const n = accepted.length;
    await until(() => accepted.length > n);
    return accepted[n];
  };

  // A dialer that asks for TLS, an acceptor without it: the acceptor says why.
  const d1p = dial();
  const a1 = await nextAccepted();
  const d1 = await d1p;
  d1.on('error', () => {});
  const acceptorSide = authenticateAsAcceptor(a1, key, { tls: false });
  const dialerSide = authenticateAsDialer(d1, key, { tls: true, timeoutMs: 2000 });
  await assert.rejects(acceptorSide, /asks for TLS and this node runs without --peer-tls/);
  a1.destroy();
  await assert.rejects(dialerSide, (e: Error & { code?: string }) => e.code === 'UNAUTHENTICATED');

  // The raw sockets past the exchange, TLS with two different keys: neither side completes.
  const d2p = dial();
  const a2 = await nextAccepted();
  const d2 = await d2p;
  const other = ClusterKey.fromBytes(randomBytes(32));
  const results = await Promise.allSettled([secureAsAcceptor(a2, key, 3000), secureAsDialer(d2, other, 3000)]);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.equal((r as PromiseRejectedResult).reason.code, 'UNAUTHENTICATED');
  }

  // The same key: both complete, and bytes flow encrypted both ways.
  const d3p = dial();
  const a3 = await nextAccepted();
  const d3 = await d3p;
  const [sa, sd] = await Promise.all([secureAsAcceptor(a3, key), secureAsDialer(d3, key)]);
  t.after(() => {
    sa.destroy();
    sd.destroy();
  });
  const got = new Promise<string>((r) => sa.once('data', (d: Buffer) => r(d.toString())));
  sd.write('hello over tls');
  assert.equal(await got, 'hello over tls');
  assert.equal(sd.getProtocol(), 'TLSv1.3');
  assert.equal(sd.getCipher().name, 'TLS_AES_128_GCM_SHA256');
});

test('raftblock node: --peer-tls without --cluster-key-file is a clear error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'raftblock-tlscli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'unused'), '');
  const r = await runCli(['node', '--id', '1', '--data', join(dir, 'data'), '--bootstrap', '--peer', '127.0.0.1:1', '--nbd', '127.0.0.1:1', '--http', '127.0.0.1:1', '--peer-tls'], { timeoutMs: 20_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--peer-tls needs --cluster-key-file/);
});
