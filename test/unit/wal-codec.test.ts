import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { crc32c, crc32cNative, crc32cTs } from '../../src/wal/crc32c.js';
import {
  RecordKind,
  batchHeaderBytes,
  decodeBatchHeader,
  decodeRecord,
  decodeSegmentHeader,
  encodeBatchHeader,
  encodeRecord,
  encodeSegmentHeader,
  newRecordView,
  parseSegmentFileName,
  readU64,
  recordSpanBytes,
  segmentFileName,
  writeU64,
} from '../../src/wal/format.js';
import { requireCapability } from '../helpers/tools.js';

test('CRC32C matches the published check values', () => {
  assert.equal(crc32cTs(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32cTs(Buffer.alloc(32)), 0x8a9136aa);
  assert.equal(crc32cTs(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  const inc = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  assert.equal(crc32cTs(inc), 0x46dd794e);
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});

test('CRC32C: TS and SSE4.2 agree on every length and alignment, and chain through a seed', (t) => {
  // Under CI=true a missing addon (or a CPU without SSE4.2) fails this test instead of skipping it.
  if (!requireCapability(t, crc32cNative !== undefined, 'the native addon with SSE4.2 CRC32C (npm run build:native)')) return;
  const native = crc32cNative!;
  const buf = randomBytes(10_000);
  for (let len = 0; len < 300; len++) {
    for (const start of [0, 1, 3, 7]) assert.equal(native(buf, start, start + len, 0), crc32cTs(buf, start, start + len, 0), `len ${len} start ${start}`);
  }
  for (const n of [4096, 4136, 9999]) assert.equal(native(buf, 0, n, 0), crc32cTs(buf, 0, n, 0));
  const whole = crc32cTs(buf, 0, 5000);
  assert.equal(crc32cTs(buf, 2000, 5000, crc32cTs(buf, 0, 2000)), whole);
  assert.equal(native(buf, 2000, 5000, native(buf, 0, 2000, 0)), whole);
  assert.equal(crc32c(buf, 0, 5000), whole);
});

test('u64 fields hold safe integers exactly', () => {
  const b = Buffer.alloc(8);
  for (const v of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER]) {
    writeU64(b, 0, v);
    assert.equal(readU64(b, 0), v);
  }
});

test('a record round-trips and any single bit flip in it is detected', () => {
  const buf = Buffer.alloc(8192);
  const payload = randomBytes(123);
  const seed = 0xdeadbeef;
  const end = encodeRecord(buf, 64, seed, RecordKind.Entry, 2, 77, 2 ** 33 + 5, 2 ** 40 + 9, 0, payload, payload.length);
  assert.equal(end, 64 + recordSpanBytes(123));
  const v = newRecordView();
  assert.equal(decodeRecord(buf, 64, end, seed, v), null);
  assert.deepEqual([v.kind, v.entryType, v.groupId, v.term, v.index, v.payloadBytes], [RecordKind.Entry, 2, 77, 2 ** 33 + 5, 2 ** 40 + 9, 123]);
  assert.ok(buf.subarray(v.payloadOffset, v.payloadOffset + v.payloadBytes).equals(payload));
  assert.match(decodeRecord(buf, 64, end, seed + 1, v) ?? '', /checksum/, 'a record from another batch fails');
  for (let bit = 0; bit < (40 + 123) * 8; bit++) {
    const at = 64 + (bit >> 3);
    buf[at] ^= 1 << (bit & 7);
    assert.notEqual(decodeRecord(buf, 64, end, seed, v), null, `bit ${bit} flipped went unnoticed`);
    buf[at] ^= 1 << (bit & 7);
  }
});

test('batch and segment headers reject another incarnation, bad sizes and damage', () => {
  const buf = Buffer.alloc(64 * 1024);
  encodeBatchHeader(buf, 4096, { salt: 42, batchBytes: 8192, batchSeq: 7, recordCount: 3, usedBytes: 5000 });
  assert.deepEqual(decodeBatchHeader(buf, 4096, 42, buf.length, 32 * 1024), { salt: 42, batchBytes: 8192, batchSeq: 7, recordCount: 3, usedBytes: 5000 });
  assert.equal(decodeBatchHeader(buf, 4096, 43, buf.length, 32 * 1024), null, 'other salt');
  assert.equal(decodeBatchHeader(buf, 4096, 42, 8192, 32 * 1024), null, 'runs past the segment');
  assert.equal(decodeBatchHeader(buf, 4096, 42, buf.length, 4096), null, 'larger than maxBatchBytes');
  buf[4096 + batchHeaderBytes - 1] ^= 1;
  assert.equal(decodeBatchHeader(buf, 4096, 42, buf.length, 32 * 1024), null, 'damaged');
  const seg = Buffer.alloc(4096);
  const h = { seq: 2 ** 35, salt: 9, segmentBytes: 1 << 20, maxBatchBytes: 65536, maxBatchesInFlight: 2 };
  encodeSegmentHeader(seg, h);
  assert.deepEqual(decodeSegmentHeader(seg), h);
  seg[20] ^= 4;
  assert.equal(typeof decodeSegmentHeader(seg), 'string');
  assert.equal(parseSegmentFileName(segmentFileName(2 ** 35)), 2 ** 35);
  assert.equal(parseSegmentFileName('0000000000000001.wal.tmp'), undefined);
});
