/**
 * A tiny NBD client for in-process tests: just enough of the protocol to drive the server
 * byte by byte, including things a real client would never send.
 */
import { connect, type Socket } from 'node:net';
import {
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  parseOptionReply,
  type OptionReply,
} from '../../src/nbd/option-codec.js';
import {
  NBD_CMD_READ,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REP_ACK,
} from '../../src/nbd/protocol.js';
import { decodeChunkPayload, parseReply } from '../../src/nbd/reply-codec.js';
import { encodeRequest } from '../../src/nbd/request-codec.js';

export class ByteReader {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  ended = false;
  constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => {});
  }
  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed (wanted ${n} bytes, have ${this.buf.length})`);
      await new Promise<void>((r) => (this.waiter = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Resolves when the peer closed the connection. */
  async closed(): Promise<void> {
    while (!this.ended) await new Promise<void>((r) => (this.waiter = r));
  }
  get available(): number {
    return this.buf.length;
  }
}

export async function openSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

export interface Reply {
  handle: number;
  error: number;
  /** READ: the bytes reassembled from data/hole chunks (or the simple reply payload). */
  data?: Buffer;
  chunks: { type: string; offset?: number; length?: number }[];
  descriptors?: { length: number; flags: number }[];
  message?: string;
}

export class TinyClient {
  readonly reader: ByteReader;
  structured = false;
  /** handle → (type, offset, length) of requests awaiting replies */
  private readonly pending = new Map<number, { type: number; offset: number; length: number }>();
  private readonly partial = new Map<number, Reply>();
  private nextHandle = 1;

  constructor(readonly socket: Socket) {
    this.reader = new ByteReader(socket);
  }

  static async connect(port: number): Promise<TinyClient> {
    return new TinyClient(await openSocket(port));
  }

  /** Reads the greeting and sends client flags. */
  async greet(flags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<Buffer> {
    const g = await this.reader.read(18);
    const f = Buffer.alloc(4);
    f.writeUInt32BE(flags, 0);
    this.socket.write(f);
    return g;
  }

  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.socket.write(encodeOption(option, data));
    const replies: OptionReply[] = [];
    for (;;) {
      const head = await this.reader.read(20);
      const len = head.readUInt32BE(16);
      const body = await this.reader.read(len);
      const r = parseOptionReply(Buffer.concat([head, body]))!.reply;
      replies.push(r);
      if (r.replyType === NBD_REP_ACK || (r.replyType & 0x80000000) !== 0) return replies;
    }
  }

  /** Full handshake with GO; returns the export size and transmission flags. */
  async handshake(exportName: string, opts: { structured?: boolean; baseAllocation?: boolean } = {}): Promise<{ size: number; flags: number }> {
    await this.greet();
    if (opts.structured ?? true) {
      const r = await this.option(NBD_OPT_STRUCTURED_REPLY);
      if (r[0].replyType !== NBD_REP_ACK) throw new Error('structured replies refused');
      this.structured = true;
      if (opts.baseAllocation ?? true) await this.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest(exportName, ['base:allocation']));
    }
    const replies = await this.option(NBD_OPT_GO, encodeInfoRequest(exportName, [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE]));
    const last = replies[replies.length - 1];
    if (last.replyType !== NBD_REP_ACK) throw new Error(`GO failed: 0x${last.replyType.toString(16)}`);
    const exp = replies.find((r) => r.replyType === 3 && r.payload.readUInt16BE(0) === 0)!;
    return { size: exp.payload.readUInt32BE(2) * 2 ** 32 + exp.payload.readUInt32BE(6), flags: exp.payload.readUInt16BE(10) };
  }

  /** Sends a request (optionally with payload); returns its handle. */
  send(type: number, offset: number, length: number, flags = 0, payload?: Buffer): number {
    const handle = this.nextHandle++;
    this.pending.set(handle, { type, offset, length });
    this.socket.write(encodeRequest({ flags, type, handleHi: 0, handleLo: handle, offset, length }, payload));
    return handle;
  }

  /** Reads replies until one request's reply is complete; returns it. */
  async nextReply(): Promise<Reply> {
    for (;;) {
      const magic = await this.reader.read(4);
      const m = magic.readUInt32BE(0);
      if (m === 0x67446698) {
        const rest = await this.reader.read(12);
        const p = parseReply(Buffer.concat([magic, rest]));
        if (!p || p.kind !== 'simple') throw new Error('bad simple reply');
        const req = this.pending.get(p.handleLo);
        if (!req) throw new Error(`reply for unknown handle ${p.handleLo}`);
        this.pending.delete(p.handleLo);
        const reply: Reply = { handle: p.handleLo, error: p.error, chunks: [] };
        if (req.type === NBD_CMD_READ && p.error === 0) reply.data = Buffer.from(await this.reader.read(req.length));
        return reply;
      }
      const rest = await this.reader.read(16);
      const len = rest.readUInt32BE(12);
      const payload = await this.reader.read(len);
      const p = parseReply(Buffer.concat([magic, rest, payload]));
      if (!p || p.kind !== 'chunk') throw new Error('bad structured reply');
      const req = this.pending.get(p.handleLo);
      if (!req) throw new Error(`chunk for unknown handle ${p.handleLo}`);
      let reply = this.partial.get(p.handleLo);
      if (!reply) {
        reply = { handle: p.handleLo, error: 0, chunks: [] };
        if (req.type === NBD_CMD_READ) reply.data = Buffer.alloc(req.length, 0xee);
        this.partial.set(p.handleLo, reply);
      }
      const c = decodeChunkPayload(p.type, p.payload);
      if (c.type === 'data') {
        c.data.copy(reply.data!, c.offset - req.offset);
        reply.chunks.push({ type: 'data', offset: c.offset, length: c.data.length });
      } else if (c.type === 'hole') {
        reply.data!.fill(0, c.offset - req.offset, c.offset - req.offset + c.length);
        reply.chunks.push({ type: 'hole', offset: c.offset, length: c.length });
      } else if (c.type === 'error') {
        reply.error = c.error;
        reply.message = c.message;
        reply.chunks.push({ type: 'error', offset: c.offset });
      } else if (c.type === 'block-status') {
        reply.descriptors = c.descriptors;
        reply.chunks.push({ type: 'block-status' });
      } else {
        reply.chunks.push({ type: 'none' });
      }
      if (p.flags & NBD_REPLY_FLAG_DONE) {
        this.partial.delete(p.handleLo);
        this.pending.delete(p.handleLo);
        if (reply.error !== 0) delete reply.data;
        return reply;
      }
    }
  }

  async request(type: number, offset: number, length: number, flags = 0, payload?: Buffer): Promise<Reply> {
    const h = this.send(type, offset, length, flags, payload);
    const r = await this.nextReply();
    if (r.handle !== h) throw new Error(`expected reply for ${h}, got ${r.handle}`);
    return r;
  }

  close(): void {
    this.socket.destroy();
  }
}
