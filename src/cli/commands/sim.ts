/**
 * `raftblock sim --seeds N [--start S]`: runs the deterministic cluster simulator over N seeds
 * and prints a summary. Every failure names its seed; `--seed S --verbose` replays one run.
 */
import type { Command } from 'commander';
import { InvalidArgument } from '../../common/errors.js';
import { parseInteger } from '../../common/address.js';
import type { RunOptions, RunResult } from '../../sim/run.js';
import { sweep } from '../../sim/sweep.js';

function int(name: string, v: string): number {
  return parseInteger(v, name, 0, Number.MAX_SAFE_INTEGER);
}

/** Most nodes a simulated cluster may be forced to: beyond a few, a seed only runs longer. */
const maxSimNodes = 9;

export function register(program: Command): void {
  program
    .command('sim')
    .description('run the deterministic Raft cluster simulator over a range of seeds')
    .option('--seeds <n>', 'number of seeds to run', '100')
    .option('--start <s>', 'first seed', '1')
    .option('--seed <s>', 'run exactly this one seed (same as --start S --seeds 1)')
    .option('--nodes <n>', `force the cluster size (1-${maxSimNodes}; default 3 or 5, by seed)`)
    .option('--unsafe <flag>', 'enable a deliberately broken variant: readWithoutLeaseOrReadIndex | commitPreviousTermByCounting | replayReAddedMember | rebuildKeepsMatch')
    .option('--profile <name>', 'force a fault schedule: mixed | churn | figure8 | lease | membership | rebuild')
    .option('--no-check', 'skip the linearizability check of client histories')
    .option('--verbose', 'print every seed, and the event trace of failures')
    .action((o: { seeds: string; start: string; seed?: string; nodes?: string; unsafe?: string; profile?: string; check: boolean; verbose?: boolean }) => {
      const start = o.seed !== undefined ? int('--seed', o.seed) : int('--start', o.start);
      const count = o.seed !== undefined ? 1 : int('--seeds', o.seeds);
      const opts: RunOptions = { skipCheck: !o.check };
      // A cluster of no node fails every seed: refused, not reported as failures.
      if (o.nodes !== undefined) opts.nodes = parseInteger(o.nodes, '--nodes', 1, maxSimNodes);
      if (o.profile !== undefined) {
        if (!['mixed', 'churn', 'figure8', 'lease', 'membership', 'rebuild'].includes(o.profile)) throw new InvalidArgument(`unknown --profile ${o.profile}`);
        opts.profile = o.profile as RunOptions['profile'];
      }
      if (o.unsafe === 'rebuildKeepsMatch') {
        // A broken host rather than a broken core (see SimOptions).
        opts.rebuildKeepsMatch = true;
      } else if (o.unsafe !== undefined) {
        if (o.unsafe !== 'readWithoutLeaseOrReadIndex' && o.unsafe !== 'commitPreviousTermByCounting' && o.unsafe !== 'replayReAddedMember') throw new InvalidArgument(`unknown --unsafe flag ${o.unsafe}`);
        opts.unsafe = { [o.unsafe]: true };
      }
      const out = (s: string): void => void process.stdout.write(s + '\n');
      out(`sim: seeds ${start}..${start + count - 1}${o.unsafe ? ` unsafe=${o.unsafe}` : ''}`);
      // Everything that shapes a seed's run, for the line that reproduces a failure.
      const replay = `${o.unsafe ? ` --unsafe ${o.unsafe}` : ''}${o.profile ? ` --profile ${o.profile}` : ''}${o.nodes ? ` --nodes ${o.nodes}` : ''}`;
      const t0 = performance.now();
      let done = 0;
      let failed = 0;
      const report = (r: RunResult): void => {
        done++;
        if (!r.ok) failed++;
        if (done % 1000 === 0 && done < count) out(`  ... ${done} seeds (up to ${r.seed}), ${failed} failed, ${((performance.now() - t0) / 1000).toFixed(1)}s`);
        if (r.ok && r.verdict === 'unknown') out(`seed ${r.seed}: history too large for the checker budget (unknown verdict, not a failure)`);
        if (r.ok) {
          if (o.verbose) out(`seed ${r.seed}: ok (${r.nodes} nodes, ${r.ops} ops, ${r.steps} steps, ${r.verdict ?? 'unchecked'})`);
          return;
        }
        out(`seed ${r.seed}: FAIL ${r.kind}: ${r.failure}`);
        out(`  reproduce: raftblock sim --seed ${r.seed}${replay} --verbose`);
        if (o.verbose && r.trace) for (const line of r.trace) out(`  ${line}`);
      };
      const s = sweep(start, count, opts, report, () => performance.now());
      out(`sim summary: seeds=${s.seeds} start=${s.start} failures=${s.failures.length} ops=${s.ops} reads(lease/readIndex)=${s.leaseReads}/${s.readIndexReads} unchecked=${s.unknownVerdicts} time=${(s.elapsedMs / 1000).toFixed(1)}s`);
      out(`sim events: ${Object.entries(s.counts).map(([k, v]) => `${k}=${v}`).join(' ')}`);
      if (s.failures.length > 0) {
        out(`failing seeds: ${s.failures.map((f) => f.seed).join(' ')}`);
        process.exitCode = 1;
      }
    });
}
