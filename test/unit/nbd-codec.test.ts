import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BufferPool } from '../../src/nbd/buffer-pool.js';
import type { BlockBackend } from '../../src/nbd/backend.js';
import { Handshake, SERVER_HANDSHAKE_FLAGS, transmissionFlagsFor, type NbdExport } from '../../src/nbd/handshake.js';
import {
  decodeString,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeInfoString,
  encodeMetaContextRequest,
  encodeOption,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeServerGreeting,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
  parseOptionReply,
  readUInt64BE,
  writeUInt64BE,
} from '../../src/nbd/option-codec.js';
import * as P from '../../src/nbd/protocol.js';
import {
  decodeChunkPayload,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  parseReply,
  writeNoneChunk,
  writeOffsetDataPrefix,
  writeOffsetHole,
  writeSimpleReply,
} from '../../src/nbd/reply-codec.js';
import {
  encodeRequest,
  NbdRequest,
  NEED_MORE,
  parseRequestHeader,
  PROTOCOL_ERROR,
  REQUEST,
  RequestDecoder,
} from '../../src/nbd/request-codec.js';
import { nbdErrnoOf } from '../../src/nbd/errno.js';
import { IoError, NoSpace, NotSupported, OutOfRange, ReadOnly, Unavailable } from '../../src/common/errors.js';
import { zeroRuns } from '../../src/nbd/file-backend.js';
import { PskKeys } from '../../src/nbd/tls-psk.js';

// ---- fixtures ---------------------------------------------------------------------------------

function fakeBackend(sizeBytes: number, readOnly = false): BlockBackend {
  const unused = (): never => {
    throw new Error('not used');
  };
  return {
    capabilities: { readOnly, canTrim: true, canWriteZeroes: true, canFastZero: true, canCache: true, canMultiConn: true, canBlockStatus: true },
    blockSizes: { minimum: 1, preferred: 4096, maximum: 32 << 20 },
    size: () => sizeBytes,
    read: unused,
    write: unused,
    flush: unused,
    trim: unused,
    writeZeroes: unused,
    cache: unused,
    blockStatus: unused,
    close: async () => {},
  };
}

const exportsMap = new Map<string, NbdExport>([
  ['disk', { backend: fakeBackend(1 << 20), description: 'a disk' }],
  ['ro', { backend: fakeBackend(4096, true) }],
]);

function clientFlags(flags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags, 0);
  return b;
}

/** Splits the concatenated handshake output into option replies. */
function repliesOf(hs: Handshake): { option: number; replyType: number; payload: Buffer }[] {
  const all = Buffer.concat(hs.output.splice(0));
  const out = [];
  let off = 0;
  while (off < all.length) {
    const r = parseOptionReply(all, off);
    assert.ok(r, 'whole option reply');
    out.push(r.reply);
    off += r.bytes;
  }
  return out;
}

// ---- option codec -----------------------------------------------------------------------------

