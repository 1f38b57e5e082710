/**
 * Which connection a response and a queued payload belong to: a response answers only the
 * request written to the connection it arrives on (a restarted peer reuses request ids), and a
 * payload still queued when its request times out never reaches the peer afterwards, even on a
 * connection that lost a simultaneous-dial race. The far end is a hand-made peer speaking
 * frames, so ids and connections are under the test's control.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, type Frame } from '../../src/cluster/frame.js';
import { Transport, type TransportHandlers } from '../../src/cluster/transport.js';
import { NotLeader, ProtocolError } from '../../src/common/errors.js';
import { getEventListeners } from 'node:events';
import { dial, listen } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';

async function transport(t: import('node:test').TestContext, id: string, onRequest?: TransportHandlers['onRequest'], extra: { silentConnectionLimitMs?: number } = {}): Promise<Transport> {
  const tr = new Transport({
    ...extra,
    nodeId: id,
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    handlers: {
      onMessages: () => undefined,
      onRequest:
        onRequest ??
        (async () => {
          throw new ProtocolError('unknown op');
        }),
    },
  });
  await tr.start();
  t.after(() => tr.close());
  return tr;
}

/** The frames a socket receives, as they arrive. */
function framesOf(socket: Socket): Frame[] {
  const got: Frame[] = [];
  const d = new FrameDecoder();
  socket.on('data', (b: Buffer) => got.push(...d.push(b)));
  socket.on('error', () => undefined);
  return got;
}

