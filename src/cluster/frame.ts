/**
 * Peer wire framing: a 4-byte big-endian length of what follows, a 4-byte big-endian length
 * of the msgpackr-encoded `Frame` head, the head, then the frame's attachments.
 * A frame carries everything queued for one destination since the last flush: Raft messages
 * of every group, forwarded requests and their responses. Each frame names its sender and
 * the sender's map epoch (fencing), so a receiver can refuse or catch up.
 *
 * Attachments: the data of a Raft append's entries, the payload of a forwarded write (a
 * request whose arguments carry `q.d`, see `attachedPayload`) and a response that is bytes (a
 * forwarded read's answer), of at least `minAttachedBytes`, leave the head (the length stands
 * in their place; a response says so with `x`) and follow it as raw bytes: messages' entries
 * in order, then requests' payloads, then responses'. The sender hands those buffers to the
 * socket (one writev), instead of msgpackr copying every payload into a fresh buffer per
 * frame: those copies were most of the memory a leader allocated per write, and what made
 * its major GCs frequent. Entries never change once made; a forwarded write's payload is a
 * view of a client's buffer, which the transport keeps from reuse until it is written
 * (Transport.request).
 *
 * Heartbeats coalesced: the heartbeats and heartbeat responses a frame carries (one per group
 * the sender leads or follows on this node pair, every tick) travel as rows of integers in
 * one flat array per kind (`hb`, `hbr`), not as a msgpack map each, and come back out of the
 * decoder as ordinary group messages after the frame's others. An idle node pair's frame is
 * then a few bytes per group; a row's values are checked like any message's (the receiver's
 * raft-message-check), its shape here. Raft does not depend on the order of messages.
 */
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import { AssertionFailed, ProtocolError } from '../common/errors.js';
import { maxStoreOpsLevel } from '../store/ops.js';

/** Largest frame accepted or sent; bounds the memory one peer can make us hold. */
export const maxFrameBytes = 64 * 1024 * 1024;

function assertFrameLimit(frameBytes: number): void {
  if (!Number.isInteger(frameBytes) || frameBytes < 1 || frameBytes > maxFrameBytes) throw new AssertionFailed(`frame limit ${frameBytes} outside 1..${maxFrameBytes}`);
}
const headerBytes = 4;
/** The head's own length word, after the frame's. */
const headLengthBytes = 4;
/** Entry payloads at least this long travel as attachments; smaller ones stay in the head. */
export const minAttachedBytes = 512;
/**
 * Largest frame head accepted or sent. Most bulk data leaves the head as attachments, but not
 * all of it: a `snapshotChunk` answer carries its runs in the head (8 MiB of a PG's image,
 * overshooting by up to one 1 MiB store chunk, plus the 128 KiB dedupe table: ~9.2 MiB, the
 * biggest legitimate head), as do group 0's Raft snapshot chunks (1 MiB each, 4 in flight) and
 * the map (`getMap`, `join`). 32 MiB leaves room for a few of those in one frame; the head is
 * decoded whole, before anything in it is checked, so its length is what one peer makes us parse.
 */
export const maxFrameHeadBytes = 32 * 1024 * 1024;
/**
 * Most values a head may hold, counted before it is decoded (see checkHeadItems). Decoding
 * costs heap per value, not per byte: an array of empty maps is one byte a value and ~60 bytes
 * of heap each once decoded (a 64 MiB head of them took 4 GB and seconds of one synchronous
 * call). A legitimate head holds a few values per message or request and 9 per entry (its
 * payload attached or under 512 bytes): tens of thousands at most (4,096 queued appends of a
 * few entries each: ~200,000), and its bytes are mostly payloads, one value each. A million
 * bounds what one head can make us allocate to ~60 MB and ~0.7 s of decoding.
 */
export const maxFrameHeadItems = 1_000_000;
/**
 * Heads up to this long are decoded without counting their values first: they cannot hold more
 * values than bytes (~4 MB of heap at worst), and every frame of ordinary traffic is one.
 */
const headItemsCountedAboveBytes = 64 * 1024;