test('server greeting is NBDMAGIC IHAVEOPT and the fixed-newstyle/no-zeroes flags', () => {
  const g = encodeServerGreeting(SERVER_HANDSHAKE_FLAGS);
  assert.equal(g.length, 18);
  assert.equal(g.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
  assert.equal(g.subarray(8, 16).toString('latin1'), 'IHAVEOPT');
  assert.equal(g.readUInt16BE(16), P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
});

test('option header round-trips and a wrong magic is refused', () => {
  const o = encodeOption(P.NBD_OPT_GO, Buffer.from('abc'));
  assert.deepEqual(parseOptionHeader(o), { option: P.NBD_OPT_GO, length: 3 });
  o[0] ^= 1;
  assert.equal(parseOptionHeader(o), null);
});

test('option reply encodes magic, option, type, length and payload', () => {
  const r = encodeOptionReply(P.NBD_OPT_LIST, P.NBD_REP_ERR_UNSUP, Buffer.from('no'));
  assert.equal(r.readUInt32BE(0), P.NBD_REP_MAGIC_HI);
  assert.equal(r.readUInt32BE(4), P.NBD_REP_MAGIC_LO);
  const p = parseOptionReply(r)!;
  assert.deepEqual({ ...p.reply, payload: p.reply.payload.toString() }, { option: P.NBD_OPT_LIST, replyType: P.NBD_REP_ERR_UNSUP, payload: 'no' });
  assert.equal(parseOptionReply(r.subarray(0, r.length - 1)), null);
});

test('info payloads carry export size/flags, strings and block sizes', () => {
  const e = encodeInfoExport(2 ** 40 + 5, 0x1234);
  assert.equal(e.readUInt16BE(0), P.NBD_INFO_EXPORT);
  assert.equal(readUInt64BE(e, 2), 2 ** 40 + 5);
  assert.equal(e.readUInt16BE(10), 0x1234);
  const n = encodeInfoString(P.NBD_INFO_NAME, 'vol');
  assert.equal(n.readUInt16BE(0), P.NBD_INFO_NAME);
  assert.equal(n.subarray(2).toString(), 'vol');
  const bs = encodeInfoBlockSize(1, 4096, 32 << 20);
  assert.deepEqual([bs.readUInt16BE(0), bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [P.NBD_INFO_BLOCK_SIZE, 1, 4096, 32 << 20]);
  const srv = encodeRepServer('disk', 'desc');
  assert.equal(srv.readUInt32BE(0), 4);
  assert.equal(srv.subarray(4).toString(), 'diskdesc');
  const mc = encodeRepMetaContext(7, 'base:allocation');
  assert.equal(mc.readUInt32BE(0), 7);
  assert.equal(mc.subarray(4).toString(), 'base:allocation');
  const x = encodeExportNameReply(4096, 3, false);
  assert.equal(x.length, 134);
  assert.equal(encodeExportNameReply(4096, 3, true).length, 10);
});

test('INFO/GO request parses name and info types; malformed ones yield a message', () => {
  assert.deepEqual(parseInfoRequest(encodeInfoRequest('disk', [1, 3])), { exportName: 'disk', infoTypes: [1, 3] });
  assert.deepEqual(parseInfoRequest(encodeInfoRequest('', [])), { exportName: '', infoTypes: [] });
  const good = encodeInfoRequest('disk', [1]);
  assert.equal(typeof parseInfoRequest(good.subarray(0, good.length - 1)), 'string');
  assert.equal(typeof parseInfoRequest(Buffer.concat([good, Buffer.alloc(1)])), 'string');
  const huge = Buffer.alloc(6);
  huge.writeUInt32BE(0xffffffff, 0);
  assert.equal(typeof parseInfoRequest(huge), 'string');
});

test('meta context request parses name and queries; malformed ones yield a message', () => {
  const b = encodeMetaContextRequest('disk', ['base:allocation', 'x-y:z']);
  assert.deepEqual(parseMetaContextRequest(b), { exportName: 'disk', queries: ['base:allocation', 'x-y:z'] });
  for (let cut = 0; cut < b.length; cut++) assert.equal(typeof parseMetaContextRequest(b.subarray(0, cut)), 'string');
  assert.equal(typeof parseMetaContextRequest(Buffer.concat([b, Buffer.from([0])])), 'string');
});

test('protocol strings reject NUL and invalid UTF-8', () => {
  assert.equal(decodeString(Buffer.from('ok'), 0, 2), 'ok');
  assert.equal(decodeString(Buffer.from([0x61, 0, 0x62]), 0, 3), null);
  assert.equal(decodeString(Buffer.from([0xff, 0xfe]), 0, 2), null);
});

test('uint64 helpers are exact up to 2^53', () => {
  const b = Buffer.alloc(8);
  for (const v of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]) {
    writeUInt64BE(b, v, 0);
    assert.equal(readUInt64BE(b, 0), v);
  }
});

// ---- handshake state machine ------------------------------------------------------------------

test('handshake: LIST, STARTTLS (policy), unknown option, STRUCTURED_REPLY, meta contexts, GO', () => {
  const hs = new Handshake({ exports: exportsMap });
  assert.equal(Buffer.concat(hs.output.splice(0)).length, 18);
  assert.equal(hs.push(clientFlags()).kind, 'continue');

  assert.equal(hs.push(encodeOption(P.NBD_OPT_LIST)).kind, 'continue');
  let r = repliesOf(hs);
  assert.deepEqual(r.map((x) => x.replyType), [P.NBD_REP_SERVER, P.NBD_REP_SERVER, P.NBD_REP_ACK]);
  assert.equal(r[0].payload.subarray(4, 8).toString(), 'disk');

  hs.push(encodeOption(P.NBD_OPT_STARTTLS));
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_POLICY]);

  hs.push(encodeOption(99, Buffer.from('whatever')));
  assert.deepEqual(repliesOf(hs).map((x) => [x.option, x.replyType]), [[99, P.NBD_REP_ERR_UNSUP]]);

  // SET_META_CONTEXT before STRUCTURED_REPLY is invalid.
  hs.push(encodeOption(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation'])));
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_INVALID]);

  hs.push(encodeOption(P.NBD_OPT_STRUCTURED_REPLY));
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ACK]);

  hs.push(encodeOption(P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest('disk', [])));
  r = repliesOf(hs);
  assert.deepEqual(r.map((x) => x.replyType), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
  assert.equal(r[0].payload.subarray(4).toString(), 'base:allocation');

  hs.push(encodeOption(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation', 'x-other:thing'])));
  r = repliesOf(hs);
  assert.deepEqual(r.map((x) => x.replyType), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
  assert.equal(r[0].payload.readUInt32BE(0), P.BASE_ALLOCATION_CONTEXT_ID);

  hs.push(encodeOption(P.NBD_OPT_INFO, encodeInfoRequest('nope', [])));
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_UNKNOWN]);

  // GO, with two bytes of the first request already behind it in the same chunk.
  const step = hs.push(Buffer.concat([encodeOption(P.NBD_OPT_GO, encodeInfoRequest('disk', [P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION])), Buffer.from([0x25, 0x60])]));
  assert.equal(step.kind, 'transmission');
  r = repliesOf(hs);
  assert.deepEqual(r.map((x) => x.replyType), [P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_ACK]);
  const infoTypes = r.slice(0, 4).map((x) => x.payload.readUInt16BE(0));
  assert.deepEqual(infoTypes, [P.NBD_INFO_EXPORT, P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION, P.NBD_INFO_BLOCK_SIZE]);
  const tflags = r[0].payload.readUInt16BE(10);
  assert.ok(tflags & P.NBD_FLAG_CAN_MULTI_CONN && tflags & P.NBD_FLAG_SEND_DF && tflags & P.NBD_FLAG_SEND_TRIM);
  if (step.kind === 'transmission') {
    assert.equal(step.negotiated.structuredReplies, true);
    assert.equal(step.negotiated.baseAllocation, true);
    assert.deepEqual([...step.leftover], [0x25, 0x60]);
  }
});

