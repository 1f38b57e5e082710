import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo } from 'node:net';
import fc from 'fast-check';
import { encodeFrame, encodeFrameParts, FrameDecoder, maxFrameBytes, minAttachedBytes, type GroupMessage } from '../../src/cluster/frame.js';
import { Transport } from '../../src/cluster/transport.js';
import { ProtocolError, NotLeader } from '../../src/common/errors.js';
import { maxStoreOpsLevel } from '../../src/store/ops.js';
import { until } from '../helpers/until.js';

interface Node {
  t: Transport;
  got: { from: string; msgs: GroupMessage[] }[];
  frames: () => number;
}

async function node(t: import('node:test').TestContext, id: string, port = 0): Promise<Node> {
  const got: Node['got'] = [];
  let frames = 0;
  const tr = new Transport({
    nodeId: id,
    listen: { host: '127.0.0.1', port },
    epoch: () => 1,
    handlers: {
      onMessages: (from, _epoch, msgs) => {
        frames++;
        got.push({ from, msgs });
      },
      onRequest: async (from, _epoch, op, args) => {
        if (op === 'echo') return { from, args };
        if (op === 'fail') throw new NotLeader('no', '3');
        if (op === 'slow') return new Promise(() => undefined);
        throw new ProtocolError('unknown op');
      },
    },
  });
  await tr.start();
  t.after(() => tr.close());
  return { t: tr, got, frames: () => frames };
}

test('frames round-trip through the decoder even when split byte by byte', () => {
  const f = { from: 'n1', addr: '127.0.0.1:1', epoch: 4, msgs: [{ g: 3, m: { type: 'app', data: Buffer.from([1, 2, 3]) } }] };
  const bytes = Buffer.concat([encodeFrame(f), encodeFrame({ ...f, epoch: 5 })]);
  const d = new FrameDecoder();
  const out = [];
  for (const b of bytes) out.push(...d.push(Buffer.from([b])));
  assert.equal(out.length, 2);
  assert.equal(out[0].epoch, 4);
  assert.equal(out[1].epoch, 5);
  assert.deepEqual(Buffer.from((out[0].msgs![0].m as { data: Uint8Array }).data), Buffer.from([1, 2, 3]));
});

test('any sequence of frames cut at any chunk boundaries decodes to the same frames', () => {
  const frameArb = fc.record({
    epoch: fc.nat(),
    payloads: fc.array(fc.uint8Array({ maxLength: 9000 }), { maxLength: 4 }),
  });
  fc.assert(
    fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 20000 }), { minLength: 1, maxLength: 30 }), (specs, cuts) => {
      const frames = specs.map((s) => ({ from: 'n1', addr: 'a:1', epoch: s.epoch, msgs: s.payloads.map((p, g) => ({ g, m: { data: p } })) }));
      const bytes = Buffer.concat(frames.map((f) => encodeFrame(f)));
      const d = new FrameDecoder();
      const out = [];
      let at = 0;
      for (let i = 0; at < bytes.length; i++) {
        const n = cuts[i % cuts.length];
        out.push(...d.push(bytes.subarray(at, at + n)));
        at += n;
      }
      assert.equal(out.length, frames.length);
      for (let i = 0; i < frames.length; i++) {
        assert.equal(out[i].epoch, frames[i].epoch);
        assert.deepEqual(
          out[i].msgs!.map((m) => Buffer.from((m.m as { data: Uint8Array }).data).toString('hex')),
          frames[i].msgs.map((m) => Buffer.from(m.m.data).toString('hex')),
        );
      }
    }),
    { numRuns: 300 },
  );
});

