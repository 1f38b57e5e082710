/**
 * A new replica of a PG is sent its leader's snapshot image and the log after it, so before a
 * leader adds one it judges which store command level the PG needs of the replica's node: the
 * level of each command in its log (read from the header alone) and FarOffsets if its data
 * files may reach 256 TiB. The entry's level agrees with the proposal's gate
 * (storeOpsLevelOfRange); the files' answer may be yes for a byte since trimmed, never no for
 * one they hold, and a shrink's discard that emptied them counts as nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testBackends } from '../../src/io/testing.js';
import { encodeDiscardFrom, encodeRange, encodeWrite, farOffsetsFromBytes, OpKind, StoreOpsLevel, storeOpsLevelOfCommand, storeOpsLevelOfRange } from '../../src/store/ops.js';
import { dataFileSpanBytes } from '../../src/store/spanned-file.js';
import { Corruption } from '../../src/common/errors.js';
import { openStore } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const TiB = 2 ** 40;
const id = { session: 1, seq: 1 };

test("a log entry's store command level is its command's, read from the header, as the proposal's gate judges it", () => {
  assert.equal(storeOpsLevelOfCommand(new Uint8Array(0)), StoreOpsLevel.Base, "a leader's empty entry");
  const ranges: [offset: number, length: number][] = [
    [0, B],
    [17 * TiB, B],
    [farOffsetsFromBytes - B, B],
    [farOffsetsFromBytes - B, 2 * B], // starts below 256 TiB, ends past it
    [farOffsetsFromBytes, B],
    [300 * TiB, 64 * 1024 * 1024],
    [2 ** 50 - B, B],
  ];
  for (const [offset, length] of ranges) {
    const want = storeOpsLevelOfRange(offset, length);
    assert.equal(storeOpsLevelOfCommand(encodeWrite(1, offset, Buffer.alloc(length), id)), want, `write ${offset}+${length}`);
    for (const kind of [OpKind.Trim, OpKind.Zero, OpKind.ZeroNoHole]) {
      assert.equal(storeOpsLevelOfCommand(encodeRange(kind, 1, offset, length, id)), want, `op ${kind} ${offset}+${length}`);
    }
  }
  assert.equal(storeOpsLevelOfCommand(encodeWrite(1, 300 * TiB, Buffer.alloc(B))), StoreOpsLevel.FarOffsets);
  assert.equal(storeOpsLevelOfCommand(encodeWrite(1, farOffsetsFromBytes - B, Buffer.alloc(2 * B))), StoreOpsLevel.FarOffsets);
  assert.equal(storeOpsLevelOfCommand(encodeWrite(1, 0, Buffer.alloc(B))), StoreOpsLevel.Base);
  // A discard-from needs its own level wherever it starts.
  assert.equal(storeOpsLevelOfCommand(encodeDiscardFrom(1, 0, id)), StoreOpsLevel.DiscardFrom);
  assert.equal(storeOpsLevelOfCommand(encodeDiscardFrom(1, 300 * TiB, id)), StoreOpsLevel.DiscardFrom);
  // The payload is not read: a write's header alone says it.
  assert.equal(storeOpsLevelOfCommand(encodeWrite(1, 300 * TiB, Buffer.alloc(B)).subarray(0, 24)), StoreOpsLevel.FarOffsets);
  // What this build cannot read is corruption of its own log, as for decodeOp.
  assert.throws(() => storeOpsLevelOfCommand(new Uint8Array(10)), Corruption);
  const unknown = Buffer.from(encodeRange(OpKind.Trim, 1, 0, B));
  unknown[0] = 6;
  assert.throws(() => storeOpsLevelOfCommand(unknown), Corruption);
  // The far-offset flag without the offset's high byte, or the other way round: corrupt.
  const flagOnly = Buffer.from(encodeRange(OpKind.Trim, 1, 0, B));
  flagOnly[0] |= 0x80;
  assert.throws(() => storeOpsLevelOfCommand(flagOnly), Corruption);
  const highOnly = Buffer.from(encodeRange(OpKind.Trim, 1, 2 ** 48, B));
  highOnly[0] &= 0x7f;
  assert.throws(() => storeOpsLevelOfCommand(highOnly), Corruption);
});

for (const backend of testBackends()) {
  test(`(${backend.name}) a PG's data files may reach 256 TiB once a byte or a kept zero went there, and not after a shrink emptied them`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    const store = await openStore(io, dir);
    t.after(() => store.close());
    let index = 0;
    const apply = (cmd: Buffer): Promise<void> => store.apply(++index, 1, cmd);
    const reaches = (): Promise<boolean> => store.filesMayReach(farOffsetsFromBytes);

    assert.equal(await reaches(), false, 'an empty store');
    await apply(encodeWrite(1, 17 * TiB, Buffer.alloc(B, 1), { session: 1, seq: index + 1 }));
    await apply(encodeWrite(1, 200 * TiB, Buffer.alloc(B, 1), { session: 1, seq: index + 1 }));
    await store.checkpoint();
    assert.equal(await reaches(), false, 'bytes below 256 TiB only');

    await apply(encodeWrite(1, 300 * TiB, Buffer.alloc(B, 2), { session: 1, seq: index + 1 }));
    assert.equal(await reaches(), false, 'applied, not written out yet (its log entry says it)');
    await store.checkpoint();
    assert.equal(await reaches(), true, 'a byte at 300 TiB');
    await apply(encodeRange(OpKind.Trim, 1, 300 * TiB, B, { session: 1, seq: index + 1 }));
    await store.checkpoint();
    assert.equal(await reaches(), true, 'trimmed since: still a yes (the file keeps its size)');

    // A shrink's discard cuts every file at its offset: nothing is left past 256 TiB.
    await apply(encodeDiscardFrom(1, 2 ** 45, { session: 1, seq: index + 1 }));
    await store.checkpoint();
    assert.equal(await reaches(), false, 'after a discard from 32 TiB');

    // The file whose span starts 16 GiB below 256 TiB counts whole once it holds anything:
    // a byte below 256 TiB there is taken for one past it (the answer errs on the safe side).
    const straddling = Math.floor(farOffsetsFromBytes / dataFileSpanBytes) * dataFileSpanBytes;
    assert.ok(straddling < farOffsetsFromBytes - B);
    await apply(encodeWrite(1, farOffsetsFromBytes - B, Buffer.alloc(B, 1), { session: 1, seq: index + 1 }));
    await store.checkpoint();
    assert.equal(await reaches(), true, 'a byte just below 256 TiB, in the file that reaches past it');
    await apply(encodeDiscardFrom(1, 2 ** 45, { session: 1, seq: index + 1 }));
    await store.checkpoint();
    assert.equal(await reaches(), false, 'discarded again');

    // Zeros kept allocated past a file's end leave its size alone, and an image carries them.
    await apply(encodeRange(OpKind.ZeroNoHole, 2, 301 * TiB, 2 * B, { session: 1, seq: index + 1 }));
    await store.checkpoint();
    assert.equal(await reaches(), true, 'a NO_HOLE zero at 301 TiB');
    assert.equal(await store.dropVolume(2), true);
    assert.equal(await reaches(), false, 'its volume dropped');
  });
}
