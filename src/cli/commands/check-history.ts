/**
 * `raftblock check-history FILE --model M`: is this recorded history linearizable?
 *
 * Exit codes: 0 linearizable, 1 not linearizable, 2 unknown (the time or step budget ran
 * out first), 3 bad input (unreadable or unparseable file, unknown model, bad option).
 * The checker itself is pure; this command reads the file and owns the clock.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Command, CommanderError } from 'commander';
import { InvalidArgument } from '../../common/errors.js';
import { checkOperations, defaultMaxCacheBytes, describeResult } from '../../check/index.js';
import { modelNames, parseHistory } from '../../check/parse/index.js';

export const exitLinearizable = 0;
export const exitNotLinearizable = 1;
export const exitUnknown = 2;
export const exitBadInput = 3;

const defaultTimeoutMs = 60_000;

function positiveInteger(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) <= 0 || !Number.isSafeInteger(Number(text))) {
    throw new BadInput(`${name} must be a positive integer, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

class BadInput extends Error {}

interface Options {
  model: string;
  timeoutMs?: string;
  maxSteps?: string;
  allPartitions?: boolean;
}

function run(file: string, opts: Options): number {
  const startMs = performance.now();
  const timeoutMs = positiveInteger('--timeout-ms', opts.timeoutMs) ?? defaultTimeoutMs;
  const maxSteps = positiveInteger('--max-steps', opts.maxSteps);
  if (!(modelNames as readonly string[]).includes(opts.model)) {
    throw new BadInput(`unknown model ${JSON.stringify(opts.model)} (expected one of ${modelNames.join(', ')})`);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new BadInput(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const history = parseHistory(text, opts.model);
  if (history.events === 0) throw new BadInput(`${file}: no ${opts.model} operation events found`);

  const deadlineMs = startMs + timeoutMs;
  const result = checkOperations(
    history.model,
    history.operations,
    { ...(maxSteps !== undefined ? { maxSteps } : {}), deadlineCheck: () => performance.now() > deadlineMs },
    { allPartitions: opts.allPartitions === true },
  );
  const elapsedMs = performance.now() - startMs;
  let report = describeResult(history.model, result);
  report += `${history.events} events, ${history.dropped} operation(s) dropped as constraining nothing; ${elapsedMs.toFixed(0)} ms\n`;
  if (result.verdict === 'unknown') {
    report += `limits: --timeout-ms ${timeoutMs}${maxSteps !== undefined ? `, --max-steps ${maxSteps}` : ''}, ${defaultMaxCacheBytes >> 20} MiB of memo per partition\n`;
  }
  process.stdout.write(report);
  switch (result.verdict) {
    case 'linearizable':
      return exitLinearizable;
    case 'not-linearizable':
      return exitNotLinearizable;
    default:
      return exitUnknown;
  }
}

export function register(program: Command): void {
  program
    .command('check-history')
    .description('check a recorded history for linearizability (exit 0 linearizable, 1 not, 2 unknown, 3 bad input)')
    .argument('<file>', 'history file (format depends on --model; see src/check/README.md)')
    .requiredOption('--model <name>', `model: ${modelNames.join(' | ')}`)
    .option('--timeout-ms <ms>', `time budget; past it the verdict is unknown (default ${defaultTimeoutMs})`)
    .option('--max-steps <n>', 'search step budget; past it the verdict is unknown')
    .option('--all-partitions', 'search every partition even after one fails')
    .exitOverride((err) => {
      // Usage errors are bad input too: exit 3, never 1 (which means "not linearizable").
      if (err.exitCode === 0) throw err;
      throw new CommanderError(exitBadInput, err.code, err.message);
    })
    .action((file: string, opts: Options) => {
      try {
        process.exitCode = run(file, opts);
      } catch (err) {
        if (err instanceof BadInput || err instanceof InvalidArgument) {
          process.stderr.write(`raftblock check-history: ${err.message}\n`);
          process.exitCode = exitBadInput;
          return;
        }
        throw err;
      }
    });
}