test('handshake: EXPORT_NAME enters transmission, unknown name closes, NO_ZEROES honoured', () => {
  for (const noZeroes of [true, false]) {
    const hs = new Handshake({ exports: exportsMap });
    hs.output.splice(0);
    hs.push(clientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0)));
    const step = hs.push(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('ro')));
    assert.equal(step.kind, 'transmission');
    const out = Buffer.concat(hs.output);
    assert.equal(out.length, noZeroes ? 10 : 134);
    assert.equal(readUInt64BE(out, 0), 4096);
    assert.ok(out.readUInt16BE(8) & P.NBD_FLAG_READ_ONLY);
    assert.equal(out.readUInt16BE(8) & P.NBD_FLAG_SEND_DF, 0, 'no DF without structured replies');
  }
  const hs = new Handshake({ exports: exportsMap });
  hs.push(clientFlags());
  const step = hs.push(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('missing')));
  assert.equal(step.kind, 'close');
});

test('handshake: ABORT is acknowledged then closes; unknown client flags close', () => {
  const hs = new Handshake({ exports: exportsMap });
  hs.output.splice(0);
  hs.push(clientFlags());
  const step = hs.push(encodeOption(P.NBD_OPT_ABORT));
  assert.equal(step.kind, 'close');
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ACK]);
  const bad = new Handshake({ exports: exportsMap });
  const s2 = bad.push(clientFlags(0x80));
  assert.deepEqual(s2.kind === 'close' && s2.protocolError, true);
});

