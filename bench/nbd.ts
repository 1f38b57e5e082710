import { parseBenchOptionsOrExit } from './lib/args.js';
import { flushProfiles, standardProfiles } from './lib/fio.js';
import { allNbdServers } from './lib/peers.js';
import { runSuite } from './lib/runner.js';

/**
 * `npm run bench -- nbd [--out FILE] [--runtime SECONDS] [--size BYTES] ...`:
 * `raftblock export-file` against nbdkit (memory, file) and qemu-nbd (cache=none,
 * cache=directsync; io_uring), fio's nbd engine, equal export sizes, one run.
 */
export async function run(argv: string[]): Promise<void> {
  const opts = parseBenchOptionsOrExit(argv, { runtimeS: 10, sizeBytes: 1024 * 1024 * 1024 });
  await runSuite(
    {
      title: 'bench nbd',
      subject: 'raftblock',
      servers: allNbdServers,
      profiles: opts.fsync ? [...standardProfiles, ...flushProfiles] : standardProfiles,
      targets: [
        { profile: '4k-randwrite-qd32', peer: 'nbdkit-file', minRatio: 0.8 },
        { profile: '512k-seqwrite-qd8', peer: 'nbdkit-file', minRatio: 0.8 },
      ],
      cpuInJson: false,
    },
    opts,
  );
}
