/**
 * Peer authentication (cluster/peer-auth.ts): the challenge-response on a raw connection, and
 * the transport built on it. Nodes holding the same cluster key talk as before; a node with
 * another key, with none, or a raw client that sends frames or nothing, is closed before its
 * first frame is read (counted), and the keyed nodes' own link is undisturbed. An impostor at
 * a peer's address receives none of the requests queued for that peer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeFrame, type GroupMessage } from '../../src/cluster/frame.js';
import { authenticateAsAcceptor, authenticateAsDialer, ClusterKey, minKeyBytes } from '../../src/cluster/peer-auth.js';
import { maxUnprovenConnections, type Transport } from '../../src/cluster/transport.js';
import { startEchoTransport } from '../helpers/echo-transport.js';
import { runCli } from '../helpers/cli.js';
import { closedWithin, openIdle } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';

const key = ClusterKey.fromBytes(randomBytes(32));
const otherKey = ClusterKey.fromBytes(randomBytes(32));

/** A listening server whose accepted sockets go to `onSocket`; closed after the test. */
async function listen(t: import('node:test').TestContext, onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onSocket);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => server.close());
  return { server, port: (server.address() as { port: number }).port };
}

function connect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything `s` receives from now until `n` bytes arrived. */
function receive(s: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let have = 0;
    s.on('data', (c: Buffer) => {
      parts.push(c);
      have += c.length;
      if (have >= n) resolve(Buffer.concat(parts));
    });
    s.resume();
  });
}

test('a key file: its bytes less trailing line ends; too short is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raftblock-key-'));
  try {
    const text = 'a'.repeat(64);
    writeFileSync(join(dir, 'k1'), text + '\n');
    writeFileSync(join(dir, 'k2'), text);
    writeFileSync(join(dir, 'k3'), text + '\r\n');
    const n1 = randomBytes(16);
    const n2 = randomBytes(16);
    const macs = ['k1', 'k2', 'k3'].map((f) => ClusterKey.fromFile(join(dir, f)).mac('x', n1, n2).toString('hex'));
    assert.equal(new Set(macs).size, 1, 'the same key however the file ends');
    writeFileSync(join(dir, 'short'), 'x'.repeat(minKeyBytes - 1) + '\n');
    assert.throws(() => ClusterKey.fromFile(join(dir, 'short')), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /at least 16/.test(e.message));
    assert.throws(() => ClusterKey.fromFile(join(dir, 'missing')), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
    assert.ok(ClusterKey.generateText().trim().length >= 2 * minKeyBytes);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the same key: both sides prove it, and bytes sent right after reach the reader that takes over', async (t) => {
  let acceptorResult: Promise<Buffer> | undefined;
  const { port } = await listen(t, (s) => {
    acceptorResult = authenticateAsAcceptor(s, key).then(() => receive(s, 5));
  });
  const d = await connect(port);
  t.after(() => d.destroy());
  await authenticateAsDialer(d, key);
  d.write('after'); // in the same segment as the proof, often
  assert.equal((await acceptorResult!).toString(), 'after');
});

test('another key: each side refuses the other, and the dialer sends nothing past its hello', async (t) => {
  let acceptorErr: Promise<unknown> | undefined;
  const received: Buffer[] = [];
  const { port } = await listen(t, (s) => {
    s.on('data', (c: Buffer) => received.push(c));
    acceptorErr = authenticateAsAcceptor(s, key).then(
      () => 'accepted',
      (e: Error & { code?: string }) => e.code,
    );
  });
  const d = await connect(port);
  t.after(() => d.destroy());
  await assert.rejects(authenticateAsDialer(d, otherKey), (e: Error & { code?: string }) => e.code === 'UNAUTHENTICATED' && /does not hold/.test(e.message));
  d.destroy();
  assert.equal(await acceptorErr, 'UNAUTHENTICATED');
  assert.equal(Buffer.concat(received).length, 32, 'the dialer wrote its hello and nothing else');
});

