import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import type { BlockExtent } from '../../src/nbd/backend.js';
import { FileBackend } from '../../src/nbd/file-backend.js';
import { encodeInfoRequest, encodeOption } from '../../src/nbd/option-codec.js';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequest } from '../../src/nbd/request-codec.js';
import { NbdServer, type NbdExport, type NbdServerOptions } from '../../src/nbd/server.js';
import { cliPath } from '../helpers/paths.js';
import { tempDir } from '../helpers/tools.js';
import { openSocket, TinyClient, ByteReader } from './nbd-client-helper.js';
import { closedWithin, openIdle } from '../helpers/sockets.js';
import { MemoryBackend } from './nbd-test-backend.js';

/** An in-memory backend whose calls can be delayed, to force out-of-order completion. */
class DelayedBackend extends MemoryBackend {
  flushes = 0;
  fuaWrites = 0;
  delayMs: (offset: number) => number = () => 0;
  constructor(sizeBytes: number, readOnly = false, maxBlockBytes = 1 << 20) {
    super(sizeBytes, { readOnly, maxBlockBytes });
  }
  private async wait(offset: number): Promise<void> {
    const ms = this.delayMs(offset);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
  override async read(offset: number, length: number, into: Buffer): Promise<BlockExtent[] | undefined> {
    await this.wait(offset);
    return super.read(offset, length, into);
  }
  /** Called when a write starts (tests wait for a request to be in flight). */
  onWriteStart: () => void = () => {};
  override async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.onWriteStart();
    await this.wait(offset);
    await super.write(offset, data);
    if (fua) this.fuaWrites++;
  }
  override async flush(): Promise<void> {
    this.flushes++;
  }
}

async function startServer(t: TestContext, exports: Map<string, NbdExport>, registry?: Registry, limits?: Record<string, number>): Promise<{ server: NbdServer; port: number }> {
  const server = new NbdServer({ exports, registry, limits });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => server.close());
  return { server, port };
}

async function client(t: TestContext, port: number, name: string, opts?: { structured?: boolean; baseAllocation?: boolean }): Promise<TinyClient> {
  const c = await TinyClient.connect(port);
  t.after(() => c.close());
  await c.handshake(name, opts);
  return c;
}

test('file export: write/read round trip, holes as OFFSET_HOLE, block status after write and trim', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const backend = await FileBackend.open(path, { createSizeBytes: 8 << 20 });
  assert.equal(statSync(path).size, 8 << 20);
  assert.ok(statSync(path).blocks * 512 < 1 << 20, 'created sparse');
  const { port } = await startServer(t, new Map([['disk', { backend }]]));
  t.after(() => backend.close()); // after hooks run in order: server first, then the file
  const c = await client(t, port, 'disk');

  const payload = Buffer.alloc(8192, 0x5a);
  assert.equal((await c.request(P.NBD_CMD_WRITE, 4096, payload.length, P.NBD_CMD_FLAG_FUA, payload)).error, 0);
  const r = await c.request(P.NBD_CMD_READ, 0, 4 * 4096);
  assert.equal(r.error, 0);
  assert.deepEqual(r.data!.subarray(4096, 3 * 4096), payload);
  assert.ok(r.data!.subarray(0, 4096).every((b) => b === 0));
  assert.deepEqual(r.chunks.map((x) => x.type), ['hole', 'data', 'hole'], 'zeros travel as holes');

  // DF: one data chunk even across holes.
  const df = await c.request(P.NBD_CMD_READ, 0, 4 * 4096, P.NBD_CMD_FLAG_DF);
  assert.deepEqual(df.chunks.map((x) => x.type), ['data']);
  assert.deepEqual(df.data, r.data);

  let bs = await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 1 << 20);
  assert.deepEqual(bs.descriptors!.slice(0, 3), [
    { length: 4096, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
    { length: 8192, flags: 0 },
    { length: (1 << 20) - 3 * 4096, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
  ]);
  bs = await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 1 << 20, P.NBD_CMD_FLAG_REQ_ONE);
  assert.equal(bs.descriptors!.length, 1);

  assert.equal((await c.request(P.NBD_CMD_TRIM, 4096, 4096)).error, 0);
  bs = await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 4 * 4096);
  assert.deepEqual(bs.descriptors, [
    { length: 8192, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
    { length: 4096, flags: 0 },
    { length: 4096, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
  ]);
  // A large trim punches a hole in the file (fallocate) and reads back as zeros.
  const big = Buffer.alloc(2 << 20, 0x33);
  assert.equal((await c.request(P.NBD_CMD_WRITE, 2 << 20, big.length, 0, big)).error, 0);
  assert.equal((await c.request(P.NBD_CMD_FLUSH, 0, 0)).error, 0);
  const blocksBefore = statSync(path).blocks;
  assert.equal((await c.request(P.NBD_CMD_WRITE_ZEROES, 2 << 20, big.length)).error, 0);
  assert.ok(statSync(path).blocks < blocksBefore, 'write zeroes without NO_HOLE deallocated');
  const z = await c.request(P.NBD_CMD_READ, 2 << 20, 1 << 20);
  assert.ok(z.data!.every((b) => b === 0));
  assert.deepEqual(z.chunks.map((x) => x.type), ['hole']);
  assert.equal((await c.request(P.NBD_CMD_WRITE_ZEROES, 0, 4096, P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO)).error, 0);
  assert.equal((await c.request(P.NBD_CMD_CACHE, 0, 1 << 20)).error, 0);
  assert.equal(readFileSync(path).subarray(2 * 4096, 2 * 4096 + 10).toString('hex'), '5a'.repeat(10));
});

