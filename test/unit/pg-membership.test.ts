/**
 * A PG's membership at its durable index (src/cluster/pg-membership.ts): the saved file
 * advanced over the configuration changes the WAL still holds; unknown (never guessed) when
 * the WAL no longer holds them. And the cluster status shows a PG whose Raft configuration
 * differs from its map replicas (admin-client mergeClusterStatus, `raftblock status`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { zonedMap } from '../helpers/map.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { Wal } from '../../src/wal/index.js';
import { encodeConfChange, EntryType, type ConfChange } from '../../src/raft/index.js';
import { bootstrapMembership, joinerMembership, loadMembership, membershipAt, saveMembership } from '../../src/cluster/pg-membership.js';
import { mergeClusterStatus, type GroupStatus, type NodeStatus } from '../../src/cluster/admin-client.js';
import { renderStatus } from '../../src/cli/commands/status.js';
import { setLogSink } from '../../src/common/log.js';
import { tempDir } from '../helpers/tools.js';

setLogSink(() => undefined);
const g = 65536;

function cc(changes: ConfChange['changes']): { type: number; data: Uint8Array } {
  return { type: EntryType.ConfChange, data: encodeConfChange({ changes }) };
}

async function walWith(dir: string, entries: { type: number; data: Uint8Array }[]): Promise<Wal> {
  const wal = await Wal.open({ dir, io: new FsBlockIo(), segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024 });
  await wal.installSnapshot(g, { index: 1, term: 1 });
  await wal.append(g, entries.map((e, i) => ({ index: i + 2, term: 1, ...e })));
  return wal;
}

test('membership at the durable index: the saved one advanced over the changes in the WAL', async (t) => {
  const dir = tempDir(t);
  const noop = { type: EntryType.Normal, data: new Uint8Array(0) };
  // 2 no-op, 3 add learner 4 (joint), 4 leave, 5 swap 4 in / 3 out (joint), 6 leave.
  const wal = await walWith(dir, [noop, cc([{ type: 'addLearner', nodeId: 4 }]), cc([]), cc([{ type: 'addVoter', nodeId: 4 }, { type: 'removeNode', nodeId: 3 }]), cc([])]);
  t.after(() => wal.close());
  const saved = bootstrapMembership([3, 1, 2]);
  assert.deepEqual(saved.confState.voters, [1, 2, 3]);
  assert.deepEqual((await membershipAt(saved, wal, g, 1))!.voters, [1, 2, 3]);
  const at3 = (await membershipAt(saved, wal, g, 3))!;
  assert.deepEqual([at3.voters, at3.votersOutgoing, at3.learners], [[1, 2, 3], [1, 2, 3], [4]], 'joint while adding the learner');
  const at4 = (await membershipAt(saved, wal, g, 4))!;
  assert.deepEqual([at4.voters, at4.votersOutgoing, at4.learners], [[1, 2, 3], [], [4]]);
  const at6 = (await membershipAt(saved, wal, g, 6))!;
  assert.deepEqual([at6.voters, at6.votersOutgoing, at6.learners], [[1, 2, 4], [], []]);
  // A save at 4 (a checkpoint there) and the WAL compacted to 4: the replay starts after it.
  await wal.checkpoint(g, 4);
  const savedAt4 = { index: 4, confState: at4 };
  assert.deepEqual((await membershipAt(savedAt4, wal, g, 6))!.voters, [1, 2, 4]);
  // A skipped save (nothing changed) leaves an older index in the file: still right, since the
  // file holds the configuration at the WAL's compaction point.
  assert.deepEqual((await membershipAt({ index: 1, confState: at4 }, wal, g, 6))!.voters, [1, 2, 4]);
});

test('a joiner whose changes are not in the WAL has no membership (a non-voter), never a guess', async (t) => {
  const dir = tempDir(t);
  const wal = await Wal.open({ dir, io: new FsBlockIo(), segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024 });
  t.after(() => wal.close());
  assert.equal(await membershipAt(joinerMembership(), wal, g, 40), undefined);
  assert.deepEqual((await membershipAt(joinerMembership(), wal, g, 0))!.voters, []);
});

test('the membership file round-trips and is written atomically', async (t) => {
  const dir = tempDir(t);
  assert.equal(await loadMembership(dir), undefined);
  const m = { index: 42, confState: { voters: [2, 3, 4], votersOutgoing: [], learners: [5], learnersNext: [], autoLeave: false } };
  await saveMembership(dir, m);
  assert.deepEqual(await loadMembership(dir), m);
  // A snapshot being installed keeps its membership aside, beside the current one.
  const pending = { ...m, pending: { index: 90, confState: { voters: [3, 4, 5], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false } } };
  await saveMembership(dir, pending);
  assert.deepEqual(await loadMembership(dir), pending);
});

test('status shows a PG whose Raft configuration differs from its map replicas', () => {
  const map = zonedMap(4, 1);
  assert.equal(map.pools[0].createdEpoch, map.epoch, 'a pool remembers the epoch that created it');
  const replicas = map.pools[0].pgs[0].replicas;
  const others = [1, 2, 3, 4].filter((n) => !replicas.includes(n));
  const old = [...replicas.slice(1), others[0]].sort((a, b) => a - b);
  const group = (nodeId: number, extra: Partial<GroupStatus>): GroupStatus => ({
    groupId: 65536, role: nodeId === replicas[1] ? 'leader' : 'follower', term: 3, leader: replicas[1], commitIndex: 9, appliedIndex: 9, lastIndex: 9, voters: old, ...extra,
  });
  const statuses = new Map<number, NodeStatus | Error>();
  for (const n of [1, 2, 3, 4]) statuses.set(n, { nodeId: n, epoch: map.epoch, uptimeMs: 1, groups: [group(n, { learners: [replicas[0]] })] });
  const s = mergeClusterStatus('x', map, statuses);
  const pg = s.groups.find((x) => x.groupId === 65536)!;
  assert.deepEqual(pg.configuration, { voters: old, learners: [replicas[0]], votersOutgoing: undefined });
  assert.match(renderStatus(s, { problemsOnly: false }), new RegExp(`moving from ${old.join(',')} \\+${replicas[0]} learner`));
  assert.equal(pg.moveHeld, undefined);
  // A move held for an upgrade says why, from its leader; a follower's word (or a non-string) is not taken.
  const why = `node ${replicas[0]} runs a build that applies store commands up to level 1`;
  for (const n of [1, 2, 3, 4]) statuses.set(n, { nodeId: n, epoch: map.epoch, uptimeMs: 1, groups: [group(n, { moveHeld: n === replicas[1] ? why : 'a follower' })] });
  const held = mergeClusterStatus('x', map, statuses);
  assert.equal(held.groups.find((x) => x.groupId === 65536)!.moveHeld, why);
  assert.match(renderStatus(held, { problemsOnly: false }), new RegExp(`moving from ${old.join(',')}; held: ${why}\\)`));
  // Counted in the summary, and listed by --problems though the PG is ok (it serves I/O).
  assert.equal(held.summary.movesHeld, 1);
  assert.equal(held.groups.find((x) => x.groupId === 65536)!.health, 'ok');
  const problems = renderStatus(held, { problemsOnly: true });
  assert.match(problems, /1 moving PGs wait for an upgrade/);
  assert.match(problems, /held: node/);
  assert.equal(s.summary.movesHeld, 0);
  assert.doesNotMatch(renderStatus(s, { problemsOnly: true }), /held|wait for an upgrade/);
  for (const n of [1, 2, 3, 4]) statuses.set(n, { nodeId: n, epoch: map.epoch, uptimeMs: 1, groups: [group(n, { moveHeld: 7 as unknown as string })] });
  assert.equal(mergeClusterStatus('x', map, statuses).groups.find((x) => x.groupId === 65536)!.moveHeld, undefined);
  // A peer's text reaches a terminal: no control characters (escapes), and a bounded length.
  for (const n of [1, 2, 3, 4]) statuses.set(n, { nodeId: n, epoch: map.epoch, uptimeMs: 1, groups: [group(n, { moveHeld: `\u001b[2Jwiped\n\u202eesrever\u2028${'😀'.repeat(5000)}` })] });
  const shown = mergeClusterStatus('x', map, statuses).groups.find((x) => x.groupId === 65536)!.moveHeld!;
  assert.doesNotMatch(shown, /[\u0000-\u001f\u202e\u2028]/);
  assert.ok(shown.startsWith(' [2Jwiped  esrever ') && [...shown].length <= 500, shown.slice(0, 40));
  assert.ok(shown.endsWith('😀…'), 'cut between characters, not inside one');
  // A PG moving onto nodes that do not run it yet is led from outside the map's replicas: its
  // configuration and held move come from that leader.
  const outside = others[0];
  for (const n of [1, 2, 3, 4]) {
    const role = n === outside ? 'leader' : 'follower';
    statuses.set(n, { nodeId: n, epoch: map.epoch, uptimeMs: 1, groups: replicas.includes(n) && n !== replicas[1] ? [] : [group(n, { role, leader: outside, moveHeld: n === outside ? why : undefined })] });
  }
  const led = mergeClusterStatus('x', map, statuses).groups.find((x) => x.groupId === 65536)!;
  assert.equal(led.moveHeld, why);
  assert.deepEqual(led.configuration?.voters, old);
  assert.equal(led.leader, outside, 'its leader is named');
  assert.equal(led.health, 'lagging', 'served, not yet on its map replicas');
  assert.match(led.reason ?? '', new RegExp(`led by node ${outside}, outside its map replicas`));
  // Once the configuration is the map's, nothing is shown.
  for (const n of [1, 2, 3, 4]) statuses.set(n, { nodeId: n, epoch: map.epoch, uptimeMs: 1, groups: [group(n, { voters: [...replicas] })] });
  assert.equal(mergeClusterStatus('x', map, statuses).groups.find((x) => x.groupId === 65536)!.configuration, undefined);
});