/** A Raft message for one group, opaque to the transport. */
export interface GroupMessage {
  /** Raft group id (0 = metadata, else PG id). */
  g: number;
  /** The Raft message itself. */
  m: unknown;
}

export interface RpcRequest {
  /** Request id, unique per connection direction. */
  id: number;
  /** Method name. */
  op: string;
  /** Arguments (msgpack-able; Buffers travel raw). */
  a: unknown;
}

export interface RpcResponse {
  id: number;
  /** Result on success. */
  r?: unknown;
  /** On the wire only: `r` is the length of an attachment (bytes the response carries). */
  x?: 1;
  /** Error on failure: stable code and message (and leader hint for NOT_LEADER). */
  e?: { code: string; message: string; leader?: string };
}

/**
 * The peer wire protocol this build speaks, named by every frame (`v`). A node refuses a frame
 * of a newer protocol than its own, closing that connection and saying which versions met: it
 * cannot know what a newer sender's fields mean, and guessing could misread a Raft message. A
 * frame without `v` comes from a build before protocol versions: protocol 1. Bump this on any
 * change an older node would misread; a build that still understands an older protocol keeps
 * accepting it (a rolling upgrade runs both).
 */
export const wireProtocolVersion = 1;
/** Largest protocol number a frame may name (anything else is a malformed frame). */
const maxWireProtocolVersion = 0xffff;

/** Longest cluster id a frame may carry (ids are UUIDs: 36 characters). */
export const maxFrameClusterIdChars = 64;

export interface Frame {
  /** Sender node id. */
  from: string;
  /** Sender's listen address (HOST:PORT), so a receiver can dial back after a restart. */
  addr: string;
  /** Sender's cluster map epoch. */
  epoch: number;
  /**
   * Sender's cluster id, so that a receiver refuses a node of another cluster (transport.ts);
   * '' (or absent, from a node that predates cluster ids) while the sender does not know it.
   * A one-letter key: it is on every frame.
   */
  c?: string;
  /** Sender's incarnation (map.ts NodeInfo.incarnation), checked against the map's. */
  i?: string;
  /** Sender's wire protocol (wireProtocolVersion); absent: 1. One letter: on every frame. */
  v?: number;
  /**
   * The store commands the sender's build applies (ops.ts StoreOpsLevel); absent: 1, a build
   * before levels. Kept out of the replicated map on purpose: an older build applying a map
   * command would drop a field it does not know, and its map would differ from a newer one's
   * at the same epoch. One letter: on every frame.
   */
  s?: number;
  msgs?: GroupMessage[];
  reqs?: RpcRequest[];
  resps?: RpcResponse[];
  /** On the wire only: coalesced heartbeats, `heartbeatRow` integers each (see above). */
  hb?: number[];
  /** On the wire only: coalesced heartbeat responses, `heartbeatRespRow` integers each. */
  hbr?: number[];
}

/** The fields of a heartbeat row after its group id, in order. */
const heartbeatFields = ['from', 'to', 'term', 'commit', 'seq', 'tick'] as const;
/** The fields of a heartbeat response row after its group id, in order. */
const heartbeatRespFields = ['from', 'to', 'term', 'seq', 'tick'] as const;

interface RowKind {
  type: 'heartbeat' | 'heartbeatResp';
  key: 'hb' | 'hbr';
  fields: readonly string[];
}

const rowKinds: readonly RowKind[] = [
  { type: 'heartbeat', key: 'hb', fields: heartbeatFields },
  { type: 'heartbeatResp', key: 'hbr', fields: heartbeatRespFields },
];

/**
 * The row kind a group message travels as, if any: a heartbeat (or response) with exactly
 * its fields, each a safe integer (anything else stays a map, and is judged by the receiver).
 */
