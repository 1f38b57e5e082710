/**
 * A frame whose front cannot be valid (a length past maxFrameBytes, a head length of 0, past
 * the body it sits in, or past maxFrameHeadBytes, a head that does not start as a map) is
 * refused once those first bytes have arrived: it was buffered whole, up to the 64 MiB frame
 * limit, before its head length or its head was looked at, so a peer could make a node hold
 * 64 MiB per connection with a frame it would refuse anyway. Valid frames cut at any byte
 * still decode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { encodeFrame, FrameDecoder, maxFrameBytes, maxFrameHeadBytes } from '../../src/cluster/frame.js';
import { ProtocolError } from '../../src/common/errors.js';
import { dialWatched } from '../helpers/sockets.js';
import { transportWithBoundPeer } from '../helpers/transport.js';
import { until } from '../helpers/until.js';

/** The first bytes of a frame: its length, its head's length, then `head` (the head's first bytes). */
function front(bodyBytes: number, headBytes: number, head: number[] = []): Buffer {
  const b = Buffer.alloc(8 + head.length);
  b.writeUInt32BE(bodyBytes, 0);
  b.writeUInt32BE(headBytes, 4);
  Buffer.from(head).copy(b, 8);
  return b;
}

/** Fronts no frame can follow, each with what its refusal says. */
const badFronts: [string, Buffer, RegExp][] = [
  ['a length past the frame limit', front(maxFrameBytes + 1, 10).subarray(0, 4), /exceeds/],
  ['a head length past the head limit', front(maxFrameBytes, maxFrameHeadBytes + 1), /frame head of \d+ bytes exceeds/],
  ['a head length of 0', front(maxFrameBytes, 0), /frame head of 0 bytes/],
  ['a head length past its body', front(1024, 1024), /frame head of 1024 bytes in a body of 1024/],
  ['a body too short for a head length', front(3, 0).subarray(0, 4), /too short/],
  ['a head that is not a map', front(maxFrameBytes, 1024, [0x93]), /not a map/],
];

for (const [what, bytes, message] of badFronts) {
  test(`the decoder refuses a frame with ${what} from its first ${bytes.length} bytes`, () => {
    assert.throws(() => new FrameDecoder().push(bytes), (err: unknown) => err instanceof ProtocolError && message.test((err as Error).message));
    // Byte by byte too: each check runs as soon as its bytes are in.
    const d = new FrameDecoder();
    assert.throws(() => {
      for (let i = 0; i < bytes.length; i++) d.push(bytes.subarray(i, i + 1));
    }, ProtocolError);
  });
}

test('a valid frame arriving byte by byte is waited for, never refused for its front', () => {
  const whole = encodeFrame({ from: '2', addr: '127.0.0.1:1', epoch: 3, reqs: [{ id: 1, op: 'getMap', a: {} }] });
  const d = new FrameDecoder();
  for (let i = 0; i < whole.length - 1; i++) assert.deepEqual(d.push(whole.subarray(i, i + 1)), []);
  const frames = d.push(whole.subarray(whole.length - 1));
  assert.equal(frames.length, 1);
  assert.equal(frames[0].reqs![0].op, 'getMap');
});

test('a transport closes a connection as soon as the front of a bad frame arrives, without waiting for the rest; others carry on', async (t) => {
  const registry = new Registry();
  const { tr, peer: good } = await transportWithBoundPeer(t, { registry });
  for (const [what, bytes] of badFronts) {
    const bad = await dialWatched(t, tr.address);
    // The front alone: the rest of the frame (up to 64 MiB) never comes.
    bad.s.write(bytes);
    // Well before the 10 s first-frame limit, which would close it anyway.
    await until(() => bad.closed(), 5000, `the connection that sent ${what} closed`);
  }
  assert.equal(good.closed(), false);
  assert.equal(tr.isConnected('3'), true);
  const bad = (await registry.getSingleMetric('raftblock_transport_bad_frames_total')!.get()).values[0].value;
  assert.equal(bad, badFronts.length);
});
