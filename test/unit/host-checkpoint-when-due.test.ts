/**
 * When the host checkpoints a group (MultiRaftHost.checkpointDue): past its pending bytes or
 * entries, when old, or when the WAL holds more segments in use than its cap. Segments that
 * no group needs any more (waiting to be recycled as the next segment, one per rotation) are
 * not in use: after a burst has left many of them, counting them kept the WAL "over its cap"
 * for good, and every group was checkpointed on every scan.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { MultiRaftHost } from '../../src/cluster/host.js';
import { Register } from '../helpers/register-machine.js';
import { Transport } from '../../src/cluster/transport.js';
import { Wal } from '../../src/wal/index.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { mkdtempSync, rmSync } from 'node:fs';
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
  // Removed after the WAL is closed (tempDir's own removal would run first).
  const dir = mkdtempSync(join(process.env.RAFTBLOCK_TEST_DIR ?? '/var/tmp', 'raftblock-ckpt-due-'));
  const io = new FsBlockIo();
  // Idle segments are all kept here, as a WAL that could not remove them would: the host must
  // not count them.
  const wal = await Wal.open({ dir: join(dir, 'wal'), io, segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024, idleSegmentsKept: 1000 });
  let host!: MultiRaftHost;
  const transport = new Transport({
    nodeId: '1',
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    handlers: { onMessages: (from, _e, msgs) => host.receive(Number(from), msgs), onRequest: async () => undefined },
  });
  await transport.start();
  // Only the WAL's size may make a group due here: no timer, no age, byte or entry limit.
  host = new MultiRaftHost({
    nodeId: 1,
    wal,
    transport,
    tickMs: 10,
    fetchSnapshot: async () => new Uint8Array(0),
    checkpointIntervalMs: 1e9,
    checkpointMaxAgeMs: 1e9,
    checkpointPendingBytes: 1e12,
    checkpointPendingEntries: 1e9,
    checkpointNodePendingBytes: 1e12,
    checkpointMaxWalSegments: 2,
  });
  t.after(async () => {
    await host.stop();
    await transport.close();
    await wal.close();
    rmSync(dir, { recursive: true, force: true });
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