test('simple replies when structured replies are not negotiated (plain socket reads)', async (t) => {
  const backend = new DelayedBackend(1 << 20);
  const server = new NbdServer({ exports: new Map([['m', { backend }]]), sharedReadBuffer: false });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => server.close());
  const c = await client(t, port, 'm', { structured: false });
  const payload = Buffer.from('hello, block device');
  assert.equal((await c.request(P.NBD_CMD_WRITE, 100, payload.length, 0, payload)).error, 0);
  const r = await c.request(P.NBD_CMD_READ, 100, payload.length);
  assert.equal(r.data!.toString(), payload.toString());
  assert.equal((await c.request(P.NBD_CMD_READ, 1 << 20, 1)).error, P.NBD_EINVAL);
  assert.equal((await c.request(P.NBD_CMD_READ, 0, 0)).error, 0, 'zero-length read');
  assert.equal((await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 10)).error, P.NBD_EINVAL, 'no meta context');
  assert.equal((await c.request(P.NBD_CMD_READ, 0, 8, P.NBD_CMD_FLAG_DF)).error, P.NBD_EINVAL, 'DF needs structured replies');
  const big = Buffer.alloc(300_000, 0x42);
  assert.equal((await c.request(P.NBD_CMD_WRITE, 4096, big.length, 0, big)).error, 0);
  assert.deepEqual((await c.request(P.NBD_CMD_READ, 4096, big.length)).data, big);
});

test('replies complete out of order with many requests in flight', async (t) => {
  const backend = new DelayedBackend(1 << 20);
  backend.delayMs = (offset) => (offset === 0 ? 150 : 0);
  const { port } = await startServer(t, new Map([['m', { backend }]]));
  const c = await client(t, port, 'm');
  backend.data.fill(1, 0, 4096);
  backend.data.fill(2, 4096, 8192);
  const slow = c.send(P.NBD_CMD_READ, 0, 4096);
  const fast = c.send(P.NBD_CMD_READ, 4096, 4096);
  const first = await c.nextReply();
  const second = await c.nextReply();
  assert.equal(first.handle, fast);
  assert.equal(second.handle, slow);
  assert.ok(first.data!.every((b) => b === 2) && second.data!.every((b) => b === 1));

  // 300 pipelined writes (more than the in-flight bound) all complete, each exactly once.
  backend.delayMs = (offset) => (offset / 4096) % 3;
  const handles = new Set<number>();
  for (let i = 0; i < 300; i++) handles.add(c.send(P.NBD_CMD_WRITE, (i % 200) * 4096, 4096, 0, Buffer.alloc(4096, i & 0xff)));
  for (let i = 0; i < 300; i++) {
    const r = await c.nextReply();
    assert.equal(r.error, 0);
    assert.ok(handles.delete(r.handle));
  }
  assert.equal(handles.size, 0);
});

