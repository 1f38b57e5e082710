/**
 * A snapshot install and a checkpoint of the same group never overlap. A checkpoint captures
 * the applied index when it starts; one still running when a restore replaced the state would
 * record that older index over the restore's (checkpoint.bin, through the same temp file), and
 * save the membership as of it over the one prepareSnapshot kept aside for the install. So an
 * install waits for a checkpoint under way, and no checkpoint of the group starts meanwhile.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { emptyConfState, type ConfState, type Message } from '../../src/raft/index.js';
import { startTestHost } from '../helpers/host.js';
import { Register } from '../helpers/register-machine.js';
import { until } from '../helpers/until.js';

const g = 30;

/** Records the order of checkpoints, membership saves and restores; each may be held at a gate. */
class Recording extends Register {
  readonly events: string[] = [];
  checkpointGate: Promise<void> | null = null;
  restoreGate: Promise<void> | null = null;
  override async checkpoint(): Promise<number> {
    const target = this.appliedIndex; // as PgStore.checkpoint: the index taken when it starts
    this.events.push(`checkpoint ${target} started`);
    if (this.checkpointGate) await this.checkpointGate;
    this.events.push(`checkpoint ${target} ended`);
    this.durableIndex = target;
    return target;
  }
  async prepareSnapshot(index: number): Promise<void> {
    this.events.push(`prepareSnapshot ${index}`);
  }
  async saveConfState(index: number, _cs: ConfState): Promise<void> {
    this.events.push(`saveConfState ${index}`);
  }
  override async restoreImage(image: Uint8Array, index: number, term: number): Promise<void> {
    this.events.push(`restore ${index} started`);
    if (this.restoreGate) await this.restoreGate;
    await super.restoreImage(image, index, term);
    this.events.push(`restore ${index} ended`);
  }
}

/**
 * One host whose replica of group `g` (voters 1 and 2) follows node 2, played here by hand:
 * entries 2..4 arrive and are applied.
 */
async function follower(t: TestContext) {
  const fatal: unknown[] = [];
  const gates: (() => void)[] = [];
  const { host } = await startTestHost(t, {
    prefix: 'raftblock-install-ckpt-',
    host: { electionTicks: 1000, onFatal: (err) => fatal.push(err) },
    beforeStop: () => {
      for (const open of gates) open();
    },
  });
  const sm = new Recording();
  /** A gate that the test opens, or else its end: a failed check must not leave stop() waiting. */
  const gate = (): { wait: Promise<void>; open(): void } => {
    let open!: () => void;
    const wait = new Promise<void>((r) => (open = r));
    gates.push(open);
    return { wait, open };
  };
  await host.addGroup(g, [1, 2], sm);
  host.start();
  const entries = [2, 3, 4].map((index) => ({ index, term: 1, type: 0, data: Buffer.from(`v${index}`) }));
  const app = { type: 'app', from: 2, to: 1, term: 1, index: 1, logTerm: 1, entries, commit: 4, seq: 1, tick: 0 } as Message;
  host.receive(2, [{ g, m: app }]);
  await until(() => sm.appliedIndex === 4);
  return { host, sm, gate, fatal };
}

/** Node 2's snapshot at `index`, in one chunk. */
function snapshotFromLeader(index: number): Message {
  const image = Buffer.from(JSON.stringify(['from the snapshot']));
  const confState = { ...emptyConfState(), voters: [1, 2] };
  return { type: 'snap', from: 2, to: 1, term: 1, metadata: { index, term: 1, confState }, offset: 0, totalBytes: image.length, chunk: image, seq: 2, tick: 0 } as Message;
}

test('a snapshot install waits for the checkpoint of its group under way, which cannot then record its older index over the snapshot', async (t) => {
  const { host, sm, gate, fatal } = await follower(t);
  const held = gate();
  sm.checkpointGate = held.wait;
  const checkpoint = host.checkpointAll();
  await until(() => sm.events.includes('checkpoint 4 started'));
  host.receive(2, [{ g, m: snapshotFromLeader(10) }]);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(sm.events, ['checkpoint 4 started'], 'the install began under a running checkpoint');
  held.open();
  await checkpoint;
  await until(() => sm.events.includes('saveConfState 10'));
  assert.deepEqual(sm.events, ['checkpoint 4 started', 'checkpoint 4 ended', 'saveConfState 4', 'prepareSnapshot 10', 'restore 10 started', 'restore 10 ended', 'saveConfState 10']);
  assert.equal(sm.durableIndex, 10);
  assert.deepEqual(fatal, []);
});

test('no checkpoint of a group starts while a snapshot install of it runs', async (t) => {
  const { host, sm, gate, fatal } = await follower(t);
  const held = gate();
  sm.restoreGate = held.wait;
  host.receive(2, [{ g, m: snapshotFromLeader(10) }]);
  await until(() => sm.events.includes('restore 10 started'));
  await host.checkpointAll();
  assert.ok(!sm.events.some((e) => e.startsWith('checkpoint')), 'a checkpoint ran during the install');
  held.open();
  await until(() => sm.events.includes('saveConfState 10'));
  assert.equal(sm.durableIndex, 10);
  assert.deepEqual(fatal, []);
});