test('handshake, FORCEDTLS: every option but STARTTLS and ABORT is TLS_REQD, EXPORT_NAME closes; after TLS options work and STARTTLS is invalid', () => {
  const hs = new Handshake({ exports: exportsMap, tlsRequired: true });
  hs.output.splice(0);
  hs.push(clientFlags());
  for (const [option, data] of [
    [P.NBD_OPT_LIST, Buffer.alloc(0)],
    [P.NBD_OPT_GO, encodeInfoRequest('disk', [])],
    [P.NBD_OPT_INFO, encodeInfoRequest('disk', [])],
    [P.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0)],
    [99, Buffer.from('whatever')],
  ] as const) {
    assert.equal(hs.push(encodeOption(option, data)).kind, 'continue');
    assert.deepEqual(repliesOf(hs).map((x) => [x.option, x.replyType]), [[option, P.NBD_REP_ERR_TLS_REQD]], `option ${option} before TLS`);
  }
  // STARTTLS with data is invalid; without, acknowledged, and the owner takes over for TLS.
  assert.equal(hs.push(encodeOption(P.NBD_OPT_STARTTLS, Buffer.from('x'))).kind, 'continue');
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_INVALID]);
  const step = hs.push(encodeOption(P.NBD_OPT_STARTTLS));
  assert.deepEqual(step, { kind: 'starttls', leftover: Buffer.alloc(0) });
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ACK]);
  hs.tlsStarted();
  hs.push(encodeOption(P.NBD_OPT_STARTTLS));
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_INVALID], 'a second STARTTLS');
  hs.push(encodeOption(P.NBD_OPT_LIST));
  assert.equal(repliesOf(hs).at(-1)!.replyType, P.NBD_REP_ACK);
  const go = hs.push(encodeOption(P.NBD_OPT_GO, encodeInfoRequest('disk', [])));
  assert.equal(go.kind, 'transmission');

  // Bytes pipelined behind STARTTLS come back as leftover (the owner refuses them).
  const eager = new Handshake({ exports: exportsMap, tlsRequired: true });
  eager.push(clientFlags());
  const piped = eager.push(Buffer.concat([encodeOption(P.NBD_OPT_STARTTLS), Buffer.from([0x16, 0x03, 0x01])]));
  assert.equal(piped.kind, 'starttls');
  assert.equal(piped.kind === 'starttls' && piped.leftover.length, 3);

  // EXPORT_NAME cannot be refused by a reply: the session ends, with no reply.
  const legacy = new Handshake({ exports: exportsMap, tlsRequired: true });
  legacy.output.splice(0);
  legacy.push(clientFlags());
  const end = legacy.push(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('disk')));
  assert.equal(end.kind, 'close');
  assert.equal(Buffer.concat(legacy.output).length, 0);
  // ABORT is answered before TLS too.
  const quitter = new Handshake({ exports: exportsMap, tlsRequired: true });
  quitter.output.splice(0);
  quitter.push(clientFlags());
  assert.equal(quitter.push(encodeOption(P.NBD_OPT_ABORT)).kind, 'close');
  assert.deepEqual(repliesOf(quitter).map((x) => x.replyType), [P.NBD_REP_ACK]);
});

test('PSK files: username:hexkey lines; comments and blanks skipped; short keys, bad lines, duplicates and empty files refused', () => {
  const k = PskKeys.parse(`# users\nalice:${'ab'.repeat(32)}\n\nbob:${'01'.repeat(16)}\r\n`);
  assert.deepEqual(k.keyOf('alice'), Buffer.alloc(32, 0xab));
  assert.deepEqual(k.keyOf('bob'), Buffer.alloc(16, 0x01));
  assert.equal(k.keyOf('carol'), undefined);
  assert.throws(() => PskKeys.parse(`alice:${'ab'.repeat(8)}`), /holds 8 bytes; at least 16/);
  assert.throws(() => PskKeys.parse('alice'), /line 1: expected username:hexkey/);
  assert.throws(() => PskKeys.parse(`alice:${'zz'.repeat(16)}`), /expected username:hexkey/);
  assert.throws(() => PskKeys.parse(`:${'ab'.repeat(16)}`), /expected username:hexkey/);
  assert.throws(() => PskKeys.parse(`a:${'ab'.repeat(16)}\na:${'cd'.repeat(16)}`), /line 2: user a is named twice/);
  assert.throws(() => PskKeys.parse('# nothing\n'), /names no user/);
});