function rowKindOf(gm: GroupMessage): RowKind | undefined {
  const m = gm.m as Record<string, unknown> | null;
  if (typeof m !== 'object' || m === null || !Number.isSafeInteger(gm.g)) return undefined;
  const kind = m.type === 'heartbeat' ? rowKinds[0] : m.type === 'heartbeatResp' ? rowKinds[1] : undefined;
  if (!kind) return undefined;
  let keys = 0;
  for (const k in m) {
    if (k !== 'type' && !kind.fields.includes(k)) return undefined;
    keys++;
  }
  if (keys !== kind.fields.length + 1) return undefined;
  for (const f of kind.fields) if (!Number.isSafeInteger(m[f])) return undefined;
  return kind;
}

/**
 * Splits a frame's heartbeats (and responses) out of its messages into rows. Returns the
 * frame unchanged when it has none.
 */
function coalesceHeartbeats(frame: Frame): Frame {
  const msgs = frame.msgs;
  if (!msgs) return frame;
  let rows: { hb: number[]; hbr: number[] } | undefined;
  let rest: GroupMessage[] | undefined;
  for (let i = 0; i < msgs.length; i++) {
    const gm = msgs[i];
    const kind = rowKindOf(gm);
    if (!kind) {
      rest?.push(gm);
      continue;
    }
    if (!rows) {
      rows = { hb: [], hbr: [] };
      rest = msgs.slice(0, i);
    }
    const m = gm.m as Record<string, number>;
    const row = rows[kind.key];
    row.push(gm.g);
    for (const f of kind.fields) row.push(m[f]);
  }
  if (!rows) return frame;
  const out: Frame = { ...frame, msgs: rest!.length > 0 ? rest : undefined };
  if (rows.hb.length > 0) out.hb = rows.hb;
  if (rows.hbr.length > 0) out.hbr = rows.hbr;
  return out;
}

/** Turns a received frame's rows back into group messages (after its other messages). */
function expandHeartbeats(frame: Frame): void {
  for (const kind of rowKinds) {
    const row = frame[kind.key];
    if (row === undefined) continue;
    delete frame[kind.key];
    const width = kind.fields.length + 1;
    const msgs = (frame.msgs ??= []);
    for (let at = 0; at < row.length; at += width) {
      const m: Record<string, unknown> = { type: kind.type };
      for (let f = 0; f < kind.fields.length; f++) m[kind.fields[f]] = row[at + 1 + f];
      msgs.push({ g: row[at], m });
    }
  }
}

const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false });

interface WireEntry {
  index: number;
  term: number;
  type: number;
  data: Uint8Array | number;
}

interface AppLike {
  type?: unknown;
  entries?: unknown;
}

interface IoArgs {
  q?: { d?: unknown };
}

/**
 * The payload a request carries that travels as an attachment: the data of a forwarded write
 * (`{ g, q: { ..., d } }`), when it is long enough; undefined otherwise.
 */
function attachedPayload(r: RpcRequest): Uint8Array | undefined {
  const d = (r.a as IoArgs | null)?.q?.d;
  return d instanceof Uint8Array && d.length >= minAttachedBytes ? d : undefined;
}

function isAppend(m: unknown): m is { type: 'app'; entries: WireEntry[] } {
  const a = m as AppLike;
  return typeof a === 'object' && a !== null && a.type === 'app' && Array.isArray(a.entries);
}

/** Whether a group message is an append carrying at least one payload worth attaching. */
function attachable(m: unknown): m is { type: 'app'; entries: WireEntry[] } {
  if (!isAppend(m)) return false;
  for (const e of m.entries) if (e.data instanceof Uint8Array && e.data.length >= minAttachedBytes) return true;
  return false;
}

/** The buffers a frame attaches, in the order they follow the head. */
class AttachmentWriter {
  readonly parts: Buffer[] = [];
  bytes = 0;

  /** Attaches `data`; returns the length that stands in its place in the head. */
  add(data: Uint8Array): number {
    this.parts.push(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length));
    this.bytes += data.length;
    return data.length;
  }
}

/** Hands out a received frame's attachments in order, each claim checked against the bytes there. */
class AttachmentReader {
  private left: number;

  /** `bytes` attached bytes follow the head; `next(n)` hands out the next n of them. */
  constructor(
    bytes: number,
    private readonly next: (n: number) => Buffer,
  ) {
    this.left = bytes;
  }

