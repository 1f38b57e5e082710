/**
 * A replica whose snapshot restore a crash cut short — its data files wiped (and maybe partly
 * refilled from an image) while its checkpoint still names the applied index from before — is not
 * resumed from that index: replaying the log from there would not bring back what the wipe
 * removed. The node comes back with the PG held, rebuilds it from its leader's snapshot, and
 * ends with the same bytes as the other replicas, serving as a follower again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { metric } from '../helpers/hand-peer.js';
import { TestCluster, sleep, waitFor } from '../helpers/cluster.js';
import { requirePythonNbd, systemPython } from './io.js';
import { restoreMarkerFile } from '../../src/store/pg-store.js';
import { readCheckpoint } from '../../src/store/checkpoint-file.js';


test('a replica whose snapshot restore a crash cut short is rebuilt from its leader, not resumed', { timeout: 120_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 2, volumes: [{ name: 'vol0', sizeBytes: 16 * 1024 * 1024, extentBytes: 1024 * 1024 }] });
  const write = (via: number, seed: number, blocks: number): void => {
    const r = spawnSync(
      systemPython,
      ['-c', ['import nbd', 'h = nbd.NBD()', `h.connect_uri(${JSON.stringify(cluster.nbdUri(via))})`, `for i in range(${blocks}):`, `    h.pwrite(bytes([(i + ${seed}) % 251 + 1]) * 4096, (i * 7919 % 4096) * 4096)`, 'h.shutdown()'].join('\n')],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 0, `client: ${r.stderr}`);
  };
  write(1, 0, 300);
  const victim = cluster.node(3);
  const pgsDir = join(victim.dir, 'data', 'pgs');
  const pgDirs = (): string[] => readdirSync(pgsDir).filter((n) => n !== '0').map((n) => join(pgsDir, n));
  const durable = (dir: string): Promise<number> => readCheckpoint(dir).then((c) => c.appliedIndex, () => 0);
  // Checkpointed (the checkpoint past the writes), so a resume would replay only what follows.
  await waitFor("node 3's PG stores checkpointed", 30_000, async () => {
    if (pgDirs().length !== 2) return undefined;
    const indexes = await Promise.all(pgDirs().map(durable));
    return indexes.every((i) => i > 100) ? true : undefined;
  });
  await sleep(200);
  await victim.kill9();

  // What a crash right after PgStore.beginRestore leaves: the mark, and no data files.
  for (const dir of pgDirs()) {
    for (const name of readdirSync(dir)) if (/^vol-\d+\.dat$/.test(name)) rmSync(join(dir, name));
    writeFileSync(join(dir, restoreMarkerFile), 'a snapshot restore is under way\n');
  }

  await victim.start();
  await waitFor('both cut-short replicas rebuilt', 60_000, async () => ((await metric(victim.addrs.http, 'raftblock_raft_replicas_repaired_total')) >= 2 ? true : undefined));
  assert.match(readFileSync(victim.logPath, 'utf8'), /snapshot restore was cut short by a crash/);
  for (const dir of pgDirs()) assert.equal(readdirSync(dir).includes(restoreMarkerFile), false, `${dir}: the mark is cleared once rebuilt`);

  // It replicates again: a few more writes (of 20 of the 300 blocks: a replica that had lost
  // the others would still differ), then every replica holds the same bytes.
  write(3, 17, 20);
  assert.equal(await cluster.waitReplicasIdentical(30_000), 2, victim.logTail(15));
});