test('handshake: an oversized option is skipped as it streams in and answered TOO_BIG', () => {
  const hs = new Handshake({ exports: exportsMap });
  hs.output.splice(0);
  hs.push(clientFlags());
  const header = encodeOption(P.NBD_OPT_LIST).subarray(0, 16);
  header.writeUInt32BE(P.maxOptionBytes * 100, 12);
  assert.equal(hs.push(header).kind, 'continue');
  const chunk = Buffer.alloc(64 * 1024);
  for (let sent = 0; sent < P.maxOptionBytes * 100; sent += chunk.length) {
    assert.equal(hs.push(chunk).kind, 'continue');
    assert.ok(((hs as unknown as { pending: Buffer }).pending.length) < 16, 'skipped bytes are not retained');
  }
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_TOO_BIG]);
  hs.push(encodeOption(P.NBD_OPT_LIST));
  assert.equal(repliesOf(hs).at(-1)!.replyType, P.NBD_REP_ACK, 'handshake continues');
});

test('handshake: an option trickled in one byte at a time is parsed without re-copying it', () => {
  const hs = new Handshake({ exports: exportsMap });
  hs.output.splice(0);
  hs.push(clientFlags());
  const name = 'x'.repeat(4000);
  const opt = encodeOption(P.NBD_OPT_INFO, encodeInfoRequest(name, []));
  for (let i = 0; i < opt.length; i++) {
    assert.equal(hs.push(opt.subarray(i, i + 1)).kind, 'continue');
    assert.ok((hs as unknown as { pending: Buffer }).pending.length < 16);
  }
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_UNKNOWN]);
});

test('handshake: shutting down answers ERR_SHUTDOWN', () => {
  const hs = new Handshake({ exports: exportsMap, shuttingDown: () => true });
  hs.output.splice(0);
  hs.push(clientFlags());
  hs.push(encodeOption(P.NBD_OPT_LIST));
  assert.deepEqual(repliesOf(hs).map((x) => x.replyType), [P.NBD_REP_ERR_SHUTDOWN]);
});

test('property: any byte stream, in any split, never throws and never buffers beyond one option', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constantFrom(...[P.NBD_OPT_GO, P.NBD_OPT_INFO, P.NBD_OPT_LIST, 99, P.NBD_OPT_SET_META_CONTEXT, P.NBD_OPT_STRUCTURED_REPLY].map((o) => new Uint8Array(encodeOption(o, Buffer.from('xx')))))), { maxLength: 30 }),
      (chunks) => {
        const hs = new Handshake({ exports: exportsMap });
        let closed = false;
        for (const c of chunks) {
          if (closed) break;
          const step = hs.push(Buffer.from(c));
          closed = step.kind !== 'continue';
          assert.ok((hs as unknown as { pending: Buffer }).pending.length < P.maxOptionBytes + 16);
        }
      },
    ),
    { numRuns: 400 },
  );
});

test('property: a valid option sequence gives the same replies however it is split', () => {
  const script = Buffer.concat([
    clientFlags(),
    encodeOption(P.NBD_OPT_LIST),
    encodeOption(P.NBD_OPT_STRUCTURED_REPLY),
    encodeOption(P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest('disk', ['base:'])),
    encodeOption(P.NBD_OPT_INFO, encodeInfoRequest('disk', [P.NBD_INFO_BLOCK_SIZE])),
    encodeOption(P.NBD_OPT_GO, encodeInfoRequest('', [])),
  ]);
  const whole = new Handshake({ exports: new Map([['disk', exportsMap.get('disk')!]]) });
  assert.equal(whole.push(script).kind, 'transmission');
  const expected = Buffer.concat(whole.output);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: script.length - 1 }), { maxLength: 12 }), (cuts) => {
      const points = [...new Set(cuts)].sort((a, b) => a - b);
      const hs = new Handshake({ exports: new Map([['disk', exportsMap.get('disk')!]]) });
      let prev = 0;
      let last = 'continue';
      for (const p of [...points, script.length]) {
        last = hs.push(script.subarray(prev, p)).kind;
        prev = p;
        if (last !== 'continue') break;
      }
      assert.equal(last, 'transmission');
      assert.deepEqual(Buffer.concat(hs.output), expected);
    }),
    { numRuns: 600 },
  );
});

