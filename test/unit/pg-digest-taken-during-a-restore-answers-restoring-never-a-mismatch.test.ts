/**
 * A replica's digest (pg-digest.ts, `pool verify`) read while a snapshot restore begins on that
 * replica (InstallSnapshot, a WAL repair, `pool repair`): the restore wipes the data files and
 * refills them from the image while the applied index still reads as before, so a digest that
 * reads across it describes no state of the PG, yet its applied index is the same at its start
 * and its end. Compared with a peer at that index it was a mismatch that did not exist. It
 * answers `restoring` instead, which verify asks again (pg-verify.ts), and so does a digest
 * asked while a restore is under way. Real PG stores on a real disk; the digest is held at the
 * open of its second data file, so the restore runs between two of its reads.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import type { BlockFile, BlockIo, OpenFileOptions } from '../../src/io/types.js';
import { emptyMap, pgGroupId, type ClusterMap } from '../../src/cluster/map.js';
import { digestReplica } from '../../src/cluster/pg-digest.js';
import { judgeReplicas } from '../../src/cluster/pg-verify.js';
import type { GroupDigest } from '../../src/cluster/admin-client.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { WrappedBlockIo } from '../helpers/block-io.js';
import { addNodeCommand, applyAll } from '../helpers/map.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const term = 3;

/** Pool `one` (one PG, so every extent is in it) holding volumes 1 and 2, 4 MiB each in 1 MiB extents. */
function twoVolumeMap(): { map: ClusterMap; groupId: number } {
  const map = applyAll(
    emptyMap(),
    addNodeCommand(1),
    { type: 'createPool', name: 'one', replicas: 1, pgCount: 1, failureDomain: 'zone' },
    { type: 'createVolume', name: 'a', sizeBytes: 4 * MiB, extentBytes: MiB, pool: 'one' },
    { type: 'createVolume', name: 'b', sizeBytes: 4 * MiB, extentBytes: MiB, pool: 'one' },
  );
  assert.deepEqual(map.volumes.map((v) => v.id), [1, 2]);
  return { map, groupId: pgGroupId(map.pools[0].id, 0) };
}

/** A BlockIo whose next open of a path matching `pattern` waits for `release` (set by holdOpen). */
class HeldOpenIo extends WrappedBlockIo {
  private hold: { pattern: RegExp; reached: () => void; release: Promise<void> } | undefined;
  /** Holds the next open of a matching path; resolves `reached` once one waits. */
  holdOpen(pattern: RegExp): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let release!: () => void;
    const r = new Promise<void>((res) => (reached = res));
    this.hold = { pattern, reached, release: new Promise<void>((res) => (release = res)) };
    return { reached: r, release };
  }
  override async open(path: string, o?: OpenFileOptions): Promise<BlockFile> {
    const h = this.hold;
    if (h && h.pattern.test(path)) {
      this.hold = undefined;
      h.reached();
      await h.release;
    }
    return super.open(path, o);
  }
  protected wrapFile(): Partial<BlockFile> {
    return {};
  }
}

async function openStore(t: TestContext, io: BlockIo, dir: string, groupId: number): Promise<PgStore> {
  const s = await PgStore.open(io, new ScratchPool(io), dir, groupId);
  t.after(() => s.close());
  return s;
}

/** Applies entries 1..8: one 1 MiB write per extent of both volumes, each filled with `fill` plus its index. */
async function fill(store: PgStore, fillByte: number): Promise<void> {
  let index = 0;
  for (const volume of [1, 2]) {
    for (let e = 0; e < 4; e++) {
      index++;
      await store.apply(index, term, encodeWrite(volume, e * MiB, Buffer.alloc(MiB, fillByte + index), { session: 1, seq: index }));
    }
  }
}

/** A store in a fresh directory holding `fillByte`'s data, checkpointed and reopened on `io`, its data files not open yet. */
async function reopened(t: TestContext, io: BlockIo, groupId: number, fillByte: number): Promise<PgStore> {
  const dir = tempDir(t);
  const first = await PgStore.open(new FsBlockIo(), new ScratchPool(new FsBlockIo()), dir, groupId);
  await fill(first, fillByte);
  await first.checkpoint();
  await first.close();
  return openStore(t, io, dir, groupId);
}