test('append payloads travel as attachments after the head and come back in place, cut anywhere', () => {
  const entryArb = fc.record({ index: fc.nat(), term: fc.nat(), type: fc.constantFrom(0, 1), data: fc.uint8Array({ maxLength: 9000 }) });
  const msgArb = fc.oneof(
    fc.record({ g: fc.nat({ max: 70000 }), m: fc.record({ type: fc.constant('app'), index: fc.nat(), entries: fc.array(entryArb, { maxLength: 5 }) }) }),
    fc.record({ g: fc.nat({ max: 70000 }), m: fc.record({ type: fc.constant('heartbeat'), data: fc.uint8Array({ maxLength: 2000 }) }) }),
  );
  const reqArb = fc.record({ id: fc.nat(), op: fc.constant('io'), a: fc.record({ g: fc.nat(), q: fc.record({ k: fc.constant('write'), o: fc.nat(), d: fc.uint8Array({ maxLength: 9000 }) }) }) });
  const respArb = fc.record({ id: fc.nat(), r: fc.oneof(fc.uint8Array({ maxLength: 9000 }), fc.nat(), fc.record({ epoch: fc.nat() })) });
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.array(msgArb, { maxLength: 5 }), fc.array(reqArb, { maxLength: 3 }), fc.array(respArb, { maxLength: 3 })), { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 30000 }), { minLength: 1, maxLength: 20 }), (specs, cuts) => {
      const frames = specs.map(([msgs, reqs, resps], i) => ({ from: 'n1', addr: 'a:1', epoch: i, msgs, reqs, resps }));
      const partsPerFrame = frames.map((f) => encodeFrameParts(f));
      const bytes = Buffer.concat(partsPerFrame.flat());
      const d = new FrameDecoder();
      const out = [];
      for (let i = 0, at = 0; at < bytes.length; i++) {
        const n = cuts[i % cuts.length];
        out.push(...d.push(bytes.subarray(at, at + n)));
        at += n;
      }
      assert.equal(out.length, frames.length);
      const norm = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x) => (x instanceof Uint8Array || (x && x.type === 'Buffer') ? Buffer.from(x.data ?? x).toString('hex') : x)));
      for (let i = 0; i < frames.length; i++) {
        assert.deepEqual(norm(out[i].msgs ?? []), norm(frames[i].msgs));
        assert.deepEqual(norm(out[i].reqs ?? []), norm(frames[i].reqs));
        assert.deepEqual(norm(out[i].resps ?? []), norm(frames[i].resps));
      }
      // Every payload of at least minAttachedBytes left the head as a buffer of its own, uncopied.
      const attached = frames.flatMap((f) => [
        ...f.msgs.flatMap((gm) => (gm.m.type === 'app' ? (gm.m as { entries: { data: Uint8Array }[] }).entries.map((e) => e.data).filter((x) => x.length >= minAttachedBytes) : [])),
        ...f.reqs.map((r) => r.a.q.d).filter((x) => x.length >= minAttachedBytes),
        ...f.resps.flatMap((r) => (r.r instanceof Uint8Array && r.r.length >= minAttachedBytes ? [r.r] : [])),
      ]);
      const sent = partsPerFrame.flatMap((p) => p.slice(1));
      assert.equal(sent.length, attached.length);
      for (let k = 0; k < sent.length; k++) assert.equal(sent[k].buffer, attached[k].buffer, 'an attachment is the entry\'s own memory');
    }),
    { numRuns: 200 },
  );
});

