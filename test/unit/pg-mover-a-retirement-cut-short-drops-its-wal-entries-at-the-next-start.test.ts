/**
 * retire() drops a PG replica's tombstone first, then its directory, then its WAL entries; a
 * crash in between leaves entries of a group that never runs again (so never checkpoints):
 * they pin every WAL segment from theirs on, and a rejoin would find them past its empty
 * store. The next start drops them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgMover, retiredFileName } from '../../src/cluster/pg-mover.js';
import { pgGroupId } from '../../src/cluster/map.js';
import { zonedMap } from '../helpers/map.js';
import { moverDeps } from '../helpers/pg-mover.js';

test('a retirement cut short after its tombstone has its WAL entries dropped at the next start (they pinned the WAL for good)', async () => {
  const map = zonedMap(5, 32);
  const dataDir = await mkdtemp(join(tmpdir(), 'raftblock-mover-'));
  const g = pgGroupId(map.pools[0].id, 3);
  await writeFile(join(dataDir, retiredFileName), JSON.stringify([g]));
  const truncated: [number, number][] = [];
  const mover = new PgMover(
    moverDeps({
      nodeId: 1,
      dataDir,
      wal: {
        groupIds: () => [g],
        firstIndex: () => 5001,
        lastIndex: () => 5010,
        truncateSuffix: async (group: number, from: number) => void truncated.push([group, from]),
      } as never,
      map: () => map,
    }),
  );
  await mover.load();
  assert.deepEqual(truncated, [[g, 5001]]);
});
