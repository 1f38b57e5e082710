/** A sweep over consecutive seeds: every failing seed is reported with how to reproduce it. */
import { type RunOptions, type RunResult, runSeed } from './run.js';

export interface SweepSummary {
  seeds: number;
  start: number;
  failures: RunResult[];
  elapsedMs: number;
  ops: number;
  steps: number;
  leaseReads: number;
  readIndexReads: number;
  /** Histories the checker could not decide within its budget. */
  unknownVerdicts: number;
  /** Fault and protocol events summed over the seeds. */
  counts: Record<string, number>;
}

export function sweep(start: number, count: number, opts: RunOptions, onResult?: (r: RunResult) => void, now: () => number = () => 0): SweepSummary {
  const t0 = now();
  const failures: RunResult[] = [];
  let ops = 0;
  let steps = 0;
  let leaseReads = 0;
  let readIndexReads = 0;
  let unknownVerdicts = 0;
  const counts: Record<string, number> = {};
  for (let s = start; s < start + count; s++) {
    const r = runSeed(s, opts);
    ops += r.ops;
    steps += r.steps;
    leaseReads += r.leaseReads ?? 0;
    readIndexReads += r.readIndexReads ?? 0;
    if (r.verdict === 'unknown') unknownVerdicts++;
    for (const [k, v] of Object.entries(r.counts ?? {})) counts[k] = (counts[k] ?? 0) + v;
    if (!r.ok) failures.push(r);
    onResult?.(r);
  }
  return { seeds: count, start, failures, elapsedMs: now() - t0, ops, steps, leaseReads, readIndexReads, unknownVerdicts, counts };
}