  take(claim: unknown, what: string): Buffer {
    const n = claim as number;
    if (typeof claim !== 'number' || !Number.isSafeInteger(n) || n < minAttachedBytes || n > this.left) {
      throw new ProtocolError(`attached ${what} beyond the frame`);
    }
    this.left -= n;
    return this.next(n);
  }

  /** Every attached byte must belong to something in the head. */
  finish(): void {
    if (this.left !== 0) throw new ProtocolError(`frame has ${this.left} attached bytes no entry claims`);
  }
}

/**
 * Encodes a frame as the buffers to write, in order: the length words and head first, then
 * the attachments (the entries' own buffers, not copies: they must not change until written).
 * msgpackr packs the head into a shared buffer that it never writes over (it starts a new one
 * when full), so the head stays valid; reserving the words' space in front of it spares a copy.
 * The ids of the requests whose payload became an attachment are pushed to `payloadRequestIds`.
 */
export function encodeFrameParts(frame: Frame, payloadRequestIds?: number[]): Buffer[] {
  const attached = new AttachmentWriter();
  let wire = coalesceHeartbeats(frame);
  const msgs = wire.msgs;
  if (msgs) {
    let rewritten: GroupMessage[] | undefined;
    for (let i = 0; i < msgs.length; i++) {
      const gm = msgs[i];
      if (!attachable(gm.m)) continue;
      const ents = gm.m.entries.map((e): WireEntry => {
        const data = e.data as Uint8Array;
        return data.length < minAttachedBytes ? e : { index: e.index, term: e.term, type: e.type, data: attached.add(data) };
      });
      rewritten ??= msgs.slice();
      rewritten[i] = { g: gm.g, m: { ...gm.m, entries: ents } };
    }
    if (rewritten) wire = { ...wire, msgs: rewritten };
  }
  const reqs = frame.reqs;
  if (reqs) {
    let rewritten: RpcRequest[] | undefined;
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i];
      const d = attachedPayload(r);
      if (!d) continue;
      const a = r.a as { q: object };
      rewritten ??= reqs.slice();
      rewritten[i] = { id: r.id, op: r.op, a: { ...a, q: { ...a.q, d: attached.add(d) } } };
      payloadRequestIds?.push(r.id);
    }
    if (rewritten) wire = { ...wire, reqs: rewritten };
  }
  const resps = frame.resps;
  if (resps) {
    let rewritten: RpcResponse[] | undefined;
    for (let i = 0; i < resps.length; i++) {
      const r = resps[i].r;
      if (!(r instanceof Uint8Array) || r.length < minAttachedBytes) continue;
      rewritten ??= resps.slice();
      rewritten[i] = { id: resps[i].id, r: attached.add(r), x: 1 };
    }
    if (rewritten) wire = { ...wire, resps: rewritten };
  }
  const head = packr.pack(wire, RESERVE_START_SPACE | (headerBytes + headLengthBytes));
  const headBytes = head.length - headerBytes - headLengthBytes;
  // Refused here rather than by the receiver, which would close the connection over it.
  if (headBytes > maxFrameHeadBytes) throw new ProtocolError(`frame head of ${headBytes} bytes exceeds ${maxFrameHeadBytes}`);
  const bodyBytes = headLengthBytes + headBytes + attached.bytes;
  if (bodyBytes > maxFrameBytes) throw new ProtocolError(`frame of ${bodyBytes} bytes exceeds ${maxFrameBytes}`);
  head.writeUInt32BE(bodyBytes, 0);
  head.writeUInt32BE(headBytes, headerBytes);
  return [head, ...attached.parts];
}

