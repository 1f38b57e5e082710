import { parseBenchOptionsOrExit } from './lib/args.js';
import { flushProfiles, standardProfiles } from './lib/fio.js';
import { nbdkitMemory, probeSize, qemuNbdDirectsync, raftblockCluster } from './lib/peers.js';
import { runSuite } from './lib/runner.js';

/**
 * `npm run bench -- cluster [--out FILE] [--runtime SECONDS] ...`: `raftblock start` (three
 * replicas on this machine) against qemu-nbd directsync (one durable copy) and nbdkit memory
 * (no durability: the client's ceiling), plus the CPU time of every node process per request.
 * The exports take the size of the cluster's volume `vol0`. `--servers raftblock-cluster,
 * raftblock-cluster-tls` measures what `--peer-tls` costs, in the same run.
 */
export async function run(argv: string[]): Promise<void> {
  const opts = parseBenchOptionsOrExit(argv, { runtimeS: 10, sizeBytes: 1024 * 1024 * 1024 });
  await runSuite(
    {
      title: 'bench cluster',
      subject: 'raftblock-cluster',
      // raftblock-cluster-tls runs only when named in --servers (the cost of --peer-tls).
      servers: [raftblockCluster(3), qemuNbdDirectsync, nbdkitMemory, raftblockCluster(3, true)],
      profiles: opts.fsync ? [...standardProfiles, ...flushProfiles] : standardProfiles,
      targets: [
        { profile: '4k-randwrite-qd32', peer: 'qemu-nbd-directsync', minRatio: 1.0 },
        { profile: '4k-randwrite-qd1', maxP99Us: 2000 },
      ],
      cpuInJson: true,
      sizeFrom: (srv) => (srv.name.startsWith('raftblock-cluster') ? probeSize(srv.uri) : undefined),
    },
    opts,
  );
}
