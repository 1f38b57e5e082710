/**
 * `raftblock pool repair` stops a replica once its PG's leader has agreed (rebuildCheck), then
 * holds it until it is rebuilt. A new leader knows nothing of its predecessor's agreement and
 * counts a replica that answered it as active. The replica checked the agreement's term only
 * before it stopped, and its group went on answering while its Readies drained: one that
 * learned of the new term then answered the new leader and stopped anyway, and the new leader
 * could agree to rebuild a second replica on that count (only a two-round wait stood in the
 * way).
 *
 * Now the term is judged once the group has stopped: a group that saw a newer term resumes as
 * it was (its store never marked for rebuild, its log intact) and the call fails UNAVAILABLE,
 * so the node asks the new leader. One that did not is marked and resumed held, as before.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PgMover, targetOf } from '../../src/cluster/pg-mover.js';
import { pgGroupId } from '../../src/cluster/map.js';
import { bootstrapMembership, saveMembership } from '../../src/cluster/pg-membership.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { MemoryStorage, RaftNode, SeededRng, defaultConfig } from '../../src/raft/index.js';
import { PgStore, ScratchPool, restoreMarkerFile } from '../../src/store/pg-store.js';
import { zonedMap } from '../helpers/map.js';
import { moverDeps } from '../helpers/pg-mover.js';
import { tempDir } from '../helpers/tools.js';

const agreedTerm = 4;

/**
 * Node `self`'s mover holding a follower replica of `g` at `agreedTerm` (a real store in its
 * real directory). Stopping the group (`removeGroup`) first steps a heartbeat of term
 * `termWhileStopping` into it, as a message handled while its Readies drain would be.
 */
async function replicaToRebuild(t: TestContext, termWhileStopping: number) {
  const map = zonedMap(3, 8);
  const g = pgGroupId(map.pools[0].id, 2);
  const [self, leader, other] = targetOf(map, g)!;
  const dataDir = tempDir(t, 'raftblock-rebuild-term-');
  const pgDir = join(dataDir, 'pgs', String(g));
  await mkdir(pgDir, { recursive: true });
  await saveMembership(pgDir, bootstrapMembership([self, leader, other]));
  const io = new FsBlockIo();
  const pool = new ScratchPool(io);
  const opened: PgStore[] = [];
  const open = async (id: number, dir: string): Promise<PgStore> => {
    const s = await PgStore.open(io, pool, dir, id);
    opened.push(s);
    return s;
  };
  t.after(async () => {
    for (const s of opened) await s.close().catch(() => undefined);
  });
  const store = await open(g, pgDir);
  const raft = new RaftNode(defaultConfig(self, new SeededRng(3)), new MemoryStorage([self, leader, other]));
  raft.step({ type: 'heartbeat', from: leader, to: self, term: agreedTerm, commit: 0, seq: 1, tick: 1 });
  assert.equal(raft.currentTerm, agreedTerm);
  const groups = new Map<number, unknown>([[g, { id: g, raft, isLeader: false }]]);
  const started: { rebuild: boolean | undefined }[] = [];
  const mover = new PgMover(
    moverDeps({
      nodeId: self,
      dataDir,
      map: () => map,
      stores: new Map([[g, store]]),
      openStore: open,
      host: {
        groups,
        removeGroup: async (id: number) => {
          raft.step({ type: 'heartbeat', from: other, to: self, term: termWhileStopping, commit: 0, seq: 1, tick: 1 });
          groups.delete(id);
          await store.close();
        },
        addGroup: async (id: number, _voters: number[], _sm: unknown, opts: { rebuild?: boolean }) => {
          started.push({ rebuild: opts.rebuild });
          groups.set(id, { id, raft, isLeader: false });
        },
      } as never,
      wal: { groupIds: () => [g], firstIndex: () => 1, lastIndex: () => 0 } as never,
    }),
  );
  return { g, pgDir, mover, started };
}

test('a replica that saw a newer term while it stopped for a rebuild resumes as it was, unmarked, and asks again', async (t) => {
  const { g, pgDir, mover, started } = await replicaToRebuild(t, agreedTerm + 1);
  await assert.rejects(
    mover.rebuildInPlace(g, 'an operator asked for it (pool repair)', agreedTerm),
    (err: Error & { code?: string }) => err.code === 'UNAVAILABLE' && /saw term 5 before it stopped, after a leader agreed at term 4/.test(err.message),
  );
  assert.equal(existsSync(join(pgDir, restoreMarkerFile)), false, 'the store was marked for a rebuild');
  assert.deepEqual(started, [{ rebuild: false }], 'the replica resumes once, not held');
});

test('a replica that saw no newer term while it stopped is marked and resumes held until rebuilt', async (t) => {
  const { g, pgDir, mover, started } = await replicaToRebuild(t, agreedTerm);
  await mover.rebuildInPlace(g, 'an operator asked for it (pool repair)', agreedTerm);
  assert.equal(existsSync(join(pgDir, restoreMarkerFile)), true, 'the store is marked for a rebuild');
  assert.deepEqual(started, [{ rebuild: true }]);
});
