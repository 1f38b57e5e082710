/**
 * The PG mover retires a replica the map no longer wants once a leader says a configuration
 * without it is committed. A replica cut off before its removal reached it still lists itself
 * in its own latest configuration: it is retired on the leader's word (else it would run, and
 * campaign, for good). One whose own log holds its removal and then a configuration that adds
 * it back is not retired: the leader took it back while this node's map was behind, and it may
 * have acknowledged entries as that member.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PgMover, targetOf } from '../../src/cluster/pg-mover.js';
import { pgGroupId, type ClusterMap } from '../../src/cluster/map.js';
import { EntryType, MemoryStorage, RaftNode, SeededRng, defaultConfig, encodeConfChange, type ConfChange, type Entry } from '../../src/raft/index.js';
import { zonedMap } from '../helpers/map.js';
import { moverDeps } from '../helpers/pg-mover.js';
import { tempDir } from '../helpers/tools.js';
import type { TestContext } from 'node:test';

const conf = (voters: number[]) => ({ voters, votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false });

/** A PG of the map, the node it moved away from (`self`) and its voters before the move. */
function movedPg(map: ClusterMap): { g: number; self: number; target: number[]; before: number[] } {
  const g = pgGroupId(map.pools[0].id, 3);
  const target = targetOf(map, g)!;
  const self = map.nodes.map((n) => n.id).find((n) => !target.includes(n))!;
  return { g, self, target, before: [self, target[0], target[1]].sort((a, b) => a - b) };
}

/** Which groups node `self`'s mover retires, its replica of `g` running on `raft`, its leader saying `target` is committed. */
async function retiredBy(t: TestContext, map: ClusterMap, self: number, g: number, target: number[], raft: RaftNode): Promise<number[]> {
  const removed: number[] = [];
  const groups = new Map<number, unknown>([[g, { id: g, raft, isLeader: false }]]);
  const leader = target[0];
  const mover = new PgMover(
    moverDeps({
      nodeId: self,
      dataDir: tempDir(t),
      map: () => map,
      host: {
        groups,
        removeGroup: async (id: number) => {
          removed.push(id);
          groups.delete(id);
        },
      } as never,
      request: async (peer: number) => ({ nodeId: peer, term: 9, isLeader: peer === leader, latest: conf([...target]), committed: conf([...target]) }),
    }),
  );
  const round = (mover as unknown as { retireRemoved(m: ClusterMap): Promise<void> }).retireRemoved.bind(mover);
  // The leaders are asked at most once a second per group, in the background.
  for (let i = 0; i < 30 && removed.length === 0; i++) {
    await round(map);
    await new Promise((r) => setTimeout(r, 100));
  }
  return removed;
}

test("a replica cut off before its removal reached it is retired on its leader's word", async (t) => {
  const map = zonedMap(5, 32);
  const { g, self, target, before } = movedPg(map);
  // Its own log: the configuration before the move, which lists it.
  const raft = new RaftNode(defaultConfig(self, new SeededRng(1)), new MemoryStorage(before));
  assert.deepEqual(await retiredBy(t, map, self, g, target, raft), [g]);
});

test('a replica whose own log has it removed and then added back is not retired', async (t) => {
  const map = zonedMap(5, 32);
  const { g, self, target, before } = movedPg(map);
  const storage = new MemoryStorage(before);
  const cc = (c: ConfChange, index: number): Entry => ({ index, term: 1, type: EntryType.ConfChange, data: encodeConfChange(c) });
  const first = storage.lastIndex() + 1;
  // Each change is joint, left by an empty one: removed, then a learner again.
  const changes: ConfChange[] = [{ changes: [{ type: 'removeNode', nodeId: self }] }, { changes: [] }, { changes: [{ type: 'addLearner', nodeId: self }] }, { changes: [] }];
  storage.append(changes.map((c, i) => cc(c, first + i)));
  const raft = new RaftNode(defaultConfig(self, new SeededRng(1)), storage);
  assert.equal(raft.memberAgainAfterRemoval(self), true);
  assert.deepEqual(await retiredBy(t, map, self, g, target, raft), []);
});
