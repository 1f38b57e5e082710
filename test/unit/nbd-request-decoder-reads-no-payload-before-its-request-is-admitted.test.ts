import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../src/nbd/buffer-pool.js';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequest, NbdRequest, NEED_BUDGET, REQUEST, RequestDecoder } from '../../src/nbd/request-codec.js';

test('a WRITE refused admission holds no payload buffer and consumes no payload; admitted later it completes', () => {
  const pool = new BufferPool(1 << 20);
  let admit = false;
  const asked: number[] = [];
  const d = new RequestDecoder(pool, 1 << 20, (req) => {
    asked.push(req.length);
    return admit;
  });
  const payload = Buffer.alloc(8192, 7);
  d.push(encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: payload.length }, payload));
  const req = new NbdRequest();
  assert.equal(d.poll(req), NEED_BUDGET);
  assert.equal(d.poll(req), NEED_BUDGET);
  assert.equal(pool.outstanding, 0, 'no payload buffer taken before admission');
  assert.equal(d.bufferedBytes, payload.length, 'the payload is left unread');
  admit = true;
  assert.equal(d.poll(req), REQUEST);
  assert.deepEqual(asked, [8192, 8192, 8192]);
  assert.deepEqual(req.payload!.buf.subarray(0, payload.length), payload);
  req.payload!.release();
});

test('a READ is yielded only once admitted, and the next header is not parsed meanwhile', () => {
  const pool = new BufferPool(1 << 20);
  let admit = false;
  const d = new RequestDecoder(pool, 1 << 20, () => admit);
  d.push(encodeRequest({ flags: 0, type: P.NBD_CMD_READ, handleHi: 0, handleLo: 1, offset: 0, length: 4096 }));
  d.push(encodeRequest({ flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 }));
  const req = new NbdRequest();
  assert.equal(d.poll(req), NEED_BUDGET);
  assert.equal(d.bufferedBytes, P.NBD_REQUEST_HEADER_BYTES);
  admit = true;
  assert.equal(d.poll(req), REQUEST);
  assert.deepEqual([req.type, req.handleLo], [P.NBD_CMD_READ, 1]);
  assert.equal(d.poll(req), REQUEST);
  assert.deepEqual([req.type, req.handleLo], [P.NBD_CMD_FLUSH, 2]);
});
