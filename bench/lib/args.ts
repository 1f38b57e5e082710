import { InvalidArgument } from '../../src/common/errors.js';
import { parseSize } from '../../src/common/address.js';

/**
 * The options every NBD-level benchmark understands. Kept deliberately small: a benchmark is
 * run by hand, and each option here is documented in bench/README.md.
 */
export interface BenchOptions {
  /** Where to write the JSON results; none when absent. */
  out: string | undefined;
  /** Measured seconds per fio profile (time-based). */
  runtimeS: number;
  /** Unmeasured seconds of the same profile before each measured run (0: none). */
  warmupS: number;
  /** Size of every export in bytes (equal for every server). */
  sizeBytes: number;
  /** Runs per (server, profile), interleaved across servers; the median by IOPS is reported. */
  repeat: number;
  /** Directory for the backing files: a real disk, never tmpfs. */
  dir: string;
  /** Only these servers (by name), all when empty. */
  servers: string[];
  /** Only these profiles (by name), all when empty. */
  profiles: string[];
  /** Also run the flush-carrying variants of the write profiles. */
  fsync: boolean;
  /** When set, raftblock runs under `node --cpu-prof` and profiles land in this directory. */
  cpuProfDir: string | undefined;
  /** Another build's dist/src/cli/main.js to measure (a candidate change against the tree's). */
  cliPath: string | undefined;
  /** Keep the run directory (backing files, cluster data and node logs) instead of removing it. */
  keep: boolean;
  /** Skip the prefill (profiling writes only; reads would then hit unwritten blocks). */
  prefill: boolean;
}

export interface OptionDefaults {
  runtimeS: number;
  sizeBytes: number;
}

const usageText = `options:
  --out FILE          write the results as JSON to FILE
  --runtime SECONDS   measured seconds per profile (default %RUNTIME%)
  --warmup SECONDS    unmeasured seconds of the same profile before each run (default 5)
  --size BYTES        size of every export, e.g. 1G (default %SIZE%)
  --repeat N          runs per server and profile, interleaved; median by IOPS (default 1)
  --dir DIR           directory for backing files, a real disk (default /var/tmp)
  --servers A,B       only these servers (variants such as raftblock-cluster-tls run only when named)
  --profiles A,B      only these profiles
  --fsync             add write profiles with FLUSHes (every 32 4K / every 8 512K writes)
  --cpu-prof DIR      run raftblock under node --cpu-prof, profiles into DIR
  --cli PATH          measure this raftblock CLI (dist/src/cli/main.js of another build)
  --keep              keep the run directory (backing files, node logs) afterwards
  --no-prefill        skip writing every export once first (for quick write profiling)
`;

export function usage(defaults: OptionDefaults): string {
  return usageText.replace('%RUNTIME%', String(defaults.runtimeS)).replace('%SIZE%', String(defaults.sizeBytes));
}

/** Parses `--name value` / `--name=value` options; unknown options are an error. */
export function parseBenchOptions(argv: string[], defaults: OptionDefaults): BenchOptions {
  const opts: BenchOptions = {
    out: undefined,
    runtimeS: defaults.runtimeS,
    warmupS: 5,
    sizeBytes: defaults.sizeBytes,
    repeat: 1,
    dir: '/var/tmp',
    servers: [],
    profiles: [],
    fsync: false,
    cpuProfDir: undefined,
    cliPath: undefined,
    keep: false,
    prefill: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq >= 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new InvalidArgument(`${name} needs a value`);
      return v;
    };
    switch (name) {
      case '--out':
        opts.out = value();
        break;
      case '--runtime':
        opts.runtimeS = positiveInt(value(), name);
        break;
      case '--warmup':
        opts.warmupS = nonNegativeInt(value(), name);
        break;
      case '--size':
        opts.sizeBytes = parseSize(value(), name);
        if (opts.sizeBytes <= 0 || opts.sizeBytes % 4096 !== 0) {
          throw new InvalidArgument(`${name} must be a positive multiple of 4096`);
        }
        break;
      case '--repeat':
        opts.repeat = positiveInt(value(), name);
        break;
      case '--dir':
        opts.dir = value();
        break;
      case '--servers':
        opts.servers = list(value());
        break;
      case '--profiles':
        opts.profiles = list(value());
        break;
      case '--fsync':
        opts.fsync = true;
        break;
      case '--cpu-prof':
        opts.cpuProfDir = value();
        break;
      case '--no-prefill':
        opts.prefill = false;
        break;
      case '--keep':
        opts.keep = true;
        break;
      case '--cli':
        opts.cliPath = value();
        break;
      case '--help':
      case '-h':
        process.stdout.write(usage(defaults));
        process.exit(0);
      // falls through (never reached: exit above)
      default:
        throw new InvalidArgument(`unknown option ${arg}\n${usage(defaults)}`);
    }
  }
  if (opts.dir.startsWith('/dev/shm')) throw new InvalidArgument('--dir must be a real disk, not tmpfs');
  return opts;
}

/** parseBenchOptions for a command line: a bad option prints the message and usage, exit 2. */
export function parseBenchOptionsOrExit(argv: string[], defaults: OptionDefaults): BenchOptions {
  try {
    return parseBenchOptions(argv, defaults);
  } catch (e) {
    if (!(e instanceof InvalidArgument)) throw e;
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
}

function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgument(`${what} must be a positive integer, got ${text}`);
  return n;
}

function nonNegativeInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgument(`${what} must be a non-negative integer, got ${text}`);
  return n;
}

function list(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
