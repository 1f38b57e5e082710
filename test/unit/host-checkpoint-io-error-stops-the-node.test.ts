/**
 * A group's checkpoint that fails with an I/O error stops the node (as a failed apply does),
 * and nothing is checkpointed after it: Linux reports a failed fdatasync once and marks the
 * pages clean, so a retried checkpoint would succeed and let the WAL drop entries whose data
 * never reached the disk. A checkpoint refused for another reason is that group's alone: the
 * pass goes on with the other groups, and the node runs on.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { IoError, Unavailable } from '../../src/common/errors.js';
import { startTestHost } from '../helpers/host.js';
import { Register } from '../helpers/register-machine.js';
import { until } from '../helpers/until.js';

/** Counts its checkpoints; the next one throws `failNext` when set. */
class Failing extends Register {
  checkpoints = 0;
  failNext: Error | null = null;
  override async checkpoint(): Promise<number> {
    this.checkpoints++;
    const err = this.failNext;
    this.failNext = null;
    if (err) throw err;
    return super.checkpoint();
  }
}

/** One host on a real WAL with groups 100 and 101 (in that order), five entries applied in each. */
async function twoGroups(t: TestContext) {
  const fatal: unknown[] = [];
  const { host, wal, stop } = await startTestHost(t, { prefix: 'raftblock-ckpt-eio-', host: { onFatal: (err) => fatal.push(err) } });
  const sms = [new Failing(), new Failing()];
  for (const [i, sm] of sms.entries()) await host.addGroup(100 + i, [1], sm, { campaign: true });
  host.start();
  await until(() => [100, 101].every((g) => host.groups.get(g)!.isLeader));
  for (let k = 0; k < 5; k++) await Promise.all([100, 101].map((g) => host.propose(g, Buffer.from(`v${k}`))));
  await until(() => sms.every((s) => s.appliedIndex >= 6));
  return { host, wal, sms, fatal, stop };
}

test('an I/O error from a group checkpoint stops the node, and nothing is checkpointed after it', async (t) => {
  const { host, wal, sms, fatal, stop } = await twoGroups(t);
  const walFirst = wal.firstIndex(100);
  const eio = new IoError('fdatasync', 5, 'fdatasync failed: EIO');
  sms[0].failNext = eio;
  await host.checkpointAll();
  assert.deepEqual(fatal, [eio], 'the node is stopped with the checkpoint error');
  assert.equal(sms[1].checkpoints, 0, 'the pass stopped at the failed group');
  // The next pass would succeed (the failure is reported once): it must not run, nor may the
  // last checkpoint of stop().
  await host.checkpointAll();
  assert.equal(wal.firstIndex(100), walFirst, 'the WAL dropped entries after a failed checkpoint');
  await stop();
  assert.deepEqual(sms.map((s) => s.checkpoints), [1, 0], 'a checkpoint ran after the node was stopped');
});

test("an error of Node's own file calls in a checkpoint (the checkpoint file's sync) stops the node too", async (t) => {
  const { host, sms, fatal } = await twoGroups(t);
  const err = Object.assign(new Error('EIO: i/o error, fsync'), { errno: -5, code: 'EIO', syscall: 'fsync' });
  sms[1].failNext = err;
  await host.checkpointAll();
  assert.deepEqual(fatal, [err]);
});

test('a checkpoint refused for another reason is that group alone: the later groups of the pass checkpoint, the node runs on', async (t) => {
  const { host, wal, sms, fatal } = await twoGroups(t);
  const walFirst = [wal.firstIndex(100), wal.firstIndex(101)];
  sms[0].failNext = new Unavailable('PG 100: store closed');
  await host.checkpointAll();
  assert.deepEqual(fatal, [], 'the node was stopped');
  assert.deepEqual(sms.map((s) => s.checkpoints), [1, 1], 'group 101 is checkpointed in the same pass');
  assert.ok(wal.firstIndex(101) > walFirst[1], 'group 101 compacted its WAL');
  // The next pass checkpoints group 100.
  await host.checkpointAll();
  assert.equal(sms[0].checkpoints, 2);
  assert.ok(wal.firstIndex(100) > walFirst[0], 'group 100 compacted its WAL');
});