test('heartbeats and their responses travel coalesced as rows of integers and come back as the same messages', () => {
  const int = fc.integer({ min: -(2 ** 40), max: 2 ** 40 });
  const hbArb = fc.record({ g: fc.nat({ max: 70000 }), m: fc.record({ type: fc.constant('heartbeat'), from: fc.nat(), to: fc.nat(), term: fc.nat(), commit: fc.nat(), seq: int, tick: int }) });
  const hbrArb = fc.record({ g: fc.nat({ max: 70000 }), m: fc.record({ type: fc.constant('heartbeatResp'), from: fc.nat(), to: fc.nat(), term: fc.nat(), seq: int, tick: int }) });
  // Not rows: other types, a heartbeat with a field more, or a value that is not an integer.
  const otherArb = fc.oneof(
    fc.record({ g: fc.nat(), m: fc.record({ type: fc.constant('appResp'), from: fc.nat(), index: fc.nat() }) }),
    fc.record({ g: fc.nat(), m: fc.record({ type: fc.constant('heartbeat'), from: fc.nat(), to: fc.nat(), term: fc.nat(), commit: fc.nat(), seq: int, tick: int, extra: fc.nat() }) }),
    fc.record({ g: fc.nat(), m: fc.record({ type: fc.constant('heartbeatResp'), from: fc.nat(), to: fc.constant('2'), term: fc.nat(), seq: int, tick: int }) }),
  );
  fc.assert(
    fc.property(fc.array(fc.oneof(hbArb, hbrArb, otherArb), { maxLength: 40 }), (msgs) => {
      const frame = { from: 'n1', addr: 'a:1', epoch: 1, msgs };
      const out = new FrameDecoder().push(encodeFrame(frame));
      assert.equal(out.length, 1);
      const got = out[0].msgs ?? [];
      const rows = msgs.filter((gm) => !('extra' in gm.m) && typeof (gm.m as { to: unknown }).to === 'number' && gm.m.type.startsWith('heartbeat'));
      const kept = msgs.filter((gm) => !rows.includes(gm));
      // Messages that are not rows keep their place at the front; rows follow, heartbeats first.
      const expected = [...kept, ...rows.filter((gm) => gm.m.type === 'heartbeat'), ...rows.filter((gm) => gm.m.type === 'heartbeatResp')];
      const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
      assert.deepEqual(plain(got), plain(expected));
      assert.equal('hb' in out[0] || 'hbr' in out[0], false, 'rows never reach the transport');
    }),
    { numRuns: 300 },
  );
  // 32 groups' heartbeats: ~15 bytes a group, where a map each took ~70.
  const beats = Array.from({ length: 32 }, (_, g) => ({ g: g + 1, m: { type: 'heartbeat', from: 1, to: 2, term: 7, commit: 123456, seq: 0, tick: 98765 } }));
  assert.ok(encodeFrame({ from: '1', addr: 'a:1', epoch: 1, msgs: beats }).length < 32 * 20);
});

test('malformed heartbeat rows are protocol errors', () => {
  const frameWith = (rows: Record<string, unknown>): Buffer => encodeFrame({ from: 'n1', addr: 'a:1', epoch: 1, ...rows } as never);
  assert.throws(() => new FrameDecoder().push(frameWith({ hb: [1, 2, 3] })), ProtocolError);
  assert.throws(() => new FrameDecoder().push(frameWith({ hbr: [1, 2, 3, 4, 5, 0.5] })), ProtocolError);
  assert.throws(() => new FrameDecoder().push(frameWith({ hb: 'rows' })), ProtocolError);
  assert.throws(() => new FrameDecoder().push(frameWith({ hbr: [1, 2, 3, 4, 5, '6'] })), ProtocolError);
  const ok = new FrameDecoder().push(frameWith({ hbr: [4, 1, 2, 3, 9, 10] }));
  assert.deepEqual(ok[0].msgs, [{ g: 4, m: { type: 'heartbeatResp', from: 1, to: 2, term: 3, seq: 9, tick: 10 } }]);
});

test('a frame names a store command level in 1..maxStoreOpsLevel, the bound a peer-levels file and a status answer keep too', () => {
  const told = (s: unknown): Buffer => encodeFrame({ from: 'n1', addr: 'a:1', epoch: 1, s } as never);
  assert.equal(new FrameDecoder().push(told(maxStoreOpsLevel))[0].s, maxStoreOpsLevel);
  assert.equal(new FrameDecoder().push(told(1))[0].s, 1);
  for (const bad of [0, maxStoreOpsLevel + 1, 2.5, '3']) assert.throws(() => new FrameDecoder().push(told(bad)), /frame\.s must be a store command level/, String(bad));
});