test('errors: bounds, read-only, unknown commands and flags, oversized and zero-length requests', async (t) => {
  const rw = new DelayedBackend(1 << 20);
  const ro = new DelayedBackend(1 << 20, true);
  const { port } = await startServer(t, new Map<string, NbdExport>([['rw', { backend: rw }], ['ro', { backend: ro }]]), undefined, { maxPayloadBytes: 1 << 20 });
  const c = await client(t, port, 'rw');
  assert.equal((await c.request(P.NBD_CMD_READ, (1 << 20) - 10, 11)).error, P.NBD_EINVAL);
  assert.equal((await c.request(P.NBD_CMD_WRITE, (1 << 20) - 10, 11, 0, Buffer.alloc(11))).error, P.NBD_ENOSPC);
  assert.equal((await c.request(P.NBD_CMD_TRIM, 1 << 20, 4096)).error, P.NBD_EINVAL);
  assert.equal((await c.request(P.NBD_CMD_BLOCK_STATUS, (1 << 20) - 1, 2)).error, P.NBD_EINVAL);
  assert.equal((await c.request(P.NBD_CMD_WRITE_ZEROES, 1 << 20, 1)).error, P.NBD_ENOSPC);
  assert.equal((await c.request(2 ** 53 > 0 ? 42 : 0, 0, 0)).error, P.NBD_EINVAL, 'unknown command');
  assert.equal((await c.request(P.NBD_CMD_READ, 0, 512, 1 << 9)).error, P.NBD_EINVAL, 'unknown flag');
  assert.equal((await c.request(P.NBD_CMD_WRITE, 0, 4, P.NBD_CMD_FLAG_REQ_ONE, Buffer.alloc(4))).error, P.NBD_EINVAL, 'flag of another command');
  assert.equal((await c.request(P.NBD_CMD_WRITE_ZEROES, 0, 4096, P.NBD_CMD_FLAG_FAST_ZERO)).error, P.NBD_EINVAL, 'FAST_ZERO not advertised');
  // Offsets beyond 2^53 are still refused, not wrapped.
  const hugeOff = await c.request(P.NBD_CMD_READ, 2 ** 60, 1);
  assert.equal(hugeOff.error, P.NBD_EINVAL);
  // Oversized write: its 2 MiB payload is read off the socket, the request fails, the connection lives.
  const big = Buffer.alloc(2 << 20, 9);
  assert.equal((await c.request(P.NBD_CMD_WRITE, 0, big.length, 0, big)).error, P.NBD_EINVAL);
  assert.equal((await c.request(P.NBD_CMD_READ, 0, 2 << 20)).error, P.NBD_EINVAL, 'oversized read');
  for (const type of [P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_CACHE, P.NBD_CMD_FLUSH]) {
    assert.equal((await c.request(type, 0, 0)).error, 0, `zero-length ${P.NBD_CMD_NAMES[type]}`);
  }
  assert.equal((await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 0)).error, P.NBD_EINVAL);
  assert.equal(rw.data.subarray(0, 8).every((b) => b === 0), true, 'nothing written by refused requests');
  // FUA on write reaches the backend; FLUSH calls flush.
  await c.request(P.NBD_CMD_WRITE, 0, 4, P.NBD_CMD_FLAG_FUA, Buffer.from('abcd'));
  await c.request(P.NBD_CMD_FLUSH, 0, 0);
  assert.equal(rw.fuaWrites, 1);
  assert.equal(rw.flushes, 2, 'the zero-length FLUSH above and this one');

  const r = await client(t, port, 'ro');
  assert.equal((await r.request(P.NBD_CMD_WRITE, 0, 4, 0, Buffer.alloc(4))).error, P.NBD_EPERM);
  assert.equal((await r.request(P.NBD_CMD_TRIM, 0, 4)).error, P.NBD_EPERM);
  assert.equal((await r.request(P.NBD_CMD_WRITE_ZEROES, 0, 4)).error, P.NBD_EPERM);
  assert.equal((await r.request(P.NBD_CMD_READ, 0, 4)).error, 0);

  // DISC: the server closes after answering what is in flight.
  r.send(P.NBD_CMD_READ, 0, 4);
  r.socket.write(encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, handleHi: 0, handleLo: 999, offset: 0, length: 0 }));
  assert.equal((await r.nextReply()).error, 0);
  await r.reader.closed();
});

