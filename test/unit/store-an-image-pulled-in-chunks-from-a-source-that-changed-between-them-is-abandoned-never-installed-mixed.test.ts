/**
 * A replica that installs a snapshot pulls its source's image in chunks, each read from the
 * source's live state. Entries the source applies between two chunks do no harm: every block is
 * then at or past the snapshot's index, and the replay of the log from there brings each to the
 * same end. A source restored (or reopened) between two chunks does: its first chunk was
 * checked against the snapshot's index, the later ones come from another state, and the mix is
 * no state of the log at all. Every chunk now names the state it was read from; a later chunk
 * is asked for with the first's identity and refused once that state is gone, and a puller
 * that gets a chunk of another state anyway abandons the pull. The pull then starts over from
 * the first chunk, and what is installed is one state, whole.
 *
 * Real PG stores on a real disk; the "network" is a direct call, a chunk as small as the store makes one (a run of at most 1 MiB).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import { PgStore, ScratchPool, storeChunkBytes, type ImageChunk, type ImageChunkFetch } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
/**
 * The blocks of volume 1 every state here writes: 1 MiB apart, so each is in a chunk of its own
 * (a run is cut at 1 MiB, storeChunkBytes, and a backend may report no holes).
 */
const blocks = [0, storeChunkBytes / B, (2 * storeChunkBytes) / B];

async function openStore(t: TestContext, dir = tempDir(t, 'raftblock-pull-')): Promise<PgStore> {
  const io = new FsBlockIo();
  const s = await PgStore.open(io, new ScratchPool(io), dir, 7);
  t.after(() => s.close());
  return s;
}

/** A store at index `blocks.length` whose every block of `blocks` holds `fill`. */
async function storeFilledWith(t: TestContext, fill: number, dir?: string): Promise<PgStore> {
  const s = await openStore(t, dir);
  for (const [i, b] of blocks.entries()) await s.apply(i + 1, 1, encodeWrite(1, b * B, Buffer.alloc(B, fill)));
  return s;
}

/** The first byte of each block of `blocks` (each block is filled with one value). */
async function fills(s: PgStore): Promise<number[]> {
  const out: number[] = [];
  for (const b of blocks) {
    const buf = Buffer.alloc(B);
    await s.read(1, b * B, B, buf);
    out.push(buf[0]);
  }
  return out;
}

/** The pull of `src` as a node serves it: one run a chunk (asked for 4 KiB), the first checked against `atLeast`; `between` runs before each later chunk. */
function served(src: () => PgStore, atLeast: number, between: (chunk: number) => Promise<void> = async () => {}): ImageChunkFetch & { chunks: number } {
  const pull = Object.assign(
    async (cursor: Parameters<ImageChunkFetch>[0], image: string | undefined): Promise<ImageChunk> => {
      if (cursor !== null) await between(pull.chunks);
      const chunk = await src().imageChunk(cursor, B, cursor === null ? atLeast : undefined, image);
      pull.chunks++;
      return chunk;
    },
    { chunks: 0 },
  );
  return pull;
}

test('a pull whose source restores another image between two chunks is abandoned, and pulled again whole', async (t) => {
  const src = await storeFilledWith(t, 0x11);
  // The image the source restores meanwhile (another leader's, at a later index).
  const newer = await storeFilledWith(t, 0x22);
  const image = await newer.snapshotImage();
  const dst = await openStore(t);
  const pull = served(() => src, 3, async (chunk) => {
    if (chunk === 1) await src.restoreImage(image, 9, 2);
  });
  await assert.rejects(dst.pullImage(pull, 3, 1), { code: 'SNAPSHOT_SOURCE_CHANGED' });
  assert.equal(pull.chunks, 1, 'a chunk of the restored state was served');
  assert.equal(dst.appliedIndex, 0, 'a mixed image was installed');
  assert.equal(dst.holdsPartialImage, true, 'the abandoned pull must leave its mark (a crash now rebuilds the replica)');
  // Pulled again from the first chunk (as the host does), at the source's state now.
  assert.ok((await dst.pullImage(served(() => src, 9), 9, 2)) >= blocks.length * B);
  assert.equal(dst.appliedIndex, 9);
  assert.equal(dst.holdsPartialImage, false);
  assert.deepEqual(await fills(dst), [0x22, 0x22, 0x22]);
});