test('attachments that entries do not account for exactly are protocol errors', () => {
  const data = Buffer.alloc(minAttachedBytes, 7);
  const f = { from: 'n1', addr: '', epoch: 1, msgs: [{ g: 1, m: { type: 'app', entries: [{ index: 1, term: 1, type: 0, data }] } }] };
  const good = encodeFrame(f);
  assert.equal(new FrameDecoder().push(good).length, 1);
  // One attached byte too many (lengths patched to match), and one too few.
  const extra = Buffer.concat([good, Buffer.from([9])]);
  extra.writeUInt32BE(extra.length - 4, 0);
  assert.throws(() => new FrameDecoder().push(extra), /no entry claims/);
  const short = good.subarray(0, good.length - 1);
  const shortCopy = Buffer.from(short);
  shortCopy.writeUInt32BE(shortCopy.length - 4, 0);
  assert.throws(() => new FrameDecoder().push(shortCopy), /beyond the frame/);
  // A response that claims an attachment the frame does not carry.
  assert.throws(() => new FrameDecoder().push(encodeFrame({ from: 'n1', addr: '', epoch: 1, resps: [{ id: 1, r: 4096, x: 1 }] })), /attached response/);
  // A head length that points past the body.
  const badHead = Buffer.from(good);
  badHead.writeUInt32BE(good.length, 4);
  assert.throws(() => new FrameDecoder().push(badHead), ProtocolError);
});

test('a forwarded write\'s payload arrives intact, and one that times out still queued closes its connection', async (t) => {
  const a = await node(t, '1');
  const b = await node(t, '2');
  a.t.setPeerAddress('2', b.t.address);
  const d = Buffer.alloc(64 * 1024);
  for (let i = 0; i < d.length; i++) d[i] = (i * 7) & 0xff;
  const r = (await a.t.request('2', 'echo', { g: 3, q: { k: 'write', o: 0, d } })) as { args: { q: { d: Uint8Array } } };
  assert.ok(Buffer.from(r.args.q.d).equals(d), 'payload changed on the way');
  // A peer that accepts and never reads: the payload cannot leave the socket before the
  // timeout, so the caller's buffer would still be in use; the connection is closed instead.
  const accepted: import('node:net').Socket[] = [];
  const sink = createServer((s) => {
    s.pause();
    accepted.push(s);
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of accepted) s.destroy();
    sink.close();
  });
  a.t.setPeerAddress('9', `127.0.0.1:${(sink.address() as AddressInfo).port}`);
  const big = Buffer.alloc(48 << 20, 1);
  await assert.rejects(a.t.request('9', 'io', { g: 1, q: { k: 'write', o: 0, d: big } }, 500), (e: Error & { code?: string }) => e.code === 'TIMED_OUT');
  await until(() => !a.t.isConnected('9'));
});

test('oversized, empty and malformed frames are protocol errors', () => {
  const big = Buffer.alloc(4);
  big.writeUInt32BE(maxFrameBytes + 1, 0);
  assert.throws(() => new FrameDecoder().push(big), ProtocolError);
  assert.throws(() => new FrameDecoder().push(Buffer.alloc(4)), ProtocolError);
  const junk = Buffer.from([0, 0, 0, 2, 0xc1, 0xc1]);
  assert.throws(() => new FrameDecoder().push(junk), ProtocolError);
  const notAFrame = encodeFrame({ from: '', addr: '', epoch: 0 });
  assert.throws(() => new FrameDecoder().push(notAFrame), ProtocolError);
});

test('messages of many groups queued in one turn leave in one frame', async (t) => {
  const a = await node(t, '1');
  const b = await node(t, '2');
  a.t.setPeerAddress('2', b.t.address);
  for (let g = 1; g <= 50; g++) a.t.send('2', g, { type: 'heartbeat', g });
  await until(() => b.got.reduce((n, x) => n + x.msgs.length, 0) === 50);
  assert.equal(b.frames(), 1);
  assert.deepEqual(b.got[0].msgs.map((m) => m.g), Array.from({ length: 50 }, (_, i) => i + 1));
  assert.equal(b.got[0].from, '1');
});