test('hostile clients (bad magic, huge option, huge write, garbage) do not disturb a concurrent client', async (t) => {
  const backend = new DelayedBackend(1 << 20);
  const registry = new Registry();
  const { server, port } = await startServer(t, new Map([['m', { backend }]]), registry);
  const good = await client(t, port, 'm');
  const check = async (i: number): Promise<void> => {
    const p = Buffer.alloc(512, i);
    assert.equal((await good.request(P.NBD_CMD_WRITE, i * 512, 512, 0, p)).error, 0);
    assert.deepEqual((await good.request(P.NBD_CMD_READ, i * 512, 512)).data, p);
  };
  await check(1);

  // 1. Bad request magic in transmission: that client alone is disconnected.
  const bad = await client(t, port, 'm');
  bad.socket.write(Buffer.alloc(28, 0xff));
  await bad.reader.closed();
  await check(2);

  // 2. Huge option length: streamed and refused without buffering; the handshake goes on.
  const huge = await TinyClient.connect(port);
  t.after(() => huge.close());
  await huge.greet();
  const header = encodeOption(P.NBD_OPT_INFO).subarray(0, 16);
  header.writeUInt32BE(0xfffffff0, 12);
  huge.socket.write(header);
  huge.socket.write(Buffer.alloc(4 << 20));
  await check(3);
  huge.close();

  // 3. Huge write length (4 GiB - 1): the payload is never allocated.
  const hw = await client(t, port, 'm');
  hw.socket.write(encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: 0xffffffff }));
  hw.socket.write(Buffer.alloc(1 << 20, 0xab));
  await check(4);
  hw.close();

  // 4. Garbage instead of a handshake; and an unknown export with EXPORT_NAME.
  const g = await openSocket(port);
  const gr = new ByteReader(g);
  await gr.read(18);
  g.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await gr.closed();
  const u = await TinyClient.connect(port);
  await u.greet();
  u.socket.write(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
  await u.reader.closed();
  // 5. A client that vanishes mid-request with a payload pending.
  const v = await client(t, port, 'm');
  v.socket.write(encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: 65536 }).subarray(0, 28));
  v.socket.write(Buffer.alloc(1000));
  v.socket.destroy();
  await check(5);
  assert.equal(backend.data[0], 0, 'nothing from the hostile clients landed');
  const text = await registry.metrics();
  assert.match(text, /raftblock_nbd_protocol_errors_total \d+/);
  assert.match(text, /raftblock_nbd_requests_total\{command="write"\} \d+/);
  assert.match(text, /raftblock_nbd_written_bytes_total \d+/);
  assert.match(text, /raftblock_nbd_request_duration_seconds_bucket\{le="[^"]+",command="read"\}/);
  assert.ok(server.connectionCount >= 1);
});

