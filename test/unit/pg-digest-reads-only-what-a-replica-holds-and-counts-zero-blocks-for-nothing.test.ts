/**
 * A replica's digest (`pool verify`) read every byte of every extent the PG could hold, holes
 * included: for a 1 PiB volume, 1 PiB of reads per replica. It now reads the replica's data runs
 * only and hashes the blocks that are not all zeros, with their volume and offset; so replicas
 * with the same bytes agree whatever their allocation (a written zero block, a trimmed one, a
 * NO_HOLE zero, a hole), a byte that differs anywhere (past 256 TiB too) is a mismatch, and a
 * digest of the earlier version, from a node not yet upgraded, is never compared with it.
 * Real PG stores on a real disk.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { emptyMap, pgGroupId, type ClusterMap } from '../../src/cluster/map.js';
import { digestReplica } from '../../src/cluster/pg-digest.js';
import { judgeReplicas, type ReplicaDigest } from '../../src/cluster/pg-verify.js';
import type { PgStore } from '../../src/store/pg-store.js';
import { fsWithAddonBackend, testBackends } from '../../src/io/testing.js';
import { encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { openStore } from '../helpers/block-io.js';
import { addNodeCommand, applyAll } from '../helpers/map.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const TiB = 2 ** 40;
const volumeBytes = 2 ** 50;

/** Pool `one` (one PG) holding volume 1 of 1 PiB. */
function bigVolumeMap(): { map: ClusterMap; groupId: number } {
  const map = applyAll(
    emptyMap(),
    addNodeCommand(1),
    { type: 'createPool', name: 'one', replicas: 1, pgCount: 1, failureDomain: 'zone' },
    { type: 'createVolume', name: 'big', sizeBytes: volumeBytes, pool: 'one' },
  );
  return { map, groupId: pgGroupId(map.pools[0].id, 0) };
}

type Settled = Extract<ReplicaDigest, { digest: string }>;

async function digestOf(store: PgStore, map: ClusterMap, groupId: number, nodeId: number): Promise<Settled> {
  const d = await digestReplica(store, map, groupId, nodeId);
  assert.ok('digest' in d, JSON.stringify(d));
  return d;
}

/** Data at 0, past 16 TiB and past 256 TiB; block 1 of each zeroed by `zeroing` (or left a hole). */
async function filled(t: TestContext, store: PgStore, zeroing: 'written' | 'trim' | 'noHole' | 'hole', farByte = 0x33): Promise<void> {
  let i = 0;
  const id = () => ({ session: 1, seq: ++i });
  for (const [at, byte] of [[0, 0x11], [17 * TiB, 0x22], [300 * TiB, farByte]] as const) {
    await store.apply(i + 1, 1, encodeWrite(1, at, Buffer.alloc(B, byte), id()));
    if (zeroing === 'written') await store.apply(i + 1, 1, encodeWrite(1, at + B, Buffer.alloc(B), id()));
    if (zeroing === 'trim') {
      await store.apply(i + 1, 1, encodeWrite(1, at + B, Buffer.alloc(B, 0x77), id()));
      await store.apply(i + 1, 1, encodeRange(OpKind.Trim, 1, at + B, B, id()));
    }
    if (zeroing === 'noHole') await store.apply(i + 1, 1, encodeRange(OpKind.ZeroNoHole, 1, at + B, B, id()));
  }
  // Each store ends at the same applied index, as replicas compared by verify do.
  while (i < 20) await store.apply(i + 1, 1, encodeRange(OpKind.Trim, 1, 900 * TiB, B, id()));
  await store.checkpoint();
  void t;
}

// The io_uring backend, and fs with the addon (which tells holes through it); not the fs backend
// without it: it tells no holes (everything below the end of a file is data), so a replica on
// it is still read whole, 300 TiB here.
const holeTelling = [
  { label: 'uring', backend: testBackends().find((b) => b.name === 'uring')! },
  { label: 'fs with the addon', backend: fsWithAddonBackend() },
];
for (const { label, backend } of holeTelling) {
  test(`(${label}) replicas with the same bytes agree whatever their allocation; a byte past 256 TiB that differs is a mismatch`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const { map, groupId } = bigVolumeMap();
    const answers: Settled[] = [];
    const kinds = ['written', 'trim', 'noHole', 'hole'] as const;
    for (let n = 0; n < kinds.length; n++) {
      const store = await openStore(io, tempDir(t));
      t.after(() => store.close());
      await filled(t, store, kinds[n]);
      answers.push(await digestOf(store, map, groupId, n + 1));
    }
    assert.ok(answers[0].digest.startsWith('v2:'), answers[0].digest);
    assert.deepEqual(judgeReplicas(answers), { result: 'consistent', appliedIndex: 20 });

    const odd = await openStore(io, tempDir(t));
    t.after(() => odd.close());
    await filled(t, odd, 'hole', 0x34);
    const verdict = judgeReplicas([...answers, await digestOf(odd, map, groupId, 9)]);
    assert.equal(verdict.result, 'mismatch');
    assert.deepEqual(verdict.result === 'mismatch' && verdict.groups.map((g) => g.nodeIds), [[1, 2, 3, 4], [9]]);
  });
}

test('a digest of the earlier version is never compared with a newer one: the PG is incomplete, not a mismatch', () => {
  const v2 = { nodeId: 1, appliedIndex: 5, digest: 'v2:aa' };
  const v2b = { nodeId: 2, appliedIndex: 5, digest: 'v2:aa' };
  const v1 = { nodeId: 3, appliedIndex: 5, digest: 'ffee' };
  const verdict = judgeReplicas([v2, v2b, v1]);
  assert.equal(verdict.result, 'incomplete');
  assert.match(verdict.result === 'incomplete' ? verdict.errors[3] : '', /earlier version/);
  assert.equal(judgeReplicas([v2, { ...v2b, digest: 'v2:bb' }, v1]).result, 'mismatch', 'the newest version\'s digests are still compared');
  assert.deepEqual(judgeReplicas([v1, { ...v1, nodeId: 4 }]), { result: 'consistent', appliedIndex: 5 }, 'a cluster of the earlier version compares as before');
});
