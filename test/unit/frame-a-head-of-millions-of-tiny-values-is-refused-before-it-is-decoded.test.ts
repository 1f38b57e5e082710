/**
 * A frame head is decoded whole before anything in it is checked, and decoding costs heap per
 * value: a head of millions of one-byte values (empty maps) took ~60 bytes of heap per byte
 * and seconds of one synchronous call. A head longer than maxFrameHeadBytes, or holding more
 * than maxFrameHeadItems values, is refused before it is decoded, and the connection it came
 * on is closed; the biggest legitimate heads still pass.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { encodeFrame, FrameDecoder, maxFrameHeadBytes, maxFrameHeadItems, type Frame, type GroupMessage } from '../../src/cluster/frame.js';
import { ProtocolError } from '../../src/common/errors.js';
import { dialWatched } from '../helpers/sockets.js';
import { transportWithBoundPeer } from '../helpers/transport.js';
import { until } from '../helpers/until.js';

const packr = new Packr({ useRecords: false });

/** A frame whose head is `{from, addr, epoch, msgs: <tail>}`, the tail's bytes written by hand. */
function handFrame(tail: Buffer): Buffer {
  const head = Buffer.concat([Buffer.from([0x84]), ...['from', '2', 'addr', '', 'epoch', 1, 'msgs'].map((v) => packr.pack(v)), tail]);
  const out = Buffer.alloc(8 + head.length);
  out.writeUInt32BE(4 + head.length, 0);
  out.writeUInt32BE(head.length, 4);
  head.copy(out, 8);
  return out;
}

/** An array32 of `n` values, each the byte `value`. */
function array32Of(n: number, value: number): Buffer {
  const h = Buffer.from([0xdd, 0, 0, 0, 0]);
  h.writeUInt32BE(n, 1);
  return Buffer.concat([h, Buffer.alloc(n, value)]);
}

function refusal(frame: Buffer): Error {
  try {
    new FrameDecoder().push(frame);
  } catch (err) {
    return err as Error;
  }
  assert.fail('the frame was taken');
}

for (const [kind, byte] of [['empty maps', 0x80], ['empty arrays', 0x90], ['zeros', 0x00]] as const) {
  test(`a head of 4 million ${kind} is refused for its count of values, before it is decoded`, () => {
    const before = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const err = refusal(handFrame(array32Of(4_000_000, byte)));
    const ms = performance.now() - t0;
    assert.ok(err instanceof ProtocolError, String(err));
    assert.match(err.message, new RegExp(`more than ${maxFrameHeadItems} values`));
    // Decoded, it took ~1.7 s and ~250 MB of heap; counted, milliseconds and nothing.
    assert.ok(ms < 1000, `refused after ${Math.round(ms)} ms`);
    assert.ok(process.memoryUsage().heapUsed - before < 64 * 1024 * 1024);
  });
}

test('values in nested containers and map entries are counted too', () => {
  // 70,000 arrays of 15 maps of one entry ('' to an empty map): 46 values in 46 bytes each.
  const inner = Buffer.concat([Buffer.from([0x9f]), ...Array.from({ length: 15 }, () => Buffer.from([0x81, 0xa0, 0x80]))]);
  const h = Buffer.from([0xdd, 0, 0, 0, 0]);
  h.writeUInt32BE(70_000, 1);
  const err = refusal(handFrame(Buffer.concat([h, ...Array.from({ length: 70_000 }, () => inner)])));
  assert.ok(err instanceof ProtocolError, String(err));
  assert.match(err.message, /more than \d+ values/);
});

test('a large head holding an extension no encoder of ours writes (a msgpackr set) is refused', () => {
  const sets = Buffer.concat(Array.from({ length: 40_000 }, () => Buffer.from([0xd4, 0x73, 0x00, 0x90])));
  const h = Buffer.from([0xdd, 0, 0, 0, 0]);
  h.writeUInt32BE(40_000, 1);
  const err = refusal(handFrame(Buffer.concat([h, sets])));
  assert.ok(err instanceof ProtocolError, String(err));
  assert.match(err.message, /extension 115/);
});

test('a head longer than maxFrameHeadBytes is refused, and never encoded', () => {
  const big = Buffer.alloc(maxFrameHeadBytes + 1);
  const frame: Frame = { from: '2', addr: '', epoch: 1, resps: [{ id: 1, r: { runs: [[1, 0, big]] } }] };
  assert.throws(() => encodeFrame(frame), (err: unknown) => err instanceof ProtocolError && /frame head of \d+ bytes exceeds/.test((err as Error).message));
  // By hand: a bin32 of that length inline.
  const h = Buffer.from([0xc6, 0, 0, 0, 0]);
  h.writeUInt32BE(big.length, 1);
  const err = refusal(handFrame(Buffer.concat([h, big])));
  assert.ok(err instanceof ProtocolError, String(err));
  assert.match(err.message, /exceeds/);
});

test("the biggest legitimate heads pass: a snapshot chunk's runs inline, and thousands of appends of small entries", () => {
  // A snapshotChunk answer: 9 MiB of 4 KiB runs (the most fragmented image) and the dedupe table.
  const runs: [number, number, Buffer][] = [];
  for (let at = 0; at < 9 * 1024 * 1024; at += 4096) runs.push([1, at * 2, Buffer.alloc(4096, at & 0xff)]);
  const chunk = { runs, next: { volumeId: 1, offset: 1 << 30 }, recent: Buffer.alloc(16384 * 8) };
  const answer = new FrameDecoder().push(encodeFrame({ from: '2', addr: '', epoch: 1, resps: [{ id: 7, r: chunk }] }));
  assert.equal(answer.length, 1);
  const got = answer[0].resps![0].r as typeof chunk;
  assert.equal(got.runs.length, runs.length);
  assert.deepEqual(got.runs[100][2], runs[100][2]);

  // 4,096 appends (the most a peer's queue holds) of 20 inline entries each: ~800,000 values.
  const msgs: GroupMessage[] = [];
  for (let g = 0; g < 4096; g++) {
    const entries = Array.from({ length: 20 }, (_, i) => ({ index: 1000 + i, term: 3, type: 0, data: Buffer.alloc(40, i) }));
    msgs.push({ g, m: { type: 'app', from: 1, to: 2, term: 3, logTerm: 3, index: 999, commit: 998, entries } });
  }
  const frames = new FrameDecoder().push(encodeFrame({ from: '2', addr: '', epoch: 1, msgs }));
  assert.equal(frames[0].msgs!.length, 4096);
});

test('a transport closes the connection a head of millions of values came on, and only it', async (t) => {
  const { tr, peer: good } = await transportWithBoundPeer(t);
  const bad = await dialWatched(t, tr.address);
  bad.s.write(handFrame(array32Of(4_000_000, 0x80)));
  await until(() => bad.closed(), 5000, 'the connection of the bad frame closed');
  assert.equal(good.closed(), false);
  assert.equal(tr.isConnected('3'), true);
});
