/**
 * The map's side of a volume shrink: the range past the new end is remembered as pending
 * discard (discardToBytes), a grow is refused until the discard is recorded done, and only a
 * `volumeDiscarded` naming the current size and bound clears it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addNodeCommand, applyAll } from '../helpers/map.js';
import { applyCommand, decodeMap, emptyMap, encodeMap, type ClusterMap } from '../../src/cluster/map.js';

const MiB = 1024 * 1024;

const run = applyAll;

function base(): ClusterMap {
  const nodes = [1, 2, 3].map((id) => addNodeCommand(id));
  return run(
    emptyMap(),
    ...nodes,
    { type: 'createPool', name: 'default', replicas: 3, pgCount: 4, failureDomain: 'zone' },
    { type: 'createVolume', name: 'v', sizeBytes: 64 * MiB },
  );
}

const vol = (m: ClusterMap) => m.volumes.find((v) => v.name === 'v')!;

test('a shrink leaves its range pending discard and a grow is refused until it is done', () => {
  let m = run(base(), { type: 'resizeVolume', name: 'v', sizeBytes: 16 * MiB, allowShrink: true });
  assert.deepEqual([vol(m).sizeBytes, vol(m).discardToBytes], [16 * MiB, 64 * MiB]);
  // A second shrink keeps the widest range.
  m = run(m, { type: 'resizeVolume', name: 'v', sizeBytes: 8 * MiB, allowShrink: true });
  assert.equal(vol(m).discardToBytes, 64 * MiB);
  assert.equal(decodeMap(encodeMap(m)).volumes[0].discardToBytes, 64 * MiB, 'survives the codec');

  const grow = applyCommand(m, { type: 'resizeVolume', name: 'v', sizeBytes: 32 * MiB });
  assert.ok(!grow.ok && grow.error.code === 'INVALID_ARGUMENT', 'grow refused while the discard is pending');

  // A discard record for another state changes nothing.
  const stale = applyCommand(m, { type: 'volumeDiscarded', name: 'v', sizeBytes: 16 * MiB, discardToBytes: 64 * MiB });
  assert.ok(stale.ok && !stale.changed);

  const epoch = m.epoch;
  m = run(m, { type: 'volumeDiscarded', name: 'v', sizeBytes: 8 * MiB, discardToBytes: 64 * MiB });
  assert.equal(vol(m).discardToBytes, undefined);
  assert.equal(m.epoch, epoch + 1);
  m = run(m, { type: 'resizeVolume', name: 'v', sizeBytes: 32 * MiB });
  assert.deepEqual([vol(m).sizeBytes, vol(m).discardToBytes], [32 * MiB, undefined]);
});