// ---- requests ---------------------------------------------------------------------------------

test('request header round-trips, including 64-bit offsets and handles', () => {
  const h = { flags: P.NBD_CMD_FLAG_FUA, type: P.NBD_CMD_WRITE, handleHi: 0xdeadbeef, handleLo: 0x01020304, offset: 2 ** 45 + 17, length: 4096 };
  const b = encodeRequest(h);
  assert.equal(b.length, 28);
  const out = new NbdRequest();
  assert.equal(parseRequestHeader(b, 0, out), true);
  assert.deepEqual({ ...h }, { flags: out.flags, type: out.type, handleHi: out.handleHi, handleLo: out.handleLo, offset: out.offset, length: out.length });
  b[0] ^= 0xff;
  assert.equal(parseRequestHeader(b, 0, out), false);
});

test('decoder yields need-more, then the request with its payload in a pooled buffer', () => {
  const pool = new BufferPool(1 << 20);
  const d = new RequestDecoder(pool, 1 << 20);
  const payload = Buffer.alloc(5000, 7);
  const wire = encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 9, offset: 4096, length: payload.length }, payload);
  const req = new NbdRequest();
  d.push(wire.subarray(0, 10));
  assert.equal(d.poll(req), NEED_MORE);
  d.push(wire.subarray(10, 100));
  assert.equal(d.poll(req), NEED_MORE);
  d.push(wire.subarray(100));
  assert.equal(d.poll(req), REQUEST);
  assert.equal(req.handleLo, 9);
  assert.deepEqual(req.payload!.buf.subarray(0, req.length), payload);
  assert.equal(pool.outstanding, 1);
  req.payload!.release();
  assert.equal(pool.outstanding, 0);
  assert.equal(d.poll(req), NEED_MORE);
});

test('decoder drops an oversized write payload without allocating it, then continues', () => {
  const pool = new BufferPool(64 * 1024);
  const d = new RequestDecoder(pool, 64 * 1024);
  const big = 1 << 20;
  d.push(encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: big }));
  const req = new NbdRequest();
  assert.equal(d.poll(req), NEED_MORE);
  for (let i = 0; i < big - 65536; i += 65536) {
    d.push(Buffer.alloc(65536));
    assert.equal(d.poll(req), NEED_MORE);
    assert.equal(d.bufferedBytes, 0, 'dropped as it arrives');
  }
  // Yielded only once the whole payload is off the stream (clients expect no earlier reply).
  d.push(Buffer.alloc(65536));
  assert.equal(d.poll(req), REQUEST);
  assert.equal(req.oversized, true);
  assert.equal(req.payload, null);
  assert.equal(pool.outstanding, 0);
  d.push(encodeRequest({ flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 }));
  assert.equal(d.poll(req), REQUEST);
  assert.equal(req.type, P.NBD_CMD_FLUSH);
  assert.equal(req.handleLo, 2);
});

test('decoder reports bad magic as a protocol error and stays dead', () => {
  const d = new RequestDecoder(new BufferPool(65536), 65536);
  d.push(Buffer.alloc(28, 0x41));
  const req = new NbdRequest();
  assert.equal(d.poll(req), PROTOCOL_ERROR);
  assert.match(d.errorMessage!, /magic/);
  d.push(encodeRequest({ flags: 0, type: 0, handleHi: 0, handleLo: 1, offset: 0, length: 1 }));
  assert.equal(d.poll(req), PROTOCOL_ERROR);
});

