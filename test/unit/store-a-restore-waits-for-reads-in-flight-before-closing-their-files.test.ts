/**
 * A snapshot restore (InstallSnapshot, a WAL repair, `pool repair`) closes and removes every
 * data file of a PG replica. A read of the replica's state already in flight on one of them (a
 * client read its leader serves, a digest for `pool verify`, a chunk of the image another
 * replica pulls) had its file pinned, and the restore closed the file anyway: the device then
 * carried out a read handed to it before the close on a descriptor number the process had
 * closed, or had given since to another file, whose bytes came back as the volume's data (or an
 * EBADF, or the store's own "after it was closed" IO_ERROR, which a puller does not retry).
 * The restore now waits for the operations in flight on its files before it closes them, and
 * every read of the state asked from the moment it begins until it ends is refused at once
 * (UNAVAILABLE, which every caller asks again), so reads that keep coming cannot hold it off.
 *
 * A store's close() (a node stopping, a replica retired) closes every data file too, and waits
 * the same way; a close while a restore waits for a read wakes both once the read ends.
 *
 * Real PG stores on a real disk, on each backend; the device's side of a read is held by a
 * WrappedBlockIo at a chosen moment.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testBackends, type TestBackend } from '../../src/io/testing.js';
import type { BlockFile } from '../../src/io/types.js';
import type { ImageChunk, PgStore } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { openStore, WrappedBlockIo } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const KiB64 = 64 * 1024;
/** The replica's bytes before the restore, the image's, and another file's. */
const before = 0x11;
const image = 0x22;
const elsewhere = 0x99;

interface HeldRead {
  /** Settles once the read is held. */
  reached: Promise<void>;
  /** Settles once the held read's file was closed (never, while the read keeps it open). */
  closed: Promise<void>;
  /** The held file's descriptor number, once reached. */
  fd: number;
  release: () => void;
}

/** The descriptor number a BlockFile of either backend was opened as (what the device reads from). */
function descriptorOf(f: BlockFile): number {
  const fd = (f as unknown as { fd?: unknown }).fd;
  assert.equal(typeof fd, 'number', 'the backend keeps its descriptor in `fd`');
  return fd as number;
}

/**
 * A BlockIo whose next pread of a matching file is held: the store has pinned the file and
 * handed it the read, the device has not carried it out yet (the ring not yet submitted to, a
 * busy thread pool). Released, the read is carried out as the device would: on the descriptor
 * number it was handed, whether or not the file was closed meanwhile (`closedUnderRead`).
 */
class HeldReadIo extends WrappedBlockIo {
  private next: { pattern: RegExp; held: HeldRead; released: Promise<void>; reached: () => void; closedNow: () => void } | undefined;
  closedUnderRead = false;

  holdNextRead(pattern: RegExp): HeldRead {
    let reached!: () => void;
    let closedNow!: () => void;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const held: HeldRead = { reached: new Promise((r) => (reached = r)), closed: new Promise((r) => (closedNow = r)), fd: -1, release };
    this.next = { pattern, held, released, reached, closedNow };
    return held;
  }

  protected wrapFile(f: BlockFile, path: string): Partial<BlockFile> {
    let closing: Promise<void> | undefined;
    let onClosed: (() => void) | undefined;
    return {
      pread: async (buf: Buffer, at: number): Promise<number> => {
        const h = this.next;
        if (!h || !h.pattern.test(path)) return f.pread(buf, at);
        this.next = undefined;
        h.held.fd = descriptorOf(f);
        onClosed = h.closedNow;
        h.reached();
        await h.released;
        if (closing === undefined) return f.pread(buf, at);
        this.closedUnderRead = true;
        // Handed over while the file was open: the device does it on that number now.
        return readSync(h.held.fd, buf, 0, buf.length, at);
      },
      close: (): Promise<void> => (closing ??= f.close().then(() => onClosed?.())),
    };
  }
}

interface Replica {
  io: HeldReadIo;
  store: PgStore;
  /** A chunk of the image the restore installs (volume 1, 64 KiB of `image`). */
  chunk: ImageChunk;
}

