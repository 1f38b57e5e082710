/**
 * In-memory BlockBackends for the NBD server's tests, one with a gate: reads and writes the test
 * chooses wait until it opens the gate, so that requests stay in flight for as long as a test
 * needs them there. And a server of one, and a client of that server.
 */
import type { BackendCapabilities, BlockBackend, BlockExtent } from '../../src/nbd/backend.js';
import type { OptionReply } from '../../src/nbd/option-codec.js';
import * as P from '../../src/nbd/protocol.js';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import type { TestContext } from 'node:test';
import { TinyClient } from './nbd-client-helper.js';

/** A disk of `sizeBytes` in `data`, every call answered at once; tests extend it to watch, delay or hold calls. */
export class MemoryBackend implements BlockBackend {
  readonly capabilities: BackendCapabilities;
  readonly blockSizes: { minimum: number; preferred: number; maximum: number };
  readonly data: Buffer;

  constructor(sizeBytes: number, opts: { readOnly?: boolean; maxBlockBytes?: number } = {}) {
    this.blockSizes = { minimum: 1, preferred: 4096, maximum: opts.maxBlockBytes ?? 1 << 20 };
    this.data = Buffer.alloc(sizeBytes);
    this.capabilities = { readOnly: opts.readOnly ?? false, canTrim: true, canWriteZeroes: true, canFastZero: false, canCache: true, canMultiConn: true, canBlockStatus: true };
  }

  size(): number {
    return this.data.length;
  }

  async read(offset: number, length: number, into: Buffer): Promise<BlockExtent[] | undefined> {
    this.data.copy(into, 0, offset, offset + length);
    return undefined;
  }

  async write(offset: number, data: Buffer, _fua?: boolean): Promise<void> {
    data.copy(this.data, offset);
  }

  async flush(): Promise<void> {}
  async trim(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }
  async cache(): Promise<void> {}
  async blockStatus(_offset: number, length: number): Promise<BlockExtent[]> {
    return [{ length, hole: false, zero: false }];
  }
  async close(): Promise<void> {}
}

export class GatedBackend extends MemoryBackend {
  /** Which reads and writes wait for open(); none by default. */
  holds: (op: 'read' | 'write', offset: number) => boolean = () => false;
  /** Reads and writes started, in order (held ones included). */
  readonly started: { op: 'read' | 'write'; offset: number; length: number }[] = [];
  private readonly waiting: (() => void)[] = [];
  private startWaiters: (() => void)[] = [];

  constructor(sizeBytes: number, maxBlockBytes = 1 << 20) {
    super(sizeBytes, { maxBlockBytes });
  }

  /** Lets every held call go on, and every call from now on. */
  open(): void {
    this.holds = () => false;
    for (const w of this.waiting.splice(0)) w();
  }

  /** Resolves once `n` reads and writes have started. */
  async startedAtLeast(n: number): Promise<void> {
    while (this.started.length < n) await new Promise<void>((r) => this.startWaiters.push(r));
  }

  private async begin(op: 'read' | 'write', offset: number, length: number): Promise<void> {
    this.started.push({ op, offset, length });
    for (const w of this.startWaiters.splice(0)) w();
    if (this.holds(op, offset)) await new Promise<void>((r) => this.waiting.push(r));
  }

  override async read(offset: number, length: number, into: Buffer): Promise<BlockExtent[] | undefined> {
    await this.begin('read', offset, length);
    return super.read(offset, length, into);
  }

  override async write(offset: number, data: Buffer): Promise<void> {
    await this.begin('write', offset, data.length);
    return super.write(offset, data);
  }
}

/** An NbdServer on 127.0.0.1 serving `backend` as export `disk`, closed when the test ends. */
export async function serveDisk(t: TestContext, backend: BlockBackend, opts: Partial<NbdServerOptions> = {}): Promise<{ server: NbdServer; port: number }> {
  const server = new NbdServer({ ...opts, exports: new Map([['disk', { backend }]]) });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => server.close());
  return { server, port };
}

/** Resolves once `server` has no connection open; false if some is still open after `ms`. */
export async function noConnectionsWithin(server: NbdServer, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (server.connectionCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return server.connectionCount === 0;
}

/**
 * A client of a fresh 1 MiB GatedBackend served as `disk` (serveDisk), closed when the test
 * ends: greeted, and with structured replies asked for and taken; `structuredReplies` are the
 * server's answers to that option.
 */
export async function structuredClient(t: TestContext): Promise<{ client: TinyClient; structuredReplies: OptionReply[] }> {
  const { port } = await serveDisk(t, new GatedBackend(1 << 20));
  const client = await TinyClient.connect(port);
  t.after(() => client.close());
  await client.greet();
  const structuredReplies = await client.option(P.NBD_OPT_STRUCTURED_REPLY);
  client.structured = true;
  return { client, structuredReplies };
}