/** Encodes a frame into one buffer (tests, tools; the transport writes the parts). */
export function encodeFrame(frame: Frame): Buffer {
  const parts = encodeFrameParts(frame);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** Gives attached entries, payloads and responses their bytes back, in the order attached. */
function restoreAttachments(frame: Frame, reader: AttachmentReader): void {
  for (const gm of frame.msgs ?? []) {
    if (!isAppend(gm.m)) continue;
    for (const e of gm.m.entries) {
      if (typeof e === 'object' && e !== null && typeof e.data === 'number') e.data = reader.take(e.data, 'entry');
    }
  }
  for (const r of frame.reqs ?? []) {
    const q = (r.a as IoArgs | null)?.q;
    if (typeof q === 'object' && q !== null && typeof q.d === 'number') q.d = reader.take(q.d, 'payload');
  }
  for (const r of frame.resps ?? []) {
    if (r.x === undefined) continue;
    r.r = reader.take(r.x === 1 ? r.r : undefined, 'response');
    delete r.x;
  }
  reader.finish();
}

function validate(value: unknown): Frame {
  if (typeof value !== 'object' || value === null) throw new ProtocolError('frame is not a map');
  const f = value as Record<string, unknown>;
  if (typeof f.from !== 'string' || f.from.length === 0 || f.from.length > 256) throw new ProtocolError('frame.from must be a node id');
  if (typeof f.addr !== 'string' || f.addr.length > 300) throw new ProtocolError('frame.addr must be a string');
  if (typeof f.epoch !== 'number' || !Number.isSafeInteger(f.epoch) || f.epoch < 0) throw new ProtocolError('frame.epoch must be a non-negative integer');
  if (f.c !== undefined && (typeof f.c !== 'string' || f.c.length > maxFrameClusterIdChars)) throw new ProtocolError('frame.c must be a cluster id');
  if (f.i !== undefined && (typeof f.i !== 'string' || f.i.length > 64)) throw new ProtocolError('frame.i must be an incarnation');
  if (f.v !== undefined && (typeof f.v !== 'number' || !Number.isSafeInteger(f.v) || f.v < 1 || f.v > maxWireProtocolVersion)) throw new ProtocolError('frame.v must be a wire protocol number');
  if (f.s !== undefined && (typeof f.s !== 'number' || !Number.isSafeInteger(f.s) || f.s < 1 || f.s > maxStoreOpsLevel)) throw new ProtocolError('frame.s must be a store command level');
  for (const key of ['msgs', 'reqs', 'resps'] as const) {
    if (f[key] !== undefined && !Array.isArray(f[key])) throw new ProtocolError(`frame.${key} must be an array`);
  }
  for (const kind of rowKinds) {
    const row = f[kind.key];
    if (row === undefined) continue;
    if (!Array.isArray(row) || row.length % (kind.fields.length + 1) !== 0) throw new ProtocolError(`frame.${kind.key} must be rows of ${kind.fields.length + 1} integers`);
    for (const v of row) if (!Number.isSafeInteger(v)) throw new ProtocolError(`frame.${kind.key} must hold integers only`);
  }
  for (const m of (f.msgs as unknown[] | undefined) ?? []) {
    if (typeof m !== 'object' || m === null || typeof (m as GroupMessage).g !== 'number') throw new ProtocolError('bad group message');
  }
  for (const q of (f.reqs as unknown[] | undefined) ?? []) {
    const r = q as RpcRequest;
    if (typeof q !== 'object' || q === null || typeof r.id !== 'number' || typeof r.op !== 'string') throw new ProtocolError('bad request');
  }
  for (const s of (f.resps as unknown[] | undefined) ?? []) {
    if (typeof s !== 'object' || s === null || typeof (s as RpcResponse).id !== 'number') throw new ProtocolError('bad response');
  }
  return f as unknown as Frame;
}

/**
 * Counts the values of a msgpack head without decoding it, and refuses it (ProtocolError) past
 * `limit`, or if it holds what no build's encoder writes: an extension other than undefined (0)
 * and timestamps (-1), such as msgpackr's record definitions, sets or errors, whose decoders
 * read values the count would not see coming; or 0xc1 (never used). Every value is counted once, a container
 * adding its elements to those still to come; string, binary and extension bodies are skipped
 * whole. A head cut short stops the count (the decoder refuses it).
 */
function checkHeadItems(b: Uint8Array, limit: number): void {
  const end = b.length;
  let pos = 0;
  let pending = 1;
  let items = 0;
  const u16 = (at: number): number => (b[at] << 8) | b[at + 1];
  const u32 = (at: number): number => b[at] * 0x1000000 + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);
  const ext = (type: number): void => {
    if (type !== 0x00 && type !== 0xff) throw new ProtocolError(`frame head holds msgpack extension ${type}`);
  };
  while (pending > 0 && pos < end) {
    if (++items > limit) throw new ProtocolError(`frame head holds more than ${limit} values`);
    pending--;
    const t = b[pos++];
    if (t < 0x80 || t >= 0xe0) continue; // fixints
    if (t < 0x90) pending += 2 * (t & 0x0f);
    else if (t < 0xa0) pending += t & 0x0f;
    else if (t < 0xc0) pos += t & 0x1f;
    // The longest header after a token is 5 bytes (ext32): with less left, there are at most
    // 5 values more, nothing worth counting; a truncated head is the decoder's to refuse.
    else if (pos + 5 > end) return;
    else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break; // nil, false, true
        case 0xcc: case 0xd0: pos += 1; break;
        case 0xcd: case 0xd1: pos += 2; break;
        case 0xca: case 0xce: case 0xd2: pos += 4; break;
        case 0xcb: case 0xcf: case 0xd3: pos += 8; break;
        case 0xc4: case 0xd9: pos += 1 + b[pos]; break;
        case 0xc5: case 0xda: pos += 2 + u16(pos); break;
        case 0xc6: case 0xdb: pos += 4 + u32(pos); break;
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: ext(b[pos]); pos += 1 + (1 << (t - 0xd4)); break;
        case 0xc7: ext(b[pos + 1]); pos += 2 + b[pos]; break;
        case 0xc8: ext(b[pos + 2]); pos += 3 + u16(pos); break;
        case 0xc9: ext(b[pos + 4]); pos += 5 + u32(pos); break;
        case 0xdc: pending += u16(pos); pos += 2; break;
        case 0xdd: pending += u32(pos); pos += 4; break;
        case 0xde: pending += 2 * u16(pos); pos += 2; break;
        case 0xdf: pending += 2 * u32(pos); pos += 4; break;
        default: throw new ProtocolError(`frame head holds msgpack type 0x${t.toString(16)}`);
      }
    }
  }
}