test('requests get responses and typed errors; both directions share one connection', async (t) => {
  const a = await node(t, '1');
  const b = await node(t, '2');
  a.t.setPeerAddress('2', b.t.address);
  const r = (await a.t.request('2', 'echo', { x: Buffer.from('hi') })) as { from: string; args: { x: Uint8Array } };
  assert.equal(r.from, '1');
  assert.equal(Buffer.from(r.args.x).toString(), 'hi');
  await assert.rejects(a.t.request('2', 'fail', null), (e: Error & { code?: string; leaderHint?: string }) => e.code === 'NOT_LEADER' && e.leaderHint === '3');
  await assert.rejects(a.t.request('2', 'slow', null, 100), (e: Error & { code?: string }) => e.code === 'TIMED_OUT');
  // b never learned a's address from configuration, yet answers over the connection a opened.
  const back = (await b.t.request('1', 'echo', 7)) as { from: string };
  assert.equal(back.from, '2');
  assert.ok(a.t.isConnected('2') && b.t.isConnected('1'));
});

test('a bad frame closes only its own connection', async (t) => {
  const a = await node(t, '1');
  const b = await node(t, '2');
  const c = await node(t, '3');
  a.t.setPeerAddress('2', b.t.address);
  c.t.setPeerAddress('2', b.t.address);
  await a.t.request('2', 'echo', 1);
  await c.t.request('2', 'echo', 1);
  const [host, port] = b.t.address.split(':');
  const evil = connect({ host, port: Number(port) });
  await new Promise((r) => evil.once('connect', r));
  const closed = new Promise((r) => evil.once('close', r));
  evil.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
  await closed;
  assert.deepEqual(await a.t.request('2', 'echo', 2), { from: '1', args: 2 });
  assert.deepEqual(await c.t.request('2', 'echo', 3), { from: '3', args: 3 });
});

test('a peer that restarts is reached again after reconnecting with backoff', async (t) => {
  const a = await node(t, '1');
  const b = await node(t, '2');
  a.t.setPeerAddress('2', b.t.address);
  await a.t.request('2', 'echo', 1);
  const port = Number(b.t.address.split(':')[1]);
  await b.t.close();
  await until(() => !a.t.isConnected('2'));
  a.t.send('2', 9, { type: 'heartbeat' }); // queued while the peer is down
  await new Promise((r) => setTimeout(r, 150));
  const b2 = await node(t, '2', port);
  await until(() => b2.got.length > 0);
  assert.equal(b2.got[0].msgs[0].g, 9);
  assert.deepEqual(await a.t.request('2', 'echo', 5), { from: '1', args: 5 });
});

test('a request that timed out before it could be sent is never delivered later', async (t) => {
  const a = await node(t, '1');
  const probe = await node(t, '2');
  const port = Number(probe.t.address.split(':')[1]);
  await probe.t.close(); // the port is free again: peer 2 is down
  a.t.setPeerAddress('2', `127.0.0.1:${port}`);
  // Refused when the dial fails (it was never sent), not left to time out.
  await assert.rejects(a.t.request('2', 'echo', 'stale', 100), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE');
  const seen: unknown[] = [];
  const b = new Transport({
    nodeId: '2',
    listen: { host: '127.0.0.1', port },
    epoch: () => 1,
    handlers: { onMessages: () => undefined, onRequest: async (_f, _e, _op, args) => (seen.push(args), args) },
  });
  await b.start();
  t.after(() => b.close());
  // Refused at once until the reconnect backoff lets the next dial happen: a caller retries.
  let answer: unknown;
  for (let attempt = 0; answer === undefined; attempt++) {
    assert.ok(attempt < 100, 'peer 2 never reached');
    answer = await a.t.request('2', 'echo', 'fresh', 5000).catch((e: Error & { code?: string }) => {
      if (e.code !== 'UNAVAILABLE') throw e;
      return new Promise((r) => setTimeout(r, 50, undefined));
    });
  }
  assert.equal(answer, 'fresh');
  assert.deepEqual(seen, ['fresh']);
});
