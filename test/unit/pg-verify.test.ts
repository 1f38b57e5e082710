/**
 * The verdict on a PG's replica digests (src/cluster/pg-verify.ts): replicas are compared only
 * when each read one settled state (the same applied index at its start and end), so writes
 * under way never look like a mismatch; a real mismatch names the odd nodes out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { judgeReplicas, repairSources, type PgVerdict, type ReplicaDigest } from '../../src/cluster/pg-verify.js';

const at = (nodeId: number, appliedIndex: number, digest: string, appliedIndexAfter = appliedIndex): ReplicaDigest => ({ nodeId, appliedIndex, appliedIndexAfter, digest });

test('same index, same digest: consistent; a single replica is consistent with itself', () => {
  assert.deepEqual(judgeReplicas([at(1, 9, 'a'), at(2, 9, 'a'), at(3, 9, 'a')]), { result: 'consistent', appliedIndex: 9 });
  assert.deepEqual(judgeReplicas([at(4, 3, 'z')]), { result: 'consistent', appliedIndex: 3 });
  // An answer from a node of an older version (no index after the read) is taken as settled.
  assert.deepEqual(judgeReplicas([{ nodeId: 1, appliedIndex: 5, digest: 'a' }, at(2, 5, 'a')]), { result: 'consistent', appliedIndex: 5 });
});

test('a mismatch lists the holders of each digest, the largest group first', () => {
  assert.deepEqual(judgeReplicas([at(3, 9, 'b'), at(1, 9, 'a'), at(2, 9, 'a')]), {
    result: 'mismatch',
    appliedIndex: 9,
    groups: [
      { digest: 'a', nodeIds: [1, 2] },
      { digest: 'b', nodeIds: [3] },
    ],
  });
  const three = judgeReplicas([at(2, 9, 'b'), at(1, 9, 'a'), at(3, 9, 'c')]);
  assert.equal(three.result, 'mismatch');
  assert.deepEqual(three.result === 'mismatch' && three.groups.map((g) => g.nodeIds), [[1], [2], [3]]);
  // Found among the replicas that answered even when another did not.
  const partial = judgeReplicas([at(1, 9, 'a'), at(2, 9, 'b'), { nodeId: 3, error: 'ECONNREFUSED' }]);
  assert.equal(partial.result, 'mismatch');
});

test('different or moving indexes are busy, never a mismatch; errors leave the PG incomplete', () => {
  assert.deepEqual(judgeReplicas([at(1, 9, 'a'), at(2, 8, 'b')]), { result: 'busy', appliedIndexes: { 1: 9, 2: 8 } });
  assert.deepEqual(judgeReplicas([at(1, 9, 'a', 10), at(2, 9, 'b', 9)]), { result: 'busy', appliedIndexes: { 1: 10, 2: 9 } });
  assert.deepEqual(judgeReplicas([at(1, 9, 'a'), { nodeId: 2, error: 'timed out' }]), { result: 'incomplete', errors: { 2: 'timed out' } });
  fc.assert(
    fc.property(fc.array(fc.record({ index: fc.nat(3), moved: fc.boolean(), digest: fc.constantFrom('a', 'b') }), { minLength: 2, maxLength: 5 }), (rs) => {
      const answers = rs.map((r, i) => at(i + 1, r.index, r.digest, r.moved ? r.index + 1 : r.index));
      const v = judgeReplicas(answers);
      const settledSame = rs.every((r) => !r.moved && r.index === rs[0].index);
      if (!settledSame) assert.equal(v.result, 'busy');
      else assert.equal(v.result, rs.every((r) => r.digest === rs[0].digest) ? 'consistent' : 'mismatch');
    }),
  );
});

test('a replica restoring a snapshot makes the PG restoring, asked again like a busy one, never a mismatch; a mismatch among the others still shows', () => {
  const restoring = (nodeId: number): ReplicaDigest => ({ nodeId, restoring: true });
  assert.deepEqual(judgeReplicas([at(1, 9, 'a'), restoring(3), at(2, 9, 'a')]), { result: 'restoring', nodeIds: [3] });
  assert.deepEqual(judgeReplicas([restoring(2), at(1, 9, 'a')]), { result: 'restoring', nodeIds: [2] });
  assert.deepEqual(judgeReplicas([restoring(3), restoring(1)]), { result: 'restoring', nodeIds: [1, 3] });
  // Beside writes under way: the restore will move its index anyway.
  assert.deepEqual(judgeReplicas([at(1, 9, 'a'), at(2, 8, 'b'), restoring(3)]), { result: 'restoring', nodeIds: [3] });
  // Two settled replicas at one index that disagree do so whatever the third does.
  assert.equal(judgeReplicas([at(1, 9, 'a'), at(2, 9, 'b'), restoring(3)]).result, 'mismatch');
  // A replica that gave no answer leaves the PG incomplete (not asked again).
  assert.deepEqual(judgeReplicas([at(1, 9, 'a'), restoring(2), { nodeId: 3, error: 'down' }]), { result: 'incomplete', errors: { 3: 'down' } });
  assert.deepEqual(repairSources({ result: 'restoring', nodeIds: [3] }, [1, 2, 3], 2), { ok: true });
});

test('a repair rebuilds only an odd replica, and only from the majority\'s copy', () => {
  const oddThree = judgeReplicas([at(1, 9, 'aa'), at(2, 9, 'aa'), at(3, 9, 'bb')]);
  assert.deepEqual(repairSources(oddThree, [1, 2, 3], 3), { ok: true, sources: [1, 2] });
  const majorityNode = repairSources(oddThree, [1, 2, 3], 1);
  assert.equal(majorityNode.ok, false);
  assert.match(!majorityNode.ok ? majorityNode.reason : '', /node 1 holds the copy a majority holds \(nodes 1,2\); the odd one out is node 3/);
  // Three copies of five, two odd ones: each odd one may be rebuilt from the three.
  const five = judgeReplicas([at(1, 4, 'a'), at(2, 4, 'b'), at(3, 4, 'a'), at(4, 4, 'c'), at(5, 4, 'a')]);
  assert.deepEqual(repairSources(five, [1, 2, 3, 4, 5], 4), { ok: true, sources: [1, 3, 5] });
  // No majority (two against two, or three different copies): the operator's call.
  const split = judgeReplicas([at(1, 4, 'a'), at(2, 4, 'b'), at(3, 4, 'a'), at(4, 4, 'b')]);
  const none = repairSources(split, [1, 2, 3, 4], 2);
  assert.equal(none.ok, false);
  assert.match(!none.ok ? none.reason : '', /no copy of the PG is held by a majority/);
  // Nothing tells the copies apart otherwise: any leader will do.
  for (const v of [{ result: 'consistent', appliedIndex: 3 }, { result: 'busy', appliedIndexes: { 1: 3, 2: 4 } }, { result: 'incomplete', errors: { 2: 'down' } }] as PgVerdict[]) {
    assert.deepEqual(repairSources(v, [1, 2, 3], 2), { ok: true });
  }
});

test('pool verify prints one row per PG and exits 1 on any mismatch, else 3 when a PG was not compared', async () => {
  const { renderVerify, verifyExitCode } = await import('../../src/cli/commands/pool.js');
  const base = { pool: 'p', replicas: [1, 2, 3] };
  const ok = { ...base, pgIndex: 0, groupId: 10, result: 'consistent' as const, appliedIndex: 7 };
  const busy = { ...base, pgIndex: 1, groupId: 11, result: 'busy' as const, appliedIndexes: { 1: 5, 2: 6 } };
  const bad = { ...base, pgIndex: 2, groupId: 12, result: 'mismatch' as const, appliedIndex: 9, groups: [{ digest: 'aaaaaaaaaaaaaaaa', nodeIds: [1, 2] }, { digest: 'bbbbbbbbbbbbbbbb', nodeIds: [3] }] };
  assert.equal(verifyExitCode([ok]), 0);
  assert.equal(verifyExitCode([ok, busy]), 3);
  assert.equal(verifyExitCode([busy, bad, ok]), 1);
  const text = renderVerify([ok, busy, bad]);
  assert.match(text, /p\s+0\s+10\s+1,2,3\s+7\s+consistent/);
  assert.match(text, /p\s+1\s+11\s+1,2,3\s+-\s+not compared: writes under way \(applied 1:5 2:6\)/);
  assert.match(text, /p\s+2\s+12\s+1,2,3\s+9\s+MISMATCH: nodes 1,2 hold aaaaaaaaaaaa; node 3 holds bbbbbbbbbbbb/);
  assert.match(text, /3 PGs: 1 consistent, 1 mismatched, 1 not compared/);
  const restoring = { ...base, pgIndex: 3, groupId: 13, result: 'restoring' as const, nodeIds: [2] };
  assert.equal(verifyExitCode([ok, restoring]), 3);
  const withRestoring = renderVerify([ok, restoring]);
  assert.match(withRestoring, /p\s+3\s+13\s+1,2,3\s+-\s+not compared: node 2 restoring a snapshot/);
  assert.match(withRestoring, /2 PGs: 1 consistent, 0 mismatched, 1 not compared/);
  const { renderRepairs } = await import('../../src/cli/commands/pool.js');
  const repairs = renderRepairs(
    [{ pool: 'p', pgIndex: 2, groupId: 12, nodeId: 3, leader: 1, verdictBefore: 'mismatch', appliedIndex: 9, elapsedMs: 1234 }],
    [{ pool: 'p', pgIndex: 4, reason: 'no copy of the PG is held by a majority of its replicas' }],
  );
  assert.equal(repairs, "rebuilt node 3's replica of PG p/2 (group 12) from node 1: applied index 9, 1.2 s\nnot repaired: PG p/4: no copy of the PG is held by a majority of its replicas");
});