test('thousands of requests answered synchronously while paused do not grow the stack', async (t) => {
  const backend = new DelayedBackend(1 << 20);
  backend.delayMs = (offset) => (offset === 0 ? 50 : 0);
  const { port } = await startServer(t, new Map([['m', { backend }]]), undefined, { maxInflightRequests: 1 });
  const c = await client(t, port, 'm', { structured: false });
  c.send(P.NBD_CMD_WRITE, 0, 4, 0, Buffer.from('slow'));
  const n = 20000;
  const wire = Buffer.concat(Array.from({ length: n }, (_, i) => encodeRequest({ flags: 1 << 9, type: P.NBD_CMD_READ, handleHi: 1, handleLo: i, offset: 0, length: 0 })));
  c.socket.write(wire);
  const first = await c.nextReply();
  assert.equal(first.error, 0);
  // The rest are simple 16-byte replies with EINVAL (unknown flag); read them raw.
  const raw = await c.reader.read(16 * n);
  for (let i = 0; i < n; i++) assert.equal(raw.readUInt32BE(16 * i + 4), P.NBD_EINVAL);
});

test('requests pipelined before the client half-closes are all answered', async (t) => {
  const backend = new DelayedBackend(1 << 20);
  backend.delayMs = () => 5;
  const { port } = await startServer(t, new Map([['m', { backend }]]), undefined, { maxInflightRequests: 4 });
  const c = await client(t, port, 'm');
  const n = 40;
  for (let i = 0; i < n; i++) c.send(P.NBD_CMD_WRITE, i * 4096, 4096, 0, Buffer.alloc(4096, i + 1));
  c.socket.end();
  for (let i = 0; i < n; i++) assert.equal((await c.nextReply()).error, 0);
  await c.reader.closed();
  for (let i = 0; i < n; i++) assert.equal(backend.data[i * 4096], i + 1);
});

test('close() completes in-flight requests, answers buffered ones ESHUTDOWN, flushes, closes', async (t) => {
  const backend = new DelayedBackend(1 << 20);
  backend.delayMs = () => 100;
  const server = new NbdServer({ exports: new Map([['m', { backend }]]), limits: { maxInflightRequests: 1 } });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  const c = await client(t, port, 'm');
  const started = new Promise<void>((resolve) => (backend.onWriteStart = resolve));
  const h1 = c.send(P.NBD_CMD_WRITE, 0, 4, 0, Buffer.from('wxyz'));
  const h2 = c.send(P.NBD_CMD_WRITE, 4, 4, 0, Buffer.from('late'));
  const h3 = c.send(P.NBD_CMD_READ, 0, 4);
  await started; // h1 is in flight (for 100 ms); h2 and h3 wait behind the in-flight bound
  const closing = server.close();
  const replies = new Map<number, number>();
  for (let i = 0; i < 3; i++) {
    const r = await c.nextReply();
    replies.set(r.handle, r.error);
  }
  assert.deepEqual([replies.get(h1), replies.get(h2), replies.get(h3)], [0, P.NBD_ESHUTDOWN, P.NBD_ESHUTDOWN]);
  await c.reader.closed();
  await closing;
  assert.equal(backend.data.subarray(0, 8).toString('latin1'), 'wxyz\0\0\0\0');
  assert.ok(backend.flushes >= 1, 'flushed on close');
});

test('raftblock export-file prints its ports, serves, and exits 0 on SIGTERM', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const child = spawn(process.execPath, [cliPath, 'export-file', path, '--name', 'disk', '--size', '4M', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--description', 'test disk'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => child.kill('SIGKILL'));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`exited ${code}`)));
  });
  const ev = JSON.parse(line) as { event: string; nbd: string; metrics: string };
  assert.equal(ev.event, 'listening');
  const port = Number(ev.nbd.split(':').at(-1));
  assert.ok(port > 0);
  const c = await TinyClient.connect(port);
  t.after(() => c.close());
  await c.greet();
  const info = await c.option(P.NBD_OPT_INFO, encodeInfoRequest('disk', [P.NBD_INFO_DESCRIPTION]));
  const desc = info.find((x) => x.replyType === P.NBD_REP_INFO && x.payload.readUInt16BE(0) === P.NBD_INFO_DESCRIPTION);
  assert.equal(desc?.payload.subarray(2).toString(), 'test disk');
  const replies = await c.option(P.NBD_OPT_GO, encodeInfoRequest('disk', []));
  assert.equal(replies.at(-1)!.replyType, P.NBD_REP_ACK);
  assert.equal((await c.request(P.NBD_CMD_WRITE, 0, 5, P.NBD_CMD_FLAG_FUA, Buffer.from('hello'))).error, 0);
  const health = await fetch(`http://${ev.metrics}/healthz`);
  assert.equal(health.status, 200);
  const metrics = await (await fetch(`http://${ev.metrics}/metrics`)).text();
  assert.match(metrics, /raftblock_nbd_connections 1/);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  await c.reader.closed();
  assert.equal(await exited, 0);
  assert.equal(readFileSync(path).subarray(0, 5).toString(), 'hello');
});