/**
 * Whether a msgpack token starts a map (fixmap, map16, map32): a head is a map (validate), and
 * its first byte says so before the rest of the frame has arrived.
 */
function isMapToken(t: number): boolean {
  return (t >= 0x80 && t <= 0x8f) || t === 0xde || t === 0xdf;
}

/**
 * Incremental decoder for one connection's byte stream. `push` returns the complete frames;
 * a malformed or oversized frame throws ProtocolError (the caller closes that connection).
 */
export class FrameDecoder {
  /** Received bytes not yet decoded, oldest first; only the first may be partly consumed. */
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Largest frame taken now (see restrict). */
  private frameBytesLimit = maxFrameBytes;
  /** While restricted, push() decodes one frame a call, so the limit can be lifted between frames. */
  private oneFrameAtATime = false;

  /**
   * Takes no frame longer than `frameBytes` and at most one frame per push() until lift(): a
   * connection not yet known to be of this cluster makes us buffer no more than that, while a
   * member's small first frame and the large ones behind it in the same read are still taken
   * whole once its first frame has identified it (lift(), then push() of nothing for the rest).
   */
  restrict(frameBytes: number): void {
    assertFrameLimit(frameBytes);
    this.frameBytesLimit = frameBytes;
    this.oneFrameAtATime = true;
  }

  lift(): void {
    this.frameBytesLimit = maxFrameBytes;
    this.oneFrameAtATime = false;
  }

  /** Whether restrict() holds (push() yields at most one frame). */
  get restricted(): boolean {
    return this.oneFrameAtATime;
  }

  /** Whether received bytes wait to be decoded. */
  get holdsBytes(): boolean {
    return this.buffered > 0;
  }