test('a client that sends a frame instead of a hello, or nothing, is refused', async (t) => {
  const results: Promise<string>[] = [];
  const { port } = await listen(t, (s) => {
    results.push(authenticateAsAcceptor(s, key, { timeoutMs: 300 }).then(() => 'accepted', (e: Error) => e.message));
  });
  const framer = await connect(port);
  t.after(() => framer.destroy());
  framer.write(encodeFrame({ from: '9', addr: '127.0.0.1:1', epoch: 1, c: randomUUID(), reqs: [{ id: 1, op: 'io', a: { pad: 'x'.repeat(64) } }] }));
  const silent = await connect(port);
  t.after(() => silent.destroy());
  while (results.length < 2) await new Promise((r) => setTimeout(r, 5));
  const [a, b] = await Promise.all(results);
  assert.match(a, /no authentication hello/);
  assert.match(b, /no a hello within 300 ms/);
});

interface Node {
  t: Transport;
  got: { from: string; msgs: GroupMessage[] }[];
  /** The arguments of the requests served. */
  served: unknown[];
  unauthenticated: () => Promise<number>;
}

async function node(t: import('node:test').TestContext, id: string, clusterId: string, clusterKey: ClusterKey | undefined): Promise<Node> {
  const n = await startEchoTransport(t, { nodeId: id, clusterId, clusterKey });
  return {
    t: n.t,
    got: n.got,
    get served() {
      return n.requests.map((r) => r.args);
    },
    unauthenticated: () => n.counter('raftblock_transport_unauthenticated_connections_total'),
  };
}