/** A hand-made peer's frame: node `from`, no address, no cluster id (the transport has none either). */
function frame(from: string, rest: Partial<Frame>): Buffer {
  return encodeFrame({ from, addr: '', epoch: 1, ...rest });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test("a late answer to a restarted peer's previous life never reaches its new life, even for a request of the same id", async (t) => {
  // Node 2 serves reads; each waits until the test releases it.
  const release = new Map<number, () => void>();
  const b = await transport(t, '2', (_from, _epoch, op, args) => {
    assert.equal(op, 'read');
    const block = (args as { block: number }).block;
    return new Promise((resolve) => release.set(block, () => resolve(Buffer.alloc(4096, block))));
  });
  // Node 1's first life asks for block 1 with request id 7, then dies before the answer.
  const old = await dial(t, b.address);
  framesOf(old);
  old.write(frame('1', { reqs: [{ id: 7, op: 'read', a: { block: 1 } }] }));
  await until(() => release.has(1));
  old.destroy();
  await until(() => !b.isConnected('1'));
  // Its second life counts from the same start and asks for block 2 with id 7.
  const fresh = await dial(t, b.address);
  const got = framesOf(fresh);
  fresh.write(frame('1', { reqs: [{ id: 7, op: 'read', a: { block: 2 } }] }));
  await until(() => release.has(2) && b.isConnected('1'));
  release.get(1)!(); // the previous life's answer comes late
  await sleep(50);
  release.get(2)!();
  const answers = (): Buffer[] => got.flatMap((f) => (f.resps ?? []).map((r) => Buffer.from(r.r as Uint8Array)));
  await until(() => answers().length > 0);
  await sleep(50);
  assert.deepEqual(
    answers().map((r) => r[0]),
    [2],
    'the new life got only the answer to its own request (block 2), never block 1',
  );
});

test('a response that arrives on another connection than its request was written to does not settle it', async (t) => {
  const a = await transport(t, '1');
  let fakeToA: Socket | undefined;
  const seen: Frame[] = [];
  const fake = await listen(t, (s) => {
    fakeToA = s;
    const d = new FrameDecoder();
    s.on('data', (chunk: Buffer) => seen.push(...d.push(chunk)));
  });
  a.setPeerAddress('2', fake.address);
  const answer = a.request('2', 'read', { block: 2 }, 5000);
  await until(() => seen.some((f) => f.reqs?.length));
  const id = seen.find((f) => f.reqs?.length)!.reqs![0].id;
  // A second connection from node 2 (it loses to the one node 1 dialed) carries an answer with
  // the request's id: not an answer to it (the request was never written there).
  const other = await dial(t, a.address);
  framesOf(other);
  other.write(frame('2', { resps: [{ id, r: 'wrong' }] }));
  await sleep(100);
  fakeToA!.write(frame('2', { resps: [{ id, r: 'right' }] }));
  assert.equal(await answer, 'right');
});

test('a request in flight on a connection that loses a simultaneous-dial race fails with Unavailable before its timeout', async (t) => {
  // Node 2 dials node 1 and sends a request; node 1 dials back at the same time, and node 1's
  // connection wins (smaller dialer id). The request's own connection closes under it; its
  // answer cannot come on the winner, so it must fail (callers retry), not wait for the timeout.
  const b = await transport(t, '2');
  let accepted = false;
  const fake = await listen(t, (s) => {
    accepted = true;
    framesOf(s);
  });
  b.setPeerAddress('1', fake.address);
  const started = Date.now();
  const answer = b.request('1', 'read', { block: 1 }, 10000);
  await until(() => accepted);
  await sleep(50);
  const winner = await dial(t, b.address);
  framesOf(winner);
  winner.write(frame('1', {}));
  await assert.rejects(answer, (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  assert.ok(Date.now() - started < 9000, 'failed before its timeout');
  await until(() => b.isConnected('1'));
});

test("a forwarded write's payload still queued on a connection that lost a dial race never reaches the peer once its request timed out", async (t) => {
  const b = await transport(t, '2');
  // Node 1 accepts node 2's connection and does not read it (yet): the payload stays queued.
  let slow: Socket | undefined;
  const fake = await listen(t, (s) => {
    s.pause();
    slow = s;
  });
  b.setPeerAddress('1', fake.address);
  const big = Buffer.alloc(48 << 20, 0xaa);
  const answer = b.request('1', 'io', { g: 1, q: { k: 'write', o: 0, d: big } }, 1000);
  await until(() => slow !== undefined);
  await sleep(100);
  // Node 1 dials too, and its connection wins: node 2 ends the one carrying the payload.
  const winner = await dial(t, b.address);
  framesOf(winner);
  winner.write(frame('1', {}));
  await assert.rejects(answer, (e: Error & { code?: string }) => e.code === 'TIMED_OUT');
  // The caller reuses its buffer as soon as the request settled.
  big.fill(0xbb);
  // Whatever node 1 reads on that connection from now on must not be the buffer's new bytes.
  const received: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    slow!.on('data', (c: Buffer) => received.push(c));
    slow!.on('close', () => resolve());
  });
  slow!.resume();
  await done;
  const all = Buffer.concat(received);
  assert.ok(all.length < big.length, 'the queued payload was cut off');
  assert.equal(all.indexOf(Buffer.alloc(64, 0xbb)), -1, 'the peer read bytes the caller wrote after its request settled');
});

test('requests to a peer that cannot be reached fail with Unavailable at once; Raft messages wait and leave once it is back', { timeout: 20_000 }, async (t) => {
  const a = await transport(t, '1');
  // A port nobody listens on (yet).
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  a.setPeerAddress('2', `127.0.0.1:${port}`);

  // The dial is refused: the request was never sent, so it fails now, not after its minute.
  const started = Date.now();
  await assert.rejects(a.request('2', 'io', {}, 60_000), (err: Error & { code?: string }) => err.code === 'UNAVAILABLE' && /cannot reach node 2/.test(err.message));
  // Within the reconnect backoff no dial is made: refused at once too. (Its jittered wait may
  // be as short as 25 ms, which a stall of this process under load can outlast: then the
  // request is refused by a second refused dial, at once as well.)
  a.send('2', 7, { type: 'heartbeat', to: 2 });
  await assert.rejects(a.request('2', 'io', {}, 60_000), (err: Error & { code?: string }) => err.code === 'UNAVAILABLE' && /unreachable|cannot reach node 2/.test(err.message));
  assert.ok(Date.now() - started < 10_000);

  // The peer comes up: the queued message is delivered by the next dial.
  const got: Frame[] = [];
  await listen(t, (s) => {
    const d = new FrameDecoder();
    s.on('data', (b: Buffer) => got.push(...d.push(b)));
  }, port);
  await until(() => got.some((f) => (f.msgs ?? []).some((m) => m.g === 7)), 10_000);
});

test('a request whose caller abandons it fails at once with the caller\'s error; a late answer settles nothing; no listener is left behind', async (t) => {
  const a = await transport(t, '1');
  const seen: Frame[] = [];
  let toA: Socket | undefined;
  const fake = await listen(t, (s) => {
    toA = s;
    const d = new FrameDecoder();
    s.on('data', (chunk: Buffer) => seen.push(...d.push(chunk)));
  });
  a.setPeerAddress('2', fake.address);
  const ids = (): number[] => seen.flatMap((f) => (f.reqs ?? []).map((r) => r.id));

  // Sent, never answered (a cut-off leader): abandoned when the signal aborts, long before its timeout.
  const leaderChanged = new AbortController();
  const abandoned = a.request('2', 'io', { n: 1 }, 60_000, leaderChanged.signal, () => new NotLeader('leader changed'));
  await until(() => ids().length === 1);
  leaderChanged.abort();
  await assert.rejects(abandoned, (err: Error & { code?: string }) => err.code === 'NOT_LEADER' && err.message === 'leader changed');
  assert.equal(getEventListeners(leaderChanged.signal, 'abort').length, 0);
  // Its answer arriving now settles nothing, and the next request on the connection works.
  toA!.write(frame('2', { resps: [{ id: ids()[0], r: 'late' }] }));
  const stays = new AbortController();
  const next = a.request('2', 'io', { n: 2 }, 60_000, stays.signal);
  await until(() => ids().length === 2);
  toA!.write(frame('2', { resps: [{ id: ids()[1], r: 'second' }] }));
  assert.equal(await next, 'second');
  assert.equal(getEventListeners(stays.signal, 'abort').length, 0, 'an answered request leaves no listener on the signal');
  // Already aborted: refused without being sent.
  await assert.rejects(a.request('2', 'io', { n: 3 }, 60_000, leaderChanged.signal, () => new NotLeader('leader changed')), (err: Error & { code?: string }) => err.code === 'NOT_LEADER');
  await sleep(50);
  assert.equal(ids().length, 2);
});

test('a peer connection that carries nothing back after a write is kept alive by a ping while the peer answers, and closed once it does not', { timeout: 30_000 }, async (t) => {
  const a = await transport(t, '1', undefined, { silentConnectionLimitMs: 3000 });
  // Node 2 answers pings only, and the read after 4.5 s: longer than the silent limit.
  let answering = true;
  const seen: Frame[] = [];
  const fake = await listen(t, (s) => {
    const d = new FrameDecoder();
    s.on('data', (chunk: Buffer) => {
      for (const f of d.push(chunk)) {
        seen.push(f);
        for (const q of f.reqs ?? []) {
          if (q.op === 'ping' && answering) s.write(frame('2', { resps: [{ id: q.id, r: {} }] }));
          if (q.op === 'read') setTimeout(() => s.write(frame('2', { resps: [{ id: q.id, r: 'block' }] })), 4500);
        }
      }
    });
  });
  a.setPeerAddress('2', fake.address);
  assert.equal(await a.request('2', 'read', {}, 20_000), 'block', 'a slow answer from a live peer arrives on the same connection');
  assert.ok(seen.some((f) => f.reqs?.some((q) => q.op === 'ping')), 'a keepalive ping was sent while the read was pending');
  // Now node 2 answers nothing at all (a peer behind a partition): the connection is closed
  // after the silent limit, and the request fails long before its own timeout.
  answering = false;
  const started = performance.now();
  await assert.rejects(a.request('2', 'read', {}, 60_000), (err: Error & { code?: string }) => err.code === 'UNAVAILABLE' && /connection to 2 lost/.test(err.message));
  const tookMs = performance.now() - started;
  assert.ok(tookMs < 10_000, `the silent connection was closed after ${Math.round(tookMs)} ms`);
});