  push(data: Buffer): Frame[] {
    if (data.length > 0) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      // The frame's front (its length, its head's length, the head's first byte) is checked as
      // soon as each has arrived, not once the whole frame has: a frame that cannot be valid
      // was otherwise buffered whole, up to maxFrameBytes, before it was refused.
      if (this.buffered < headerBytes) break;
      const bodyBytes = this.wordAt(0);
      if (bodyBytes > this.frameBytesLimit) {
        const why = this.oneFrameAtATime ? ' (the limit of a connection not yet known to be of this cluster)' : '';
        throw new ProtocolError(`frame of ${bodyBytes} bytes exceeds ${this.frameBytesLimit}${why}`);
      }
      if (bodyBytes === 0) throw new ProtocolError('empty frame');
      if (bodyBytes < headLengthBytes) throw new ProtocolError('frame too short for its head length');
      if (this.buffered < headerBytes + headLengthBytes) break;
      const headBytes = this.wordAt(headerBytes);
      if (headBytes === 0 || headBytes > bodyBytes - headLengthBytes) throw new ProtocolError(`frame head of ${headBytes} bytes in a body of ${bodyBytes}`);
      if (headBytes > maxFrameHeadBytes) throw new ProtocolError(`frame head of ${headBytes} bytes exceeds ${maxFrameHeadBytes}`);
      if (this.buffered === headerBytes + headLengthBytes) break;
      if (!isMapToken(this.byteAt(headerBytes + headLengthBytes))) throw new ProtocolError('frame is not a map');
      if (this.buffered < headerBytes + bodyBytes) break;
      this.skip(headerBytes + headLengthBytes);
      const head = this.take(headBytes);
      if (headBytes > headItemsCountedAboveBytes) checkHeadItems(head, maxFrameHeadItems);
      let value: unknown;
      try {
        value = packr.unpack(head);
      } catch (err) {
        throw new ProtocolError(`undecodable frame: ${(err as Error).message}`);
      }
      const frame = validate(value);
      // Attachments are taken one by one: each is a view of the chunk it arrived in unless it
      // straddles two (then only its own bytes are copied), where taking the whole body at
      // once copied every frame longer than one socket read (most appends at queue depth).
      restoreAttachments(frame, new AttachmentReader(bodyBytes - headLengthBytes - headBytes, (n) => this.take(n)));
      expandHeartbeats(frame);
      frames.push(frame);
      if (this.oneFrameAtATime) break;
    }
    return frames;
  }

  /** The big-endian 32-bit word `at` bytes into what is buffered, which may straddle chunks (read without copying). */
  private wordAt(at: number): number {
    const first = this.chunks[0];
    if (first.length >= at + 4) return first.readUInt32BE(at);
    return this.byteAt(at) * 0x1000000 + ((this.byteAt(at + 1) << 16) | (this.byteAt(at + 2) << 8) | this.byteAt(at + 3));
  }

  /** The byte `at` bytes into what is buffered (which holds more than `at`). */
  private byteAt(at: number): number {
    for (let i = 0; i < this.chunks.length; i++) {
      const c = this.chunks[i];
      if (at < c.length) return c[at];
      at -= c.length;
    }
    throw new AssertionFailed(`byte ${at} past the buffered bytes`);
  }

  private skip(n: number): void {
    while (n > 0) {
      const first = this.chunks[0];
      if (first.length <= n) {
        this.chunks.shift();
        n -= first.length;
        this.buffered -= first.length;
      } else {
        this.chunks[0] = first.subarray(n);
        this.buffered -= n;
        n = 0;
      }
    }
  }

  /**
   * The next n bytes. Bytes inside one chunk are a view of it (no copy); bytes that span
   * chunks are copied once, and only they: the tail of the last chunk stays a view for what
   * follows instead of being copied again with every read.
   */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0];
      const use = Math.min(c.length, n - at);
      c.copy(out, at, 0, use);
      at += use;
      if (use === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    this.buffered -= n;
    return out;
  }
}
