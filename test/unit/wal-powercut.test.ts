import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setLogSink } from '../../src/common/log.js';
import { PowerCutIo, seededRandom } from '../../src/io/powercut.js';
import { testBackends } from '../../src/io/testing.js';
import { Wal } from '../../src/wal/index.js';
import type { WalEntry } from '../../src/wal/types.js';
import { tempDir } from '../helpers/tools.js';

setLogSink(() => undefined);

const groups = [1, 2, 3];
const rounds = 25;

/** Payload of entry (group, index) written in round `round`: the round is in its first bytes. */
function payload(group: number, index: number, round: number): Buffer {
  const len = 200 + ((group * 131 + index * 17) % 3000);
  const b = Buffer.alloc(len);
  b.writeUInt32LE(round, 0);
  for (let i = 4; i < len; i++) b[i] = (group * 7 + index * 13 + round * 29 + i) & 0xff;
  return b;
}

for (const backend of testBackends()) {
  test(`${backend.name}: after power cuts, recovery yields a prefix holding every acknowledged record`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const inner = backend.make();
    t.after(() => inner.close());
    const seed = Number(process.env.RAFTBLOCK_TEST_SEED ?? Date.now() % 1_000_000);
    const rnd = seededRandom(seed);
    const acked = new Map<number, number>(groups.map((g) => [g, 0]));
    /** (group, index) → round of the write that was acknowledged last. */
    const ackedRound = new Map<string, number>();
    const ackedTerm = new Map<number, number>(groups.map((g) => [g, 0]));
    let cuts = 0;
    let torn = 0;
    let recycled = 0;
    for (let round = 1; round <= rounds; round++) {
      const io = new PowerCutIo(inner, rnd);
      const wal = await Wal.open({ dir, io, segmentBytes: 128 * 1024, maxBatchBytes: 16 * 1024, maxBatchesInFlight: 1 + (round % 3), cacheBytes: 64 * 1024 });
      const where = `seed ${seed} round ${round} (recovery ${JSON.stringify(wal.recovery)})`;
      assert.equal(wal.recovery.corruption, null, `${where}: no corruption after a power cut`);
      for (const g of groups) {
        const last = wal.lastIndex(g);
        assert.ok(last >= acked.get(g)!, `${where}: group ${g} lost acknowledged entries (${last} < ${acked.get(g)})`);
        assert.ok(wal.hardState(g).term >= ackedTerm.get(g)!, `${where}: group ${g} lost its hard state`);
        const lo = Math.max(wal.firstIndex(g), 1);
        const es = await wal.entries(g, lo, last + 1);
        for (const e of es) {
          const data = Buffer.from(e.data);
          const r = data.readUInt32LE(0);
          assert.ok(data.equals(payload(g, e.index, r)), `${where}: group ${g} entry ${e.index} intact`);
          const want = ackedRound.get(`${g}/${e.index}`);
          if (want !== undefined && e.index <= acked.get(g)!) assert.equal(r, want, `${where}: group ${g} entry ${e.index} is the acknowledged one`);
        }
        // Unacknowledged survivors become the new truth for their indexes.
        acked.set(g, last);
        for (const e of es) ackedRound.set(`${g}/${e.index}`, Buffer.from(e.data).readUInt32LE(0));
      }

      // Write concurrently until the power goes.
      let stop = false;
      const writers = groups.map(async (g) => {
        let term = wal.hardState(g).term;
        while (!stop) {
          const n = 1 + Math.floor(rnd() * 4);
          const first = wal.lastIndex(g) + 1;
          const entries: WalEntry[] = [];
          for (let i = 0; i < n; i++) entries.push({ index: first + i, term: 1, type: 0, data: payload(g, first + i, round) });
          const ps = [wal.append(g, entries)];
          if (rnd() < 0.2) ps.push(wal.saveHardState(g, { term: ++term, vote: g, commit: 0 }));
          // Frequent checkpoints: segments recycle within a round, so cuts hit recycling too.
          if (first > 12 && (first % 6 < n || rnd() < 0.1)) ps.push(wal.checkpoint(g, first - 6));
          try {
            await Promise.all(ps);
          } catch {
            return;
          }
          if (stop) return; // durable, but the power may already be off: only count what came before
          acked.set(g, first + n - 1);
          for (const e of entries) ackedRound.set(`${g}/${e.index}`, round);
          ackedTerm.set(g, term);
        }
      });
      await new Promise((r) => setTimeout(r, 10 + rnd() * 50));
      stop = true;
      recycled += wal.stats.segmentsRecycled;
      const r = await io.powerCut();
      cuts++;
      torn += r.tornWrites;
      await Promise.race([Promise.all(writers), new Promise((res) => setTimeout(res, 200))]);
    }
    assert.equal(cuts, rounds);
    t.diagnostic(`seed ${seed}: ${rounds} power cuts, ${torn} torn writes, ${recycled} segments recycled, final lengths ${[...acked.values()].join(',')}`);
    assert.ok([...acked.values()].every((n) => n > 20), 'every group made progress');
    assert.ok(recycled > 0, 'power cuts also hit logs whose segments were recycled');
  });
}