/** A replica on `backend` whose volume 1 holds 64 KiB of `before` on disk (nothing dirty), and an image to restore. */
async function replica(t: TestContext, backend: TestBackend): Promise<Replica> {
  const device = backend.make();
  const io = new HeldReadIo(device, backend.name);
  const store = await openStore(io, tempDir(t));
  const source = await openStore(device, tempDir(t));
  t.after(async () => {
    await store.close();
    await source.close();
    await device.close();
  });
  await store.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(KiB64, before), { session: 1, seq: 1 }));
  await store.checkpoint(); // on disk: a read of it goes to the device
  await source.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(KiB64, image), { session: 2, seq: 1 }));
  await source.apply(2, 1, encodeWrite(2, 0, Buffer.alloc(B, image), { session: 2, seq: 2 }));
  return { io, store, chunk: await source.imageChunk(null, 1 << 20, 2) };
}

/** Waits for `p` or `ms`, whichever comes first. */
function settledOrAfter(p: Promise<unknown>, ms: number): Promise<void> {
  return Promise.race([p.then(() => undefined), new Promise<void>((r) => setTimeout(r, ms))]);
}

/** The store's answer to a read of volume 1's 64 KiB: its bytes, or its error. */
async function readVolume1(store: PgStore): Promise<Buffer> {
  const out = Buffer.alloc(KiB64, 0xee);
  await store.read(1, 0, KiB64, out);
  return out;
}

/** Asserts `answer` is the bytes from before the restore or a refusal a caller retries, nothing else. */
function assertBeforeOrRetryable(answer: PromiseSettledResult<Buffer>, what: string): void {
  if (answer.status === 'rejected') {
    const e = answer.reason as { code?: string; message?: string };
    assert.equal(e.code, 'UNAVAILABLE', `${what} failed with ${e.code}: ${e.message}`);
    return;
  }
  const got = answer.value;
  const odd = got.findIndex((b) => b !== before);
  assert.equal(odd, -1, `${what} returned 0x${got[odd]?.toString(16)} at byte ${odd}, not the replica's bytes from before the restore (0x${before.toString(16)})`);
}

/**
 * Waits up to 300 ms for the held read's file to be closed, then opens files as the process
 * would (a new data file, a WAL segment): the lowest free numbers first, so the held read's
 * descriptor number is taken by another file if it was freed.
 */
async function takeHeldDescriptorIfFreed(t: TestContext, held: HeldRead): Promise<void> {
  await settledOrAfter(held.closed, 300);
  const otherPath = join(tempDir(t), 'other.dat');
  writeFileSync(otherPath, Buffer.alloc(KiB64, elsewhere));
  const others: number[] = [];
  for (let n = -1; n < held.fd; ) others.push((n = openSync(otherPath, 'r')));
  t.after(() => others.forEach((fd) => closeSync(fd)));
}

