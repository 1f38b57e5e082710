/**
 * `raftblock node --id ID --data DIR --peer HOST:PORT --nbd HOST:PORT --http HOST:PORT
 *  --labels zone=a,rack=r1,host=h1 [--bootstrap | --join HOST:PORT,...] [--advertise HOST:PORT]`
 *
 * Runs one storage node until SIGINT/SIGTERM, then stops cleanly (NBD closed, in-flight Raft
 * work settled, stores checkpointed, WAL closed) and exits 0. Once listening it prints one
 * JSON line to stdout: {"event":"listening","id":N,"peer":...,"nbd":...,"http":...}.
 *
 * `raftblock node remove ID` and `node replace ID` (node-admin.ts) are subcommands of this
 * one: commander does not dispatch to a subcommand of a command with required options, so --id
 * and --data are checked here, with commander's own message and exit code.
 */
import { storeOpsLevel } from '../../store/ops.js';
import type { Command } from 'commander';
import { parseCount, parseHostPort, parseInteger, parseSecondsToMs } from '../../common/address.js';
import { defaultMaxNbdConnections, defaultNbdHandshakeLimitMs } from '../../nbd/server.js';
import { nbdMemoryBudgetHelp, parseNbdMemoryBudget } from '../nbd-memory-budget-flag.js';
import { InvalidArgument } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { parseIoBackendChoice } from '../../io/select.js';
import { maxNodeId, parseLabels } from '../../cluster/map.js';
import { ClusterKey } from '../../cluster/peer-auth.js';
import { readAdminToken } from '../../cluster/admin-token.js';
import { PskKeys } from '../../nbd/tls-psk.js';
import { reloadOnSighup } from '../../common/sighup-reload.js';
import { httpTlsFromFlags, readHttpTls } from '../../cluster/http-tls.js';
import { defaultDownOutIntervalMs } from '../../cluster/down-out.js';
import { StorageNode } from '../../cluster/node.js';
import { registerNodeAdmin } from './node-admin.js';
import { makeDataDir } from '../data-dir.js';

interface NodeCliOptions {
  id: string;
  data: string;
  peer: string;
  nbd: string;
  http: string;
  labels: string;
  bootstrap?: boolean;
  join?: string;
  advertise?: string;
  leaderFollowsIo: boolean;
  /** Repeatable: the first is proved, the others accepted too (a key rotation). */
  clusterKeyFile: string[];
  peerTls?: boolean;
  nbdTlsPsk?: string;
  adminTokenFile?: string;
  httpTlsCert?: string;
  httpTlsKey?: string;
  nbdMaxConnections?: string;
  nbdHandshakeLimit?: string;
  nbdMemoryBudget?: string;
  downOutInterval?: string;
}

export function register(program: Command): void {
  const node = program
    .command('node')
    .description('run one storage node of a raftblock cluster (required: --id, --data)')
    .option('--id <n>', `node id (1..${maxNodeId}, unique in the cluster, fixed for its data dir)`)
    .option('--data <dir>', 'data directory (WAL, extent stores, metadata)')
    .option('--peer <host:port>', 'node-to-node transport address', '127.0.0.1:11000')
    .option('--nbd <host:port>', 'NBD listen address (every volume is served here)', '127.0.0.1:10809')
    .option('--http <host:port>', 'HTTP address for /metrics, /healthz and the admin API', '127.0.0.1:10900')
    .option('--labels <k=v,...>', 'fault-domain labels: zone, rack, host', '')
    .option('--bootstrap', 'found a new cluster (this node runs the metadata group)')
    .option('--join <host:port,...>', 'peer addresses of existing nodes to join through')
    .option('--advertise <host:port>', 'peer address other nodes dial (when --peer binds 0.0.0.0)')
    .option(
      '--cluster-key-file <path>',
      'a file of at least 16 bytes that every node of the cluster holds a copy of: peers prove it on every connection (without it, any process that reaches --peer is taken for a node); give it again with more files to accept their keys too while a key rotation is under way (the first is the one this node proves)',
      (path: string, previous: string[]) => [...previous, path],
      [] as string[],
    )
    .option('--peer-tls', 'encrypt peer connections: TLS 1.3 keyed by the cluster key (needs --cluster-key-file; every node of the cluster must give it)')
    .option('--nbd-tls-psk <file>', 'NBD clients must use TLS and prove a key of this PSK file (username:hexkey lines, as psktool writes; qemu tls-creds-psk and libnbd tls-psk-file read the same); re-read on SIGHUP')
    .option('--admin-token-file <path>', 'the admin API (/v1) answers only requests that carry this token (Authorization: Bearer; printable ASCII, at least 16 characters); /metrics and /healthz stay open')
    .option('--nbd-max-connections <n>', `open NBD client connections at most; one more is closed at once (default ${defaultMaxNbdConnections})`)
    .option('--nbd-handshake-limit <seconds>', `an NBD client that has not finished its handshake by then is disconnected (default ${defaultNbdHandshakeLimitMs / 1000})`)
    .option('--nbd-memory-budget <bytes>', nbdMemoryBudgetHelp)
    .option('--http-tls-cert <file>', 'serve HTTPS on --http (metrics, health, admin API) with this PEM certificate chain; needs --http-tls-key; both re-read on SIGHUP')
    .option('--http-tls-key <file>', 'the PEM private key of --http-tls-cert')
    .option(
      '--down-out-interval <seconds>',
      `as the metadata group's leader, mark out a node that has not answered for this long, so its PGs are rebuilt on the nodes left, and in again once it answers; 0: never mark out (default ${defaultDownOutIntervalMs / 1000})`,
    )
    .option('--no-leader-follows-io', 'keep PG leadership where elections put it (by default a leader hands a PG to the node whose gateway sends it most of its requests)')
    .action(async (opts: Partial<NodeCliOptions>, cmd: Command) => {
      for (const [key, flag] of [['id', '--id <n>'], ['data', '--data <dir>']] as const) {
        if (opts[key] === undefined) cmd.error(`error: required option '${flag}' not specified`, { code: 'commander.missingMandatoryOptionValue' });
      }
      await runNode(opts as NodeCliOptions);
    });
  registerNodeAdmin(node);
}

