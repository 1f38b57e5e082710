/**
 * Jepsen-style: concurrent clients, each on its own NBD connection (python3-libnbd) through a
 * different node's gateway, write unique tags to a few blocks spread over several PGs and read
 * them back, while a nemesis kills -9 and restarts nodes and partitions the network (every node
 * in its own namespace). Afterwards every client reads every block once more. The whole
 * history must pass `raftblock check-history --model block`.
 */
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { TestCluster, sleep } from '../helpers/cluster.js';
import { requireNetns } from '../helpers/netns.js';
import { tempDir } from '../helpers/tools.js';
import { pgOfExtent } from '../../src/cluster/map.js';
import { checkBlockHistory, finalReadsAsHistory, requirePythonNbd, startJepsenClient } from './io.js';

const MiB = 1024 * 1024;
const extentBytes = MiB;
const blocksPerExtent = extentBytes / 4096;
const pgCount = 8;
const clientSeconds = 30;

interface HistoryEvent {
  process: number;
  type: string;
  f: string;
  block: number;
  value?: string | null;
  time: number;
}

/**
 * For a failed check: every final read, and every event (of any block) of the writes whose
 * tags the final reads returned, so the failure says which block a tag was written to, when,
 * and whether it was acknowledged (the checker's report shows only the failing block).
 */
function finalReadEvidence(lines: string[]): string {
  const events = lines.map((l) => JSON.parse(l) as HistoryEvent);
  const finals = events.filter((e) => e.process >= 1100 && e.f === 'read');
  const tags = new Set(finals.map((e) => e.value).filter((v): v is string => typeof v === 'string'));
  const out = ['final reads, and the writes of the tags they returned (invocation, then completion):', ...finals.map((e) => JSON.stringify(e))];
  events.forEach((e, i) => {
    if (e.f !== 'write' || e.type !== 'invoke' || typeof e.value !== 'string' || !tags.has(e.value)) return;
    // A process has one operation in flight: its next event completes this write (if any).
    const done = events.slice(i + 1).find((x) => x.process === e.process);
    out.push(JSON.stringify(e), done ? JSON.stringify(done) : '(never completed)');
  });
  return out.join('\n');
}

test('a block history recorded under kill -9 and partitions is linearizable', { timeout: 300_000 }, async (t) => {
  if (!requireNetns(t)) return;
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, netns: true, pgCount, volumes: [{ name: 'vol0', sizeBytes: 64 * MiB, extentBytes }] });
  const volume = (await cluster.volumes()).volumes[0];
  // Six blocks in six extents on at least three distinct PGs.
  const blocks: number[] = [];
  const pgs = new Set<number>();
  for (let e = 0; blocks.length < 6; e++) {
    const pg = pgOfExtent(volume.id, e, pgCount);
    if (pgs.size < 3 && pgs.has(pg)) continue;
    pgs.add(pg);
    blocks.push(e * blocksPerExtent);
  }
  assert.ok(pgs.size >= 3);

  // Four clients: two through node 1, one each through nodes 2 and 3.
  const vias = [1, 1, 2, 3];
  const clients = vias.map((via, i) =>
    startJepsenClient(cluster, via, { process: i + 1, blocks, durationS: clientSeconds, timeoutS: 3, seed: 100 + i }),
  );
  t.after(() => clients.forEach((c) => c.proc.kill('SIGKILL')));

  // The nemesis: one fault at a time, each healed before the next.
  const faults: string[] = [];
  const started = Date.now();
  const at = async (s: number): Promise<void> => sleep(Math.max(0, started + s * 1000 - Date.now()));
  await at(3);
  faults.push('kill -9 node 2');
  await cluster.node(2).kill9();
  await at(7);
  await cluster.node(2).start();
  await at(10);
  const s = await cluster.clusterStatus(1);
  const busiest = [1, 2, 3].sort((a, b) => s.groups.filter((g) => g.leader === b).length - s.groups.filter((g) => g.leader === a).length)[0];
  faults.push(`isolate node ${busiest}`);
  cluster.net!.isolate(busiest);
  await at(15);
  cluster.net!.heal();
  await at(18);
  faults.push('partition [1] | [2, 3]');
  cluster.net!.partition([[1], [2, 3]]);
  await at(22);
  cluster.net!.heal();
  await at(24);
  faults.push('kill -9 node 3');
  await cluster.node(3).kill9();
  await at(27);
  await cluster.node(3).start();

  const histories = await Promise.all(clients.map((c) => c.done));
  // Quiet cluster, then every client reads every block once more.
  await cluster.waitLeaders(60_000);
  let finals = '';
  for (const n of cluster.nodes) finals += await finalReadsAsHistory(cluster, n.id, 10 + n.id, blocks);
  const all = histories.join('') + finals;
  const lines = all.split('\n').filter((l) => l !== '');
  const okWrites = lines.filter((l) => l.includes('"type": "ok"') && l.includes('"f": "write"')).length;
  const okReads = lines.filter((l) => l.includes('"type": "ok"') && l.includes('"f": "read"')).length;
  assert.ok(okWrites >= 20 && okReads >= 20, `too little got through: ${okWrites} writes, ${okReads} reads acknowledged`);

  const history = lines.join('\n') + '\n';
  const check = checkBlockHistory(tempDir(t), history);
  if (check.status !== 0 && process.env.RAFTBLOCK_KEEP_TEST_DATA === '1') writeFileSync(join(cluster.dir, 'history.jsonl'), history);
  if (check.status !== 0) assert.fail(`check-history: ${check.stdout}\n${check.stderr}\nfaults: ${faults.join(', ')}\n${finalReadEvidence(lines)}`);
  assert.match(check.stdout, /^linearizable/);
  t.diagnostic(`${lines.length} events (${okWrites} writes, ${okReads} reads acknowledged) over ${pgs.size} PGs; faults: ${faults.join(', ')}`);
});
