/**
 * `npm run bench -- hot-path [--writes N] [--repeat N]`: two pieces of per-write CPU that have
 * their own data structures, each against what it replaced, in the same run:
 *
 * - The dedupe window (store/recent-requests.ts: is the request's key there, then remember
 *   it, the oldest leaving a full window), its key set as it is (common/key-set.ts, a flat
 *   Float64Array) against JavaScript's own Set in the same pattern. Two layouts: one PG's
 *   window written over and over (it stays in the CPU caches), and 64 PGs' full windows
 *   written at random (as on a node holding many PGs: each lookup goes to memory).
 * - A latency histogram's observation (metrics/flat-histogram.ts) against prom-client's
 *   Histogram, through a label child resolved once, as the NBD server, the gateway and the
 *   Raft host observe several per write.
 *
 * Prints ns per operation, the median of `--repeat` rounds, and the ratios.
 */
import { Histogram } from 'prom-client';
import { KeySet } from '../src/common/key-set.js';
import { FlatHistogram } from '../src/metrics/flat-histogram.js';
import { dedupeWindowRequests } from '../src/store/pg-store.js';

const latencyBuckets = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5];

/** ns per observation of latencies spread over the buckets, the median of `repeat` rounds. */
function measureObserve(observe: (v: number) => void, writes: number, repeat: number): number {
  const rounds: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < writes; i++) observe(0.0003 * ((i & 15) + 1));
    rounds.push(Number(process.hrtime.bigint() - t0) / writes);
  }
  rounds.sort((a, b) => a - b);
  return rounds[Math.floor(rounds.length / 2)];
}

interface KeySetLike {
  has(key: number): boolean;
  add(key: number): unknown;
  delete(key: number): boolean;
}

/** ns per write over `writes` writes spread at random over `pgs` full windows. */
function measure(make: () => KeySetLike, pgs: number, writes: number, repeat: number): number {
  const cap = dedupeWindowRequests;
  const sets: KeySetLike[] = [];
  const rings: Float64Array[] = [];
  const heads = new Int32Array(pgs);
  const seqs = new Float64Array(pgs);
  for (let p = 0; p < pgs; p++) {
    const s = make();
    const ring = new Float64Array(cap);
    for (let i = 0; i < cap; i++) {
      ring[i] = (p + 1) * 2 ** 32 + i;
      s.add(ring[i]);
    }
    sets.push(s);
    rings.push(ring);
    seqs[p] = cap;
  }
  let x = 12345;
  const rounds: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < writes; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const p = x % pgs;
      const s = sets[p];
      const key = (p + 1) * 2 ** 32 + seqs[p]++;
      // PgStore.apply: asked once, then remembered (RecentRequests.remember asks again).
      if (s.has(key) || s.has(key)) continue;
      s.delete(rings[p][heads[p]]);
      rings[p][heads[p]] = key;
      heads[p] = (heads[p] + 1) % cap;
      s.add(key);
    }
    rounds.push(Number(process.hrtime.bigint() - t0) / writes);
  }
  rounds.sort((a, b) => a - b);
  return rounds[Math.floor(rounds.length / 2)];
}

function option(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 1) {
    process.stderr.write(`${name} must be a positive integer\n`);
    process.exit(2);
  }
  return v;
}

export async function run(argv: string[]): Promise<void> {
  const writes = option(argv, '--writes', 2_000_000);
  const repeat = option(argv, '--repeat', 5);
  const rows: string[] = ['| layout | KeySet ns/write | Set ns/write | Set ÷ KeySet |', '|---|---:|---:|---:|'];
  for (const pgs of [1, 64]) {
    const flat = measure(() => new KeySet(dedupeWindowRequests), pgs, writes, repeat);
    const builtin = measure(() => new Set<number>(), pgs, writes, repeat);
    rows.push(`| ${pgs === 1 ? '1 PG (cached)' : `${pgs} PGs at random`} | ${flat.toFixed(0)} | ${builtin.toFixed(0)} | ${(builtin / flat).toFixed(2)}× |`);
  }
  process.stdout.write(`dedupe window, ${dedupeWindowRequests} keys per PG, ${writes} writes per round, median of ${repeat} rounds\n${rows.join('\n')}\n\n`);

  const ours = new FlatHistogram({ name: 'bench_flat_seconds', help: 'bench', labelNames: ['command'], buckets: latencyBuckets }).labels('write');
  const theirs = new Histogram({ name: 'bench_prom_seconds', help: 'bench', labelNames: ['command'], buckets: latencyBuckets, registers: [] }).labels('write');
  const flatNs = measureObserve((v) => ours.observe(v), writes, repeat);
  const promNs = measureObserve((v) => theirs.observe(v), writes, repeat);
  process.stdout.write(
    `latency histogram observation (${latencyBuckets.length} buckets, a label child), ${writes} per round, median of ${repeat} rounds\n` +
      `| histogram | ns/observation |\n|---|---:|\n| FlatHistogram | ${flatNs.toFixed(0)} |\n| prom-client Histogram | ${promNs.toFixed(0)} |\n` +
      `prom-client ÷ FlatHistogram: ${(promNs / flatNs).toFixed(2)}×\n`,
  );
}