test('property: random bytes never throw, only typed outcomes, and never allocate beyond the bound', () => {
  const maxPayload = 8192;
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.uint8Array({ maxLength: 100 }),
          fc.record({ type: fc.integer({ min: 0, max: 9 }), length: fc.oneof(fc.integer({ min: 0, max: 20000 }), fc.constant(0xffffffff)), flags: fc.integer({ min: 0, max: 0xffff }) }).map(
            (r) => new Uint8Array(encodeRequest({ ...r, handleHi: 0, handleLo: 1, offset: 0 })),
          ),
        ),
        { maxLength: 20 },
      ),
      (chunks) => {
        const pool = new BufferPool(maxPayload);
        const d = new RequestDecoder(pool, maxPayload);
        const req = new NbdRequest();
        for (const c of chunks) {
          d.push(Buffer.from(c));
          for (;;) {
            const r = d.poll(req);
            assert.ok(r === NEED_MORE || r === REQUEST || r === PROTOCOL_ERROR);
            if (r !== REQUEST) break;
            if (req.payload) {
              assert.ok(req.length <= maxPayload);
              req.payload.release();
              req.payload = null;
            }
          }
          assert.ok(pool.outstanding <= 1);
        }
        d.dispose();
        assert.equal(pool.outstanding, 0);
      },
    ),
    { numRuns: 500 },
  );
});

test('property: a valid request stream decodes identically however it is split', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ type: fc.constantFrom(0, 1, 3, 4), length: fc.integer({ min: 0, max: 3000 }), handleLo: fc.nat() }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      (reqs, cutSeeds) => {
        const wire = Buffer.concat(
          reqs.map((r) => encodeRequest({ ...r, flags: 0, handleHi: 0, offset: 0 }, r.type === 1 ? Buffer.alloc(r.length, r.handleLo & 0xff) : undefined)),
        );
        const cuts = [...new Set(cutSeeds.map((s) => s % (wire.length + 1)))].sort((a, b) => a - b);
        const pool = new BufferPool(4096);
        const d = new RequestDecoder(pool, 4096);
        const got: { type: number; length: number; handleLo: number }[] = [];
        const req = new NbdRequest();
        let prev = 0;
        for (const p of [...cuts, wire.length]) {
          d.push(wire.subarray(prev, p));
          prev = p;
          while (d.poll(req) === REQUEST) {
            got.push({ type: req.type, length: req.length, handleLo: req.handleLo });
            if (req.payload) {
              assert.ok(req.payload.buf.subarray(0, req.length).every((x) => x === (req.handleLo & 0xff)));
              req.payload.release();
            }
          }
        }
        assert.deepEqual(got, reqs.map((r) => ({ type: r.type, length: r.length, handleLo: r.handleLo })));
      },
    ),
    { numRuns: 300 },
  );
});

// ---- replies ----------------------------------------------------------------------------------