test('transport: keyed nodes talk both ways; another key or none is refused before any frame, the keyed link undisturbed', async (t) => {
  const cluster = randomUUID();
  const n1 = await node(t, '1', cluster, key);
  const n2 = await node(t, '2', cluster, key);
  n2.t.setPeerAddress('1', n1.t.address);
  assert.deepEqual(await n2.t.request('1', 'echo', 1), { from: '2', op: 'echo', args: 1 });
  assert.deepEqual(await n1.t.request('2', 'echo', 2), { from: '1', op: 'echo', args: 2 }, 'on the connection node 2 dialed');
  n2.t.send('1', 5, { type: 'heartbeat' });
  await until(() => n1.got.some((g) => g.from === '2' && g.msgs.some((m) => m.g === 5)));

  // The same cluster id and a member's node id, but another key, or no key at all.
  const wrong = await node(t, '2', cluster, otherKey);
  const keyless = await node(t, '3', cluster, undefined);
  for (const intruder of [wrong, keyless]) {
    intruder.t.setPeerAddress('1', n1.t.address);
    intruder.t.send('1', 7, { type: 'app', from: 2, term: 99 });
    await assert.rejects(intruder.t.request('1', 'echo', 'intruder', 3000), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE' || e.code === 'UNAUTHENTICATED');
  }
  await until(async () => (await n1.unauthenticated()) >= 2);
  assert.ok(!n1.got.some((g) => g.msgs.some((m) => m.g === 7)), 'a message of an unauthenticated peer was delivered');
  assert.deepEqual(n1.served, [1], 'a request of an unauthenticated peer was served');
  assert.ok(n1.t.isConnected('2'), 'the refusals closed the keyed node 2\'s connection');
  assert.deepEqual(await n1.t.request('2', 'echo', 3), { from: '1', op: 'echo', args: 3 });

  // A keyed node that dials an impostor at a peer's address hands it none of the requests it
  // queued for that peer: they fail, unsent.
  const impostor = await node(t, '4', cluster, otherKey);
  n1.t.setPeerAddress('4', impostor.t.address);
  await assert.rejects(n1.t.request('4', 'echo', 'secret', 3000));
  assert.deepEqual(impostor.served, [], 'the impostor was sent a request');
  await until(async () => (await impostor.unauthenticated()) >= 1);
});

test('key rotation: nodes that share a key talk whichever each proves, over TLS too; nodes that share none refuse each other', async (t) => {
  const oldKey = ClusterKey.fromBytes(randomBytes(32));
  const newKey = ClusterKey.fromBytes(randomBytes(32));
  for (const peerTls of [false, true]) {
    const cluster = randomUUID();
    const start = (id: string, own: ClusterKey, also: ClusterKey[]) => startEchoTransport(t, { nodeId: id, clusterId: cluster, clusterKey: own, clusterKeysAlsoAccepted: also, peerTls });
    // The three steps of a rotation, and a node that missed it.
    const accepting = await start('1', oldKey, [newKey]);
    const proving = await start('2', newKey, [oldKey]);
    const done = await start('3', newKey, []);
    const missed = await start('4', oldKey, []);
    const all = [accepting, proving, done, missed];
    for (const a of all) for (const b of all) if (a !== b) a.t.setPeerAddress(b.t.nodeId, b.t.address);
    const talk = async (from: typeof accepting, to: typeof accepting): Promise<boolean> =>
      from.t.request(to.t.nodeId, 'echo', `${from.t.nodeId}→${to.t.nodeId}`, 3000).then(
        () => true,
        () => false,
      );
    const pairs: [typeof accepting, typeof accepting, boolean][] = [
      [accepting, proving, true],
      [proving, accepting, true],
      [proving, done, true],
      [done, proving, true],
      [accepting, done, true],
      [done, accepting, true],
      [missed, accepting, true],
      [proving, missed, true],
      [missed, done, false],
      [done, missed, false],
    ];
    for (const [from, to, ok] of pairs) assert.equal(await talk(from, to), ok, `node ${from.t.nodeId} → node ${to.t.nodeId} (tls ${peerTls})`);
    assert.ok((await done.counter('raftblock_transport_unauthenticated_connections_total')) >= 1);
    assert.equal(await proving.counter('raftblock_transport_unauthenticated_connections_total'), 0);
    if (peerTls) assert.ok((await proving.counter('raftblock_transport_tls_connections_total')) >= 3);
    for (const n of all) await n.t.close();
  }
});

test('raftblock node: a missing or short key file is a clear error before anything listens', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'raftblock-keycli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'short.key'), 'abc\n');
  const base = ['node', '--id', '1', '--data', join(dir, 'data'), '--bootstrap', '--peer', '127.0.0.1:1', '--nbd', '127.0.0.1:1', '--http', '127.0.0.1:1'];
  const missing = await runCli([...base, '--cluster-key-file', join(dir, 'absent.key')], { timeoutMs: 20_000 });
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /cannot read the cluster key file .*absent\.key/);
  const short = await runCli([...base, '--cluster-key-file', join(dir, 'short.key')], { timeoutMs: 20_000 });
  assert.notEqual(short.code, 0);
  assert.match(short.stderr, /holds 3 bytes; a cluster key needs at least 16/);
  // A key accepted during a rotation is read as strictly as the node's own.
  writeFileSync(join(dir, 'good.key'), randomBytes(32).toString('hex') + '\n');
  const second = await runCli([...base, '--cluster-key-file', join(dir, 'good.key'), '--cluster-key-file', join(dir, 'short.key')], { timeoutMs: 20_000 });
  assert.notEqual(second.code, 0);
  assert.match(second.stderr, /short\.key holds 3 bytes/);
});

test('connections that prove nothing are held 64 at most: more are closed at once, and a keyed node still gets in', async (t) => {
  const cluster = randomUUID();
  const n1 = await node(t, '1', cluster, key);
  const port = Number(n1.t.address.split(':').pop());
  const silent = await openIdle(port, maxUnprovenConnections + 16);
  t.after(() => silent.forEach((s) => s.destroy()));
  assert.equal(await closedWithin(silent, 1000), 16, 'connections past the limit were not closed at once');
  silent.forEach((s) => s.destroy());
  const n2 = await node(t, '2', cluster, key);
  n2.t.setPeerAddress('1', n1.t.address);
  await until(async () => {
    try {
      return JSON.stringify(await n2.t.request('1', 'echo', 'in', 1000)) === JSON.stringify({ from: '2', op: 'echo', args: 'in' });
    } catch {
      return false;
    }
  });
});