test('a pull whose source is closed and opened again between two chunks (back at its checkpoint) is abandoned', async (t) => {
  const dir = tempDir(t, 'raftblock-pull-src-');
  let src = await storeFilledWith(t, 0x11, dir);
  await src.checkpoint();
  // Applied past the checkpoint: a reopened store is back at index 3 until its log is replayed.
  await src.apply(4, 1, encodeWrite(1, blocks[1] * B, Buffer.alloc(B, 0x33)));
  const dst = await openStore(t);
  const pull = served(() => src, 4, async (chunk) => {
    if (chunk !== 1) return;
    await src.close();
    src = await openStore(t, dir);
  });
  await assert.rejects(dst.pullImage(pull, 4, 1), { code: 'SNAPSHOT_SOURCE_CHANGED' });
  assert.equal(pull.chunks, 1, 'the reopened source served a chunk');
  assert.equal(dst.appliedIndex, 0);
});

test('a puller abandons a pull whose source answers a later chunk from another state (a source that does not check)', async (t) => {
  const src = await storeFilledWith(t, 0x11);
  const image = await (await storeFilledWith(t, 0x22)).snapshotImage();
  const dst = await openStore(t);
  const unchecked: ImageChunkFetch = async (cursor) => {
    if (cursor !== null && src.appliedIndex === 3) await src.restoreImage(image, 9, 2);
    // The image the puller names is not passed on: the source serves whatever it holds.
    return src.imageChunk(cursor, B, cursor === null ? 3 : undefined);
  };
  await assert.rejects(dst.pullImage(unchecked, 3, 1), { code: 'SNAPSHOT_SOURCE_CHANGED' });
  assert.equal(dst.appliedIndex, 0);
});

test('entries a source applies between two chunks keep its image: the pull completes, and the replay of the log repairs it', async (t) => {
  const src = await storeFilledWith(t, 0x11);
  const entry4 = encodeWrite(1, 0, Buffer.alloc(B, 0x44));
  const entry5 = encodeWrite(1, blocks[2] * B, Buffer.alloc(B, 0x55));
  const dst = await openStore(t);
  const pull = served(() => src, 3, async (chunk) => {
    if (chunk === 1) await src.apply(4, 1, entry4);
    if (chunk === 2) await src.apply(5, 1, entry5);
  });
  await dst.pullImage(pull, 3, 1);
  assert.equal(pull.chunks, blocks.length);
  // The first block was read before entry 4, the last after entry 5: the log from 3 on repairs both.
  assert.deepEqual(await fills(dst), [0x11, 0x11, 0x55]);
  await dst.apply(4, 1, entry4);
  await dst.apply(5, 1, entry5);
  assert.deepEqual(await fills(dst), await fills(src));
});

test('peers of an earlier version: a source that names no image is pulled from as before, and a puller that names none is served', async (t) => {
  const src = await storeFilledWith(t, 0x11);
  const dst = await openStore(t);
  const older: ImageChunkFetch = async (cursor) => {
    const { image: _image, ...chunk } = await src.imageChunk(cursor, B, cursor === null ? 3 : undefined);
    return chunk;
  };
  await dst.pullImage(older, 3, 1);
  assert.deepEqual(await fills(dst), [0x11, 0x11, 0x11]);
  // A later chunk asked for without an image (an older puller) is served, restore or not.
  const first = await src.imageChunk(null, B, 3);
  await src.restoreImage(await dst.snapshotImage(), 5, 1);
  const second = await src.imageChunk(first.next, B);
  assert.equal(second.runs.length, 1);
  assert.notEqual(second.image, first.image);
});