test('simple reply and structured chunks encode and parse back', () => {
  const b = Buffer.alloc(16);
  writeSimpleReply(b, 0, P.NBD_EINVAL, 1, 2);
  assert.deepEqual(parseReply(b), { kind: 'simple', error: P.NBD_EINVAL, handleHi: 1, handleLo: 2, bytes: 16 });

  const d = Buffer.alloc(28 + 3);
  writeOffsetDataPrefix(d, 0, true, 0, 5, 4096, 3);
  d.write('abc', 28);
  const pd = parseReply(d)!;
  assert.ok(pd.kind === 'chunk');
  if (pd.kind === 'chunk') {
    assert.equal(pd.flags, P.NBD_REPLY_FLAG_DONE);
    const c = decodeChunkPayload(pd.type, pd.payload);
    assert.ok(c.type === 'data' && c.offset === 4096 && c.data.toString() === 'abc');
  }

  const h = Buffer.alloc(32);
  writeOffsetHole(h, 0, false, 0, 5, 8192, 4096);
  const ph = parseReply(h)!;
  if (ph.kind === 'chunk') assert.deepEqual(decodeChunkPayload(ph.type, ph.payload), { type: 'hole', offset: 8192, length: 4096 });

  const n = Buffer.alloc(20);
  writeNoneChunk(n, 0, 0, 5);
  const pn = parseReply(n)!;
  assert.ok(pn.kind === 'chunk' && pn.type === P.NBD_REPLY_TYPE_NONE && pn.payload.length === 0);

  const e = parseReply(encodeErrorChunk(0, 6, P.NBD_ENOSPC, 'full', 12345))!;
  if (e.kind === 'chunk') {
    assert.equal(e.type, P.NBD_REPLY_TYPE_ERROR_OFFSET);
    assert.deepEqual(decodeChunkPayload(e.type, e.payload), { type: 'error', error: P.NBD_ENOSPC, message: 'full', offset: 12345 });
  }
  const e2 = parseReply(encodeErrorChunk(0, 6, P.NBD_EINVAL, 'bad'))!;
  if (e2.kind === 'chunk') assert.deepEqual(decodeChunkPayload(e2.type, e2.payload), { type: 'error', error: P.NBD_EINVAL, message: 'bad' });

  const bs = parseReply(encodeBlockStatusChunk(0, 7, 1, [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }]))!;
  if (bs.kind === 'chunk') {
    assert.equal(bs.payload.length, 4 + 16);
    assert.deepEqual(decodeChunkPayload(bs.type, bs.payload), { type: 'block-status', contextId: 1, descriptors: [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }] });
  }
  assert.equal(parseReply(d.subarray(0, 27)), null);
});

test('transmission flags follow the backend capabilities', () => {
  const caps = fakeBackend(1).capabilities;
  const rw = transmissionFlagsFor(caps, false);
  assert.ok(rw & P.NBD_FLAG_HAS_FLAGS && rw & P.NBD_FLAG_SEND_FLUSH && rw & P.NBD_FLAG_SEND_FUA && rw & P.NBD_FLAG_SEND_WRITE_ZEROES && rw & P.NBD_FLAG_SEND_FAST_ZERO && rw & P.NBD_FLAG_SEND_CACHE);
  assert.equal(rw & (P.NBD_FLAG_SEND_DF | P.NBD_FLAG_READ_ONLY), 0);
  const ro = transmissionFlagsFor({ ...caps, readOnly: true }, true);
  assert.ok(ro & P.NBD_FLAG_READ_ONLY && ro & P.NBD_FLAG_SEND_DF);
  assert.equal(ro & (P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES), 0);
});

test('error table maps raftblock errors and OS errnos to NBD errnos', () => {
  assert.equal(nbdErrnoOf(new OutOfRange('x')), P.NBD_EINVAL);
  assert.equal(nbdErrnoOf(new ReadOnly()), P.NBD_EPERM);
  assert.equal(nbdErrnoOf(new NoSpace('x')), P.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(new NotSupported('x')), P.NBD_ENOTSUP);
  assert.equal(nbdErrnoOf(new Unavailable('x')), P.NBD_EIO);
  assert.equal(nbdErrnoOf(new IoError('pwrite', 28)), P.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(new IoError('pwrite', 122)), P.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(new IoError('pread', 5)), P.NBD_EIO);
  assert.equal(nbdErrnoOf(Object.assign(new Error('x'), { code: 'EROFS' })), P.NBD_EPERM);
  assert.equal(nbdErrnoOf('weird'), P.NBD_EIO);
});

test('zero runs: only aligned all-zero granules become holes; all-data allocates nothing', () => {
  const g = 4096;
  const b = Buffer.alloc(4 * g, 1);
  assert.equal(zeroRuns(b, b.length, 0, g), undefined);
  b.fill(0, g, 3 * g);
  assert.deepEqual(zeroRuns(b, b.length, 0, g), [
    { length: g, hole: false, zero: false },
    { length: 2 * g, hole: true, zero: true },
    { length: g, hole: false, zero: false },
  ]);
  // Unaligned base: the zero run must start on a device granule boundary.
  const z = Buffer.alloc(3 * g);
  assert.deepEqual(zeroRuns(z, z.length, 100, g), [
    { length: g - 100, hole: false, zero: false },
    { length: 2 * g, hole: true, zero: true },
    { length: 100, hole: false, zero: false },
  ]);
});