test('property: any sequence of well-framed requests is answered once per handle with a spec errno, and the connection lives on', async (t) => {
  const sizeBytes = 1 << 20;
  const maxPayloadBytes = 64 * 1024;
  const backend = new DelayedBackend(sizeBytes, false, maxPayloadBytes);
  backend.delayMs = (offset) => offset % 3; // completions out of order
  const { port } = await startServer(t, new Map([['m', { backend }]]), undefined, { maxPayloadBytes, maxInflightRequests: 8 });
  const allowedErrnos = new Set([0, P.NBD_EINVAL, P.NBD_ENOSPC, P.NBD_EPERM, P.NBD_ENOTSUP, P.NBD_EOVERFLOW]);
  const offsetArb = fc.oneof(fc.integer({ min: 0, max: sizeBytes }), fc.constantFrom(sizeBytes - 1, sizeBytes, 2 ** 40, 2 ** 63));
  const lengthArb = fc.oneof(fc.integer({ min: 0, max: 8192 }), fc.constantFrom(maxPayloadBytes, maxPayloadBytes + 1, 100_000));
  const requestArb = fc.record({
    type: fc.oneof(fc.integer({ min: 0, max: 7 }).filter((x) => x !== P.NBD_CMD_DISC), fc.integer({ min: 8, max: 0xffff })),
    flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0x3f }), fc.integer({ min: 0, max: 0xffff })),
    offset: offsetArb,
    length: lengthArb,
  });
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.array(requestArb, { minLength: 1, maxLength: 25 }), async (structured, reqs) => {
      const c = await TinyClient.connect(port);
      try {
        await c.handshake('m', { structured });
        const handles = new Set<number>();
        for (const r of reqs) {
          const payload = r.type === P.NBD_CMD_WRITE ? Buffer.alloc(r.length, 0x77) : undefined;
          handles.add(c.send(r.type, r.offset, r.length, r.flags, payload));
        }
        for (let i = 0; i < reqs.length; i++) {
          const reply = await c.nextReply();
          assert.ok(handles.delete(reply.handle), `one reply per handle (${reply.handle})`);
          assert.ok(allowedErrnos.has(reply.error), `errno ${reply.error}`);
        }
        const probe = await c.request(P.NBD_CMD_READ, 0, 512);
        assert.equal(probe.error, 0);
      } finally {
        c.close();
      }
    }),
    { numRuns: 40 },
  );
});

/** A server of a 1 MiB memory export `m` with its own registry, listening on a free port. */
async function limitedServer(t: TestContext, opts: Partial<NbdServerOptions>): Promise<{ server: NbdServer; port: number; registry: Registry }> {
  const registry = new Registry();
  const server = new NbdServer({ exports: new Map([['m', { backend: new DelayedBackend(1 << 20) }]]), registry, ...opts });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => server.close());
  return { server, port, registry };
}

/** The server's open connections come down to `n` (it counts a closed one a little after the client sees it close). */
async function untilConnectionCount(server: NbdServer, n: number): Promise<void> {
  for (let waitedMs = 0; server.connectionCount !== n && waitedMs < 2000; waitedMs += 10) await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.connectionCount, n, 'the server still counts connections that closed');
}