for (const backend of testBackends()) {
  test(`(${backend.name}) a read in flight when a restore begins completes on its file before the restore closes it, never on a descriptor closed or given to another file`, { skip: backend.skip }, async (t) => {
    const { io, store, chunk } = await replica(t, backend);
    const held = io.holdNextRead(/vol-1\.dat$/);
    const reading = readVolume1(store);
    await held.reached;

    let restoreBegun = false;
    const restore = store.beginRestore().then(() => (restoreBegun = true));
    // Whatever the restore does to the held read's file, it has done by now.
    await takeHeldDescriptorIfFreed(t, held);
    const begunUnderRead = restoreBegun;
    held.release();

    const [answer] = await Promise.allSettled([reading]);
    assertBeforeOrRetryable(answer, 'a read in flight when a restore began');
    assert.equal(io.closedUnderRead, false, 'the restore closed the file of a read in flight');
    assert.equal(begunUnderRead, false, 'the restore began (its files closed and removed) under a read in flight on one');
    await restore;
    // The restore goes on as ever: its image is what the replica reads once it ended.
    await store.restoreChunk(chunk);
    await store.finishRestore(2, 1);
    assert.deepEqual(await readVolume1(store), Buffer.alloc(KiB64, image));
  });

  test(`(${backend.name}) reads asked once a restore has begun are refused at once until it ends, however many come, and do not hold it off`, { skip: backend.skip }, async (t) => {
    const { io, store, chunk } = await replica(t, backend);
    const held = io.holdNextRead(/vol-1\.dat$/);
    const reading = readVolume1(store);
    await held.reached;
    const restore = store.beginRestore();
    // A stream of reads (client reads, a digest, a block status) while the restore waits for the one in flight.
    for (let i = 0; i < 20; i++) {
      await assert.rejects(readVolume1(store), { code: 'UNAVAILABLE' }, 'a read asked once a restore began');
      await assert.rejects(store.read(2, 0, B, Buffer.alloc(B)), { code: 'UNAVAILABLE' }, 'a read of a volume whose file is not open');
      await assert.rejects(store.blockStatus(1, 0, KiB64), { code: 'UNAVAILABLE' });
      await new Promise((r) => setImmediate(r));
    }
    held.release();
    assertBeforeOrRetryable((await Promise.allSettled([reading]))[0], 'the read in flight');
    await restore;
    // The files hold part of an image until the restore ends: no state to read.
    await store.restoreChunk(chunk);
    await assert.rejects(readVolume1(store), { code: 'UNAVAILABLE' }, 'a read of a half-restored replica');
    await assert.rejects(store.blockStatus(1, 0, KiB64), { code: 'UNAVAILABLE' });
    await store.finishRestore(2, 1);
    assert.deepEqual(await readVolume1(store), Buffer.alloc(KiB64, image));
    assert.deepEqual(await store.blockStatus(1, 0, KiB64), [{ length: KiB64, hole: false, zero: false }]);
  });

  test(`(${backend.name}) an image chunk being read for another replica when a restore begins is refused as a retry, never read from closed files`, { skip: backend.skip }, async (t) => {
    const { io, store, chunk } = await replica(t, backend);
    // Two runs (a hole between them): the chunk reads the second after the restore began.
    await store.apply(2, 1, encodeWrite(1, 4 * KiB64, Buffer.alloc(B, before), { session: 1, seq: 2 }));
    await store.checkpoint();
    const held = io.holdNextRead(/vol-1\.dat$/);
    const serving = store.imageChunk(null, 1 << 20, 2);
    await held.reached;
    const restore = store.beginRestore();
    await settledOrAfter(held.closed, 300);
    held.release();
    // A puller retries UNAVAILABLE (from the PG's leader then); any other error stops its node.
    await assert.rejects(serving, { code: 'UNAVAILABLE' });
    assert.equal(io.closedUnderRead, false, 'the restore closed the file of an image chunk in flight');
    await restore;
    await store.restoreChunk(chunk);
    await store.finishRestore(2, 1);
    assert.deepEqual((await store.imageChunk(null, 1 << 20, 2)).runs.map(([v, at, d]) => [v, at, d.length]), [
      [1, 0, KiB64],
      [2, 0, B],
    ]);
  });

  test(`(${backend.name}) a read in flight when the store closes ends on its file before close() closes it; a restore waiting beside it ends too`, { skip: backend.skip }, async (t) => {
    const { io, store } = await replica(t, backend);
    const held = io.holdNextRead(/vol-1\.dat$/);
    const reading = readVolume1(store);
    await held.reached;
    let restoreEnded = false;
    const restore = store.beginRestore().then(
      () => (restoreEnded = true),
      () => (restoreEnded = true),
    );
    let closed = false;
    const closing = store.close().then(() => (closed = true));
    await takeHeldDescriptorIfFreed(t, held);
    assert.equal(closed, false, 'close() ended under a read in flight');
    held.release();
    assertBeforeOrRetryable((await Promise.allSettled([reading]))[0], 'a read in flight when the store closed');
    assert.equal(io.closedUnderRead, false, 'close() closed the file of a read in flight');
    await settledOrAfter(Promise.all([closing, restore]), 5000);
    assert.ok(closed, 'close() never ended once the read did');
    assert.ok(restoreEnded, 'the restore waiting for the same read never ended');
    await assert.rejects(readVolume1(store), { code: 'UNAVAILABLE' }, 'a read of a closed store');
  });
}
