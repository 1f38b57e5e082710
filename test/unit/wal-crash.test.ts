import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { setLogSink } from '../../src/common/log.js';
import { openBlockIo } from '../../src/io/select.js';
import { testBackends } from '../../src/io/testing.js';
import { Wal } from '../../src/wal/index.js';
import { walChildOptions, walChildPayload } from '../fixtures/wal-child.js';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/tools.js';

setLogSink(() => undefined);

const childPath = join(repoRoot, 'dist', 'test', 'fixtures', 'wal-child.js');
const rounds = Number(process.env.RAFTBLOCK_WAL_CRASH_ROUNDS ?? 50);
const groupCount = 3;

interface Round {
  lines: string[];
  exit: Promise<void>;
  child: ChildProcess;
}

function startChild(dir: string, backend: string): Promise<Round> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [childPath, dir, backend, String(groupCount)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let partial = '';
    let stderr = '';
    const exit = new Promise<void>((res) => child.on('exit', () => res()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      const text = partial + d.toString();
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) {
        if (p.startsWith('ready')) resolve({ lines, exit, child });
        else lines.push(p);
      }
    });
    child.on('exit', (code, signal) => reject(new Error(`child exited before ready: ${code ?? signal} ${stderr}`)));
  });
}

// One log, both backends: the child alternates between io_uring and fs from round to round, and
// the parent recovers with the other one, so each reads what the other wrote.
const backends = testBackends()
  .filter((b) => !b.skip)
  .map((b) => b.name);

test(`every entry reported durable survives kill -9 at random moments (${rounds} rounds, ${backends.join(' and ')})`, { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const ios = await Promise.all(backends.map((b) => openBlockIo({ probeDir: dir, backend: b })));
  t.after(() => Promise.all(ios.map((io) => io.close())));
  let live: ChildProcess | undefined;
  t.after(() => live?.kill('SIGKILL'));
  /** Latest acknowledged generation of (group, index). */
  const acked = new Map<string, number>();
  const maxAcked = new Map<number, number>();
  let total = 0;
  for (let round = 1; round <= rounds; round++) {
    const r = await startChild(dir, backends[round % backends.length]);
    live = r.child;
    await new Promise((res) => setTimeout(res, 10 + Math.random() * 120));
    r.child.kill('SIGKILL');
    await r.exit;
    live = undefined;
    for (const line of r.lines) {
      const [tag, g, idx, gen] = line.split(' ');
      assert.equal(tag, 'D', `unexpected child output: ${line}`);
      acked.set(`${g}/${idx}`, Number(gen));
      maxAcked.set(Number(g), Math.max(maxAcked.get(Number(g)) ?? 0, Number(idx)));
      total++;
    }
    const wal = await Wal.open({ dir, io: ios[(round + 1) % ios.length], ...walChildOptions });
    try {
      assert.equal(wal.recovery.corruption, null, `round ${round}: a kill is never corruption`);
      for (const [g, max] of maxAcked) {
        assert.ok(wal.lastIndex(g) >= max, `round ${round}: group ${g} ends at ${wal.lastIndex(g)}, ${max} was acknowledged`);
        const lo = wal.firstIndex(g);
        const es = await wal.entries(g, lo, max + 1);
        for (const e of es) {
          const gen = acked.get(`${g}/${e.index}`);
          if (gen === undefined) continue; // written by a round whose report was lost with the kill
          assert.ok(Buffer.from(e.data).equals(walChildPayload(g, e.index, gen)), `round ${round}: group ${g} entry ${e.index} intact`);
        }
      }
    } finally {
      await wal.close();
    }
  }
  t.diagnostic(`${rounds} kills, ${total} durable reports checked, final last indexes ${[...maxAcked.values()].join(',')}`);
  assert.ok(total > rounds, 'the child made progress');
});