/** A counter's value in the registry's text. */
async function counterValue(registry: Registry, name: string): Promise<number> {
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(await registry.metrics())?.[1]);
}

test('connections past maxConnections are closed at once; the clients already in carry on, and a slot freed is taken again', async (t) => {
  const { server, port, registry } = await limitedServer(t, { maxConnections: 4 });
  const inside = await client(t, port, 'm');
  // A client opening connections without end (never sending a byte): three fill the slots left.
  const hogs = await openIdle(port, 10);
  t.after(() => hogs.forEach((s) => s.destroy()));
  assert.equal(await closedWithin(hogs, 1000), 7, 'connections past the limit were not closed');
  assert.equal(server.connectionCount, 4);
  const payload = Buffer.alloc(4096, 0x5a);
  assert.equal((await inside.request(P.NBD_CMD_WRITE, 0, payload.length, P.NBD_CMD_FLAG_FUA, payload)).error, 0);
  assert.deepEqual((await inside.request(P.NBD_CMD_READ, 0, 4096)).data, payload);
  assert.equal(await counterValue(registry, 'raftblock_nbd_connections_refused_total'), 7);
  // The hogs gone, a client gets in again.
  hogs.forEach((s) => s.destroy());
  await untilConnectionCount(server, 1);
  const again = await client(t, port, 'm');
  assert.deepEqual((await again.request(P.NBD_CMD_READ, 0, 4096)).data, payload);
});

test('a connection that has not finished its handshake within the limit is closed and counted; one that finished stays', async (t) => {
  const { server, port, registry } = await limitedServer(t, { handshakeLimitMs: 400 });
  const inside = await client(t, port, 'm');
  // Silent clients (a slowloris holding slots): still open just before the limit, closed after.
  const silent = await openIdle(port, 3);
  t.after(() => silent.forEach((s) => s.destroy()));
  // They read the greeting (an unread one would hold back the end of stream), then say nothing.
  silent.forEach((s) => s.resume());
  assert.equal(await closedWithin(silent, 150), 0, 'closed before the handshake limit');
  assert.equal(await closedWithin(silent, 3000), 3, 'silent connections outlived the handshake limit');
  await untilConnectionCount(server, 1);
  assert.equal(await counterValue(registry, 'raftblock_nbd_handshake_timeouts_total'), 3);
  // The client that finished its handshake is past the limit and carries on.
  const payload = Buffer.alloc(4096, 0x3c);
  assert.equal((await inside.request(P.NBD_CMD_WRITE, 8192, payload.length, 0, payload)).error, 0);
  assert.deepEqual((await inside.request(P.NBD_CMD_READ, 8192, 4096)).data, payload);
});

test('export-file and node refuse a handshake limit that is not a whole number of seconds of at least 1', () => {
  for (const [command, flag] of [['export-file', '--handshake-limit'], ['node', '--nbd-handshake-limit']] as const) {
    for (const bad of ['0', '-1', 'soon', '1.5']) {
      const args = command === 'export-file' ? ['export-file', '/nonexistent', '--name', 'x'] : ['node', '--id', '1', '--data', '/nonexistent', '--bootstrap'];
      const r = spawnSync(process.execPath, [cliPath, ...args, flag, bad], { encoding: 'utf8', timeout: 20_000 });
      assert.notEqual(r.status, 0, `${command} ${flag} ${bad} was accepted`);
      assert.match(r.stderr, new RegExp(`${flag} must be a whole number of seconds, at least 1`));
    }
  }
});

test('export-file refuses a --max-connections that is not a count of at least 1', () => {
  for (const bad of ['0', '-1', 'many', '2.5']) {
    const r = spawnSync(process.execPath, [cliPath, 'export-file', '/nonexistent', '--name', 'x', '--max-connections', bad], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(r.status, 0, `--max-connections ${bad} was accepted`);
    assert.match(r.stderr, /--max-connections must be a whole number of at least 1/);
  }
});
