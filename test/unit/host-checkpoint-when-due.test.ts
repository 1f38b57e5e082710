/**
 * When the host checkpoints a group (MultiRaftHost.checkpointDue): past its pending bytes or
 * entries, when old, or when the WAL holds more segments in use than its cap. Segments that
 * no group needs any more (waiting to be recycled as the next segment, one per rotation) are
 * not in use: after a burst has left many of them, counting them kept the WAL "over its cap"
 * for good, and every group was checkpointed on every scan.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestHost } from '../helpers/host.js';
import { Register } from '../helpers/register-machine.js';
import { until } from '../helpers/until.js';

/** Counts its checkpoints. */
class Counting extends Register {
  checkpoints = 0;
  override async checkpoint(): Promise<number> {
    this.checkpoints++;
    return super.checkpoint();
  }
}

test('after a burst, segments waiting to be recycled do not keep every group checkpointing on every scan', async (t) => {
  const { host, wal } = await startTestHost(t, {
    prefix: 'raftblock-ckpt-due-',
    // Idle segments are all kept here, as a WAL that could not remove them would: the host must
    // not count them.
    wal: { idleSegmentsKept: 1000 },
    // Only the WAL's size may make a group due here: no timer (the helper's 1e9 ms), no age,
    // byte or entry limit.
    host: {
      checkpointMaxAgeMs: 1e9,
      checkpointPendingBytes: 1e12,
      checkpointPendingEntries: 1e9,
      checkpointNodePendingBytes: 1e12,
      checkpointMaxWalSegments: 2,
    },
  });
  const sms = [new Counting(), new Counting()];
  for (const [i, sm] of sms.entries()) await host.addGroup(100 + i, [1], sm, { campaign: true });
  host.start();
  await until(() => [100, 101].every((g) => host.groups.get(g)!.isLeader));

  // A burst: ~1.2 MB of entries, over the cap of two segments.
  const payload = Buffer.alloc(4000, 7);
  for (let k = 0; k < 150; k++) await Promise.all([100, 101].map((g) => host.propose(g, payload)));
  assert.ok(wal.segmentsInUse() > 2, `the burst spans ${wal.segmentsInUse()} segments`);
  await host.checkpointDue();
  assert.deepEqual(sms.map((s) => s.checkpoints), [1, 1], 'over the cap: every group with applied entries checkpoints');
  const files = wal.segmentSeqs().length;
  assert.ok(wal.segmentsInUse() <= 2, `${wal.segmentsInUse()} segments in use after the checkpoints`);

  // A few more writes, far from filling a segment: nothing is due, although the files the
  // burst left are all still there.
  for (let round = 0; round < 3; round++) {
    for (let k = 0; k < 5; k++) await Promise.all([100, 101].map((g) => host.propose(g, payload)));
    await host.checkpointDue();
  }
  assert.ok(wal.segmentSeqs().length >= files - 1, 'the burst left its segment files');
  assert.deepEqual(sms.map((s) => s.checkpoints), [1, 1], 'a group was checkpointed with the WAL under its cap');
});