type SettledDigest = Extract<GroupDigest, { digest: string }>;

/** Node 2's answer: the digest of `store`, which no restore touches. */
async function peerDigest(store: PgStore, map: ClusterMap, groupId: number): Promise<SettledDigest> {
  const d = await digestReplica(store, map, groupId, 2);
  assert.ok('digest' in d, `the peer answered ${JSON.stringify(d)}`);
  return d;
}

/** Node 2's replica (no restore touches it), filled with `fillByte`'s data, and its digest. */
async function sourceAndPeer(t: TestContext, fillByte: number): Promise<{ map: ClusterMap; groupId: number; source: PgStore; peer: SettledDigest }> {
  const { map, groupId } = twoVolumeMap();
  const source = await openStore(t, new FsBlockIo(), tempDir(t), groupId);
  await fill(source, fillByte);
  return { map, groupId, source, peer: await peerDigest(source, map, groupId) };
}

/** A digest read across a restore: given as restoring, never a mismatch with its settled peer. */
function assertRestoring(peer: SettledDigest, answer: GroupDigest): void {
  const verdict = judgeReplicas([peer, answer]);
  assert.notEqual(verdict.result, 'mismatch', `a digest read across a restore, ${JSON.stringify(answer)}, made a mismatch with its peer's ${peer.digest}`);
  assert.ok('restoring' in answer && answer.restoring, `a digest read across a restore was given as ${JSON.stringify(answer)}`);
  assert.equal(verdict.result, 'restoring');
}

test('a digest under which a restore begins answers restoring, not a digest of the wiped files', async (t) => {
  const { map, groupId, peer } = await sourceAndPeer(t, 0x10);
  const io = new HeldOpenIo(new FsBlockIo());
  const store = await reopened(t, io, groupId, 0x10);
  // The two replicas hold the same bytes at the same index: verify would call them consistent.
  assert.equal(store.appliedIndex, 8);

  const held = io.holdOpen(/vol-2\.dat$/);
  const digest = digestReplica(store, map, groupId, 1);
  await held.reached; // volume 1 read, volume 2 not yet
  await store.beginRestore(); // every data file removed; the applied index still reads 8
  assert.equal(store.appliedIndex, 8);
  held.release();
  const answer = await digest;

  assertRestoring(peer, answer);
});

test('a digest under which a whole restore runs, to the index it had, answers restoring, not a mix of both states', async (t) => {
  // The peer holds the majority's copy; this replica an odd one at the same index, and is
  // rebuilt from the peer's image (pool repair) while its digest is read.
  const { map, groupId, source, peer } = await sourceAndPeer(t, 0x20);
  const io = new HeldOpenIo(new FsBlockIo());
  const store = await reopened(t, io, groupId, 0x40);
  assert.equal(judgeReplicas([peer, await digestReplica(store, map, groupId, 1)]).result, 'mismatch', 'the odd copy differs');
  await store.close();
  const odd = await openStore(t, io, store.dir, groupId);

  const held = io.holdOpen(/vol-2\.dat$/);
  const digest = digestReplica(odd, map, groupId, 1);
  await held.reached;
  await odd.beginRestore();
  await odd.restoreChunk(await source.imageChunk(null, 64 * MiB, 8));
  await odd.finishRestore(8, term);
  assert.equal(odd.holdsPartialImage, false);
  held.release();
  const answer = await digest;

  assertRestoring(peer, answer);
  // Asked again, the rebuilt replica agrees with its peer.
  assert.deepEqual(judgeReplicas([peer, await digestReplica(odd, map, groupId, 1)]), { result: 'consistent', appliedIndex: 8 });
});

test('a digest asked while a restore is under way answers restoring', async (t) => {
  const { map, groupId } = twoVolumeMap();
  const store = await openStore(t, new FsBlockIo(), tempDir(t), groupId);
  await fill(store, 0x30);
  await store.beginRestore();
  const answer = await digestReplica(store, map, groupId, 1);
  assert.deepEqual(answer, { groupId, nodeId: 1, restoring: true });
});