/**
 * RAFTBLOCK_TICK_MS (tests, benchmarks) at most: elections then take ten minutes; more is a
 * typo. Taken through Number(), a typo made a NaN tick, on which the host ticks no group ever
 * (no elections), and 0 one it ticks without end.
 */
const maxTickMs = 60_000;
/** RAFTBLOCK_START_HOLD_MS (fault injection, NodeOptions.startHoldMs) at most. */
const maxStartHoldMs = 60_000;

async function runNode(opts: NodeCliOptions): Promise<void> {
  const log = createLogger('node-cli');
  // An id the map does not take would start the node, then have it ask to register for ever.
  const id = parseInteger(opts.id, '--id', 1, maxNodeId);
  if (opts.bootstrap && opts.join) throw new InvalidArgument('--bootstrap and --join exclude each other');
  const join = (opts.join ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const j of join) parseHostPort(j, '--join');
  const [ownKeyFile, ...acceptedKeyFiles] = opts.clusterKeyFile;
  if (opts.peerTls && ownKeyFile === undefined) throw new InvalidArgument('--peer-tls needs --cluster-key-file: TLS between peers is keyed by the cluster key');
  const node = new StorageNode({
    id,
    dataDir: opts.data,
    peer: parseHostPort(opts.peer, '--peer'),
    nbd: parseHostPort(opts.nbd, '--nbd'),
    http: parseHostPort(opts.http, '--http'),
    labels: parseLabels(opts.labels),
    bootstrap: opts.bootstrap ?? false,
    join,
    advertisePeer: opts.advertise ? (parseHostPort(opts.advertise, '--advertise'), opts.advertise) : undefined,
    ioBackend: parseIoBackendChoice(process.env.RAFTBLOCK_IO),
    tickMs: process.env.RAFTBLOCK_TICK_MS ? parseInteger(process.env.RAFTBLOCK_TICK_MS, 'RAFTBLOCK_TICK_MS', 1, maxTickMs) : undefined,
    // A rolling upgrade's test: this node stands for a build of an earlier store command level.
    storeOpsLevel: process.env.RAFTBLOCK_STORE_OPS_LEVEL ? parseInteger(process.env.RAFTBLOCK_STORE_OPS_LEVEL, 'RAFTBLOCK_STORE_OPS_LEVEL', 1, storeOpsLevel) : undefined,
    startHoldMs: process.env.RAFTBLOCK_START_HOLD_MS ? parseInteger(process.env.RAFTBLOCK_START_HOLD_MS, 'RAFTBLOCK_START_HOLD_MS', 0, maxStartHoldMs) : undefined,
    leaderFollowsIo: opts.leaderFollowsIo,
    clusterKey: ownKeyFile === undefined ? undefined : ClusterKey.fromFile(ownKeyFile),
    clusterKeysAlsoAccepted: acceptedKeyFiles.map((f) => ClusterKey.fromFile(f)),
    peerTls: opts.peerTls === true,
    nbdTlsPsk: opts.nbdTlsPsk === undefined ? undefined : PskKeys.fromFile(opts.nbdTlsPsk),
    adminToken: opts.adminTokenFile === undefined ? undefined : readAdminToken(opts.adminTokenFile),
    httpTls: httpTlsFromFlags(opts.httpTlsCert, opts.httpTlsKey),
    nbdMaxConnections: opts.nbdMaxConnections === undefined ? undefined : parseCount(opts.nbdMaxConnections, '--nbd-max-connections'),
    nbdHandshakeLimitMs: parseSecondsToMs(opts.nbdHandshakeLimit, '--nbd-handshake-limit'),
    nbdMemoryBudgetBytes: parseNbdMemoryBudget(opts.nbdMemoryBudget, '--nbd-memory-budget'),
    downOutIntervalMs: parseSecondsToMs(opts.downOutInterval, '--down-out-interval', 'never mark out'),
  });
  if (ownKeyFile === undefined) log.warn('no --cluster-key-file: peer connections are not authenticated');
  makeDataDir(opts.data);
  await node.start();
  const pskFile = opts.nbdTlsPsk;
  if (pskFile !== undefined) reloadOnSighup('the NBD TLS keys', pskFile, () => node.setTlsPsk(PskKeys.fromFile(pskFile)), log);
  const { httpTlsCert, httpTlsKey } = opts;
  if (httpTlsCert !== undefined && httpTlsKey !== undefined) {
    reloadOnSighup('the HTTPS certificate', httpTlsCert, () => node.setHttpTls(readHttpTls(httpTlsCert, httpTlsKey)), log);
  }
  process.stdout.write(JSON.stringify({ event: 'listening', id, ...node.addresses }) + '\n');
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal, id });
      resolve();
    };
    process.once('SIGINT', () => onSignal('SIGINT'));
    process.once('SIGTERM', () => onSignal('SIGTERM'));
  });
  await node.stop();
  process.exit(0);
}
