/**
 * Before its first frame of this cluster, an accepted connection could send one frame with a
 * valid front of up to maxFrameBytes (64 MiB), all buffered before its head was looked at; with
 * maxUnidentifiedConnections of them a stranger to a keyless cluster made a node hold 4 GiB. Now
 * such a connection's frames are limited to maxUnidentifiedFrameBytes, refused as soon as their
 * length word arrives, while a member whose first frame (its introduction) comes in the same read
 * as a larger frame still has both taken, and so does a new node after its join exchange.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, FrameDecoder, maxFrameBytes, type Frame } from '../../src/cluster/frame.js';
import { maxUnidentifiedFrameBytes } from '../../src/cluster/transport.js';
import { ProtocolError } from '../../src/common/errors.js';
import { closedWithin, dialWatched } from '../helpers/sockets.js';
import { startEchoTransport } from '../helpers/echo-transport.js';
import { until } from '../helpers/until.js';

const clusterId = 'c1';

/** A frame of node `from` carrying one Raft message with a payload of `payloadBytes`. */
function bigFrame(from: string, c: string, payloadBytes: number): Buffer {
  return encodeFrame({ from, addr: '', epoch: 1, c, v: 1, msgs: [{ g: 7, m: { data: Buffer.alloc(payloadBytes, 0x5a) } }] });
}

function intro(from: string, c: string): Buffer {
  return encodeFrame({ from, addr: '', epoch: 1, c, v: 1 });
}

test('a restricted decoder refuses a frame over its limit at its length word and yields one frame a push until lifted', () => {
  const d = new FrameDecoder();
  d.restrict(1024);
  assert.throws(() => d.push(bigFrame('1', clusterId, 2048).subarray(0, 4)), (err: unknown) => err instanceof ProtocolError && /exceeds 1024/.test(err.message));
  const e = new FrameDecoder();
  e.restrict(1024);
  const frames: Frame[] = e.push(Buffer.concat([intro('1', clusterId), intro('2', clusterId), bigFrame('3', clusterId, 4096)]));
  assert.deepEqual(frames.map((f) => f.from), ['1']);
  assert.deepEqual(e.push(Buffer.alloc(0)).map((f) => f.from), ['2']);
  assert.ok(e.holdsBytes);
  assert.throws(() => e.push(Buffer.alloc(0)), ProtocolError, 'the third frame is over the limit while restricted');
  const l = new FrameDecoder();
  l.restrict(1024);
  l.push(Buffer.concat([intro('1', clusterId), bigFrame('3', clusterId, 4096)]));
  l.lift();
  assert.deepEqual(l.push(Buffer.alloc(0)).map((f) => f.from), ['3'], 'after lift() the large frame is taken');
  assert.throws(() => new FrameDecoder().restrict(maxFrameBytes + 1));
});

test('a stranger\'s frame over 1 MiB closes its connection at once; a member\'s introduction and a larger frame in one write are both taken', async (t) => {
  const node = await startEchoTransport(t, { nodeId: '1', clusterId });
  const bad0 = await node.counter('raftblock_transport_bad_frames_total');

  // A stranger announces 2 MiB and sends only the front: refused at its length word.
  const stranger = await dialWatched(t, node.t.address);
  stranger.s.write(bigFrame('9', clusterId, 2 * maxUnidentifiedFrameBytes).subarray(0, 64));
  assert.equal(await closedWithin([stranger.s], 2000), 1, 'the stranger\'s oversized frame was buffered, not refused');
  assert.equal(await node.counter('raftblock_transport_bad_frames_total'), bad0 + 1);

  // In the join exchange it is still a stranger: a large frame after a getMap is refused too.
  const joiner = await dialWatched(t, node.t.address);
  joiner.s.resume(); // (its answer read, so the far end's close is seen)
  joiner.s.write(encodeFrame({ from: '8', addr: '', epoch: 1, c: '', v: 1, reqs: [{ id: 1, op: 'getMap', a: {} }] }));
  await until(() => node.requests.some((r) => r.from === '8'), 5000, 'the join exchange served');
  joiner.s.write(bigFrame('8', '', 2 * maxUnidentifiedFrameBytes).subarray(0, 64));
  assert.equal(await closedWithin([joiner.s], 2000), 1, 'a frame over the limit in the join exchange was buffered');

  // A member: its introduction identifies it, and the 3 MiB frame behind it in the same write is taken.
  const member = await dialWatched(t, node.t.address);
  member.s.write(Buffer.concat([intro('2', clusterId), bigFrame('2', clusterId, 3 * maxUnidentifiedFrameBytes)]));
  await until(() => node.got.some((g) => g.from === '2'), 10_000, 'the member\'s large frame delivered');
  const got = node.got.find((g) => g.from === '2')!;
  assert.equal((got.msgs[0].m as { data: Uint8Array }).data.byteLength, 3 * maxUnidentifiedFrameBytes);
  assert.equal(member.closed(), false);
  // Once identified, later large frames are taken too.
  member.s.write(bigFrame('2', clusterId, 5 * maxUnidentifiedFrameBytes));
  await until(() => node.got.filter((g) => g.from === '2').length === 2, 10_000, 'the member\'s second large frame delivered');
  assert.equal(member.closed(), false);
});
