/**
 * `raftblock start [--data DIR] [--nodes 3] [--nbd-port 10809] [--http-port 10900]
 *  [--peer-port 11000] [--host 127.0.0.1] [--pg-count N] [--[no-]peer-tls] [--nbd-tls-psk FILE |
 *  --no-nbd-tls-psk] [--admin-token-file FILE | --no-admin-token-file] [--http-tls-cert FILE
 *  --http-tls-key FILE [--http-tls-ca FILE] | --no-http-tls] [--nbd-memory-budget BYTES]`
 *
 * The embedded default: a local cluster of N `raftblock node` processes (node i in zone z<i>),
 * the first bootstrapping it and the others joining through it. Creates pool `default`
 * (min(3, N) replicas, distinct zones, `defaultPgCount` PGs) and volume `vol0` (1 GiB) when
 * absent, waits until every PG of the pool has a leader and (with three nodes or more) the
 * metadata group has its voters (three; five from five nodes), prints how to connect, and
 * prints one JSON line to stdout:
 *   {"event":"ready","nbd":["127.0.0.1:10809",...],"http":[...],"peer":[...],"pids":[...]}
 * A node process that dies is restarted after a second (it recovers from its WAL and catches
 * up); the events {"event":"node-exit","id":N} and {"event":"node-restarted","id":N,"pid":P}
 * are printed as JSON lines.
 * Node i (0-based) serves NBD on nbd-port + i, HTTP on http-port + i, peers on peer-port + i.
 * SIGHUP (with --nbd-tls-psk or --http-tls-cert) has every node re-read the PSK file and the
 * certificate. SIGINT/SIGTERM stops every node cleanly. Run again on the same DIR, it resumes
 * with all data (the ports, and the TLS and token settings, are remembered in
 * DIR/cluster.json; see start-security.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { writeFileDurably } from '../../common/durable-file.js';
import { parseInteger } from '../../common/address.js';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { InvalidArgument, RaftblockError, Unavailable } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { AdminClient, defaultAdminHttpPort } from '../../cluster/admin-client.js';
import { allGroups, maxPgsPerPool, metadataGroupId } from '../../cluster/map.js';
import { ClusterKey } from '../../cluster/peer-auth.js';
import { PskKeys } from '../../nbd/tls-psk.js';
import { readAdminToken } from '../../cluster/admin-token.js';
import { httpTlsFromFlags, readCaFile } from '../../cluster/http-tls.js';
import { missingFlags, nodeV8Flags, withNodeMallocTunables } from '../node-flags.js';
import { makeDataDir } from '../data-dir.js';
import { metaVotersWanted } from '../../cluster/meta-group-plan.js';
import { resolveSecurity, type SecurityFlags, type SecuritySettings } from './start-security.js';
import { nbdMemoryBudgetHelp, parseNbdMemoryBudget } from '../nbd-memory-budget-flag.js';

/** The command's flags: the layout's, and the security ones (start-security.ts). */
interface StartOptions extends SecurityFlags {
  data: string;
  nodes: string;
  nbdPort: string;
  httpPort: string;
  peerPort: string;
  host: string;
  pgCount?: string;
  nbdMemoryBudget?: string;
}

export interface Layout {
  nodes: number;
  host: string;
  nbdPort: number;
  httpPort: number;
  peerPort: number;
  /** PGs of pool `default` (clusters made before this was recorded: `defaultPgCount`). */
  pgCount?: number;
  /** TLS and token settings (clusters made before they were remembered: none). */
  security?: SecuritySettings;
}

/** Copies pool `default` keeps on a cluster of `nodes` nodes (one per zone, at most 3). */
function defaultReplicas(nodes: number): number {
  return Math.min(3, nodes);
}

/** PG replicas per node that pool `default` aims at (see defaultPgCount). */
export const defaultPgReplicasPerNode = 4;

/**
 * PGs of pool `default` for `nodes` nodes holding `replicas` copies each: about
 * `defaultPgReplicasPerNode` replicas per node, rounded up to a power of two, at least 4.
 *
 * Why so few: a PG is a Raft group, and its work per round is paid per group whatever the
 * round carries: a Ready, a WAL record, an append and its acknowledgement per follower, an
 * apply, on every replica. The writes a node receives at once are spread over its PGs, so the
 * fewer (and busier) the PGs, the more entries each round carries. Measured with 3 nodes and
 * 4 KiB random writes at QD32 (bench/README.md): 32 PGs cost ~250 µs of cluster CPU per
 * write, 8 PGs ~185 µs, 4 PGs ~135 µs. More PGs buy finer rebalancing steps and more leaders
 * to spread, which a cluster of a few nodes does not need; a pool made with the admin API or
 * `raftblock pool create` takes any count.
 */
export function defaultPgCount(nodes: number, replicas: number): number {
  const wanted = Math.ceil((defaultPgReplicasPerNode * nodes) / Math.max(1, replicas));
  let n = 4;
  while (n < wanted && n < maxPgsPerPool) n *= 2;
  return n;
}
export const defaultVolumeBytes = 1024 * 1024 * 1024;
const readyTimeoutMs = 120_000;
const stopTimeoutMs = 30_000;

export function register(program: Command): void {
  program
    .command('start')
    .description('run a local cluster (N node processes) serving volume vol0 over NBD')
    .option('--data <dir>', 'data directory of the whole cluster', 'raftblock-data')
    .option('--nodes <n>', 'number of nodes', '3')
    .option('--nbd-port <port>', 'NBD port of node 0 (node i serves on port + i)', '10809')
    .option('--http-port <port>', 'HTTP port of node 0 (metrics, admin API)', String(defaultAdminHttpPort))
    .option('--peer-port <port>', 'node-to-node port of node 0', '11000')
    .option('--host <addr>', 'address every node listens on', '127.0.0.1')
    .option('--pg-count <n>', 'PGs of pool default, when it is created (default: about 4 PG replicas per node)')
    .option('--nbd-tls-psk <file>', 'NBD clients must use TLS and prove a key of this PSK file (username:hexkey lines); every node serves with it (remembered in DIR/cluster.json)')
    .option('--admin-token-file <path>', 'every node answers its admin API (/v1) only with this token; give the admin commands --token-file PATH too (remembered in DIR/cluster.json)')
    .option('--peer-tls', 'encrypt the connections between nodes (TLS keyed by DIR/cluster.key; remembered in DIR/cluster.json); worth it when --host is not a loopback address')
    .option('--no-peer-tls', 'turn off a remembered --peer-tls')
    .option('--no-nbd-tls-psk', 'turn off a remembered --nbd-tls-psk: serve NBD in the clear')
    .option('--no-admin-token-file', 'turn off a remembered --admin-token-file: the admin API answers anyone who reaches it')
    .option('--http-tls-cert <file>', 'every node serves HTTPS on its HTTP port with this PEM certificate (its addresses, e.g. IP:127.0.0.1, among its names; remembered in DIR/cluster.json)')
    .option('--http-tls-key <file>', 'the PEM private key of --http-tls-cert')
    .option('--http-tls-ca <file>', 'the CA this command trusts for the nodes\' HTTPS (default: the certificate itself, when it is self-signed)')
    .option('--no-http-tls', 'turn off a remembered --http-tls-cert: plain HTTP')
    .option('--nbd-memory-budget <bytes>', `every node's NBD memory budget (not remembered: give it at every start): ${nbdMemoryBudgetHelp}`)
    .action(async (opts: StartOptions) => {
      await start(opts);
    });
}

const maxPort = 65535;
/** The most nodes `start` runs. */
const maxStartNodes = 64;

/** The port of node 0; node i takes port + i, so the last node's must be a port too. */
function port(text: string, what: string, nodes: number): number {
  const n = parseInteger(text, what, 1, maxPort);
  if (n + nodes - 1 > maxPort) throw new InvalidArgument(`${what} must be 1..${maxPort - nodes + 1} with ${nodes} nodes (node N takes ${what} + N - 1, at most ${maxPort}), got ${n}`);
  return n;
}

/** The last `lines` lines of a node's log, for an error message. */
function logTail(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(unreadable: ${(err as Error).message})`;
  }
}

const cliMain = join(fileURLToPath(import.meta.url), '..', '..', 'main.js');

async function start(opts: StartOptions): Promise<void> {
  const log = createLogger('start');
  const dataDir = resolve(opts.data);
  const layoutPath = join(dataDir, 'cluster.json');
  const previous = existsSync(layoutPath) ? readLayout(layoutPath) : undefined;
  const { settings: security, remembered } = resolveSecurity(opts, previous?.security);
  const tuning: NodeTuning = { nbdMemoryBudgetBytes: parseNbdMemoryBudget(opts.nbdMemoryBudget, '--nbd-memory-budget') };
  // A bad PSK or token file stops here, before anything is made or started.
  const { nbdTlsPsk, adminTokenFile, httpTlsCert, httpTlsKey } = security;
  let adminToken: string | undefined;
  let httpsCa: Buffer | undefined;
  try {
    if (nbdTlsPsk) PskKeys.fromFile(nbdTlsPsk);
    if (adminTokenFile) adminToken = readAdminToken(adminTokenFile);
    if (httpTlsFromFlags(httpTlsCert, httpTlsKey)) httpsCa = readCaFile(security.httpTlsCa ?? httpTlsCert!);
  } catch (err) {
    if (remembered.length === 0 || !(err instanceof RaftblockError)) throw err;
    throw new InvalidArgument(`${err.message}; ${layoutPath} remembers ${remembered.join(', ')}`);
  }
  makeDataDir(dataDir);
  let layout: Layout;
  if (previous) {
    layout = { ...previous, security };
    log.info('resuming the cluster in its data directory', { dataDir, nodes: layout.nodes, remembered });
    if (opts.pgCount !== undefined) log.warn('--pg-count applies when the cluster is made; this one keeps its pool', { pgCount: opts.pgCount });
  } else {
    const nodes = parseInteger(opts.nodes, '--nodes', 1, maxStartNodes);
    const pgCount = opts.pgCount === undefined ? defaultPgCount(nodes, defaultReplicas(nodes)) : parseInteger(opts.pgCount, '--pg-count', 1, maxPgsPerPool);
    layout = {
      pgCount,
      nodes,
      host: opts.host,
      nbdPort: port(opts.nbdPort, '--nbd-port', nodes),
      httpPort: port(opts.httpPort, '--http-port', nodes),
      peerPort: port(opts.peerPort, '--peer-port', nodes),
      security,
    };
  }
  await writeFileDurably(layoutPath, JSON.stringify(layout, null, 2) + '\n');
  // The nodes prove this key to each other on every peer connection (peer-auth.ts). Made with
  // the cluster; a data dir from before keys gets one now (its nodes all start together).
  const keyPath = join(dataDir, 'cluster.key');
  if (!existsSync(keyPath)) writeFileSync(keyPath, ClusterKey.generateText(), { mode: 0o600, flag: 'wx' });
  ClusterKey.fromFile(keyPath); // a damaged key file stops here, not in every node
  const addr = (base: number, i: number): string => `${layout.host}:${base + i}`;
  const children: ChildProcess[] = [];
  let stopping = false;

  const stopAll = async (signal: NodeJS.Signals): Promise<void> => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((done) => {
            if (c.exitCode !== null || c.signalCode !== null) return done();
            const timer = setTimeout(() => c.kill('SIGKILL'), stopTimeoutMs);
            c.once('exit', () => {
              clearTimeout(timer);
              done();
            });
            c.kill(signal);
          }),
      ),
    );
  };

  const listening: Promise<void>[] = [];
  const spawnNode = (i: number, onListening?: () => void, onEarlyExit?: (err: Error) => void): void => {
    const id = i + 1;
    const dir = join(dataDir, `node-${id}`);
    mkdirSync(dir, { recursive: true });
    const args = [...process.execArgv, ...missingFlags(nodeV8Flags, process.execArgv), cliMain, ...nodeArguments(layout, i, dir, keyPath, tuning)];
    const logPath = join(dataDir, `node-${id}.log`);
    // The node writes its log straight to the file: it never waits on this process.
    const logFd = openSync(logPath, 'a');
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', logFd], env: withNodeMallocTunables(process.env) });
    closeSync(logFd);
    children[i] = child;
    let up = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('{"event":"listening"')) {
        up = true;
        onListening?.();
      }
    });
    child.once('exit', (code, sig) => {
      if (stopping) return;
      if (!up) onEarlyExit?.(new Unavailable(`node ${id} exited (${sig ?? code}) before listening; the end of ${logPath}:\n${logTail(logPath, 6)}`));
      // A node that dies (crash, kill -9) is restarted: it recovers from its WAL and catches up.
      log.warn('node exited; restarting it', { id, code, signal: sig });
      process.stdout.write(JSON.stringify({ event: 'node-exit', id, code, signal: sig }) + '\n');
      setTimeout(() => {
        if (stopping) return;
        spawnNode(i, () => process.stdout.write(JSON.stringify({ event: 'node-restarted', id, pid: children[i].pid }) + '\n'));
      }, 1000);
    });
  };
  for (let i = 0; i < layout.nodes; i++) {
    listening.push(new Promise<void>((ok, fail) => spawnNode(i, ok, fail)));
  }

  // Every node re-reads the PSK file and the certificate on SIGHUP; a node without either would exit on it.
  if (nbdTlsPsk || httpTlsCert) process.on('SIGHUP', () => children.forEach((c) => c.kill('SIGHUP')));
  const signalled = new Promise<NodeJS.Signals>((done) => {
    process.once('SIGINT', () => done('SIGINT'));
    process.once('SIGTERM', () => done('SIGTERM'));
  });
  void signalled.then(async (signal) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping every node', { signal });
    await stopAll('SIGTERM');
    log.info('stopped');
    process.exit(0);
  });

  try {
    await Promise.all(listening);
    await ensureVolume(layout, addr, { token: adminToken, ca: httpsCa });
  } catch (err) {
    if (!stopping) {
      stopping = true;
      log.error('cluster did not come up', { err });
      await stopAll('SIGTERM');
    }
    throw err;
  }
  const nbd = children.map((_, i) => addr(layout.nbdPort, i));
  const http = children.map((_, i) => addr(layout.httpPort, i));
  const peer = children.map((_, i) => addr(layout.peerPort, i));
  const [h, p] = [layout.host, layout.nbdPort];
  // With TLS, the clients that take a PSK file (libnbd's tools, qemu) are the ones to show.
  const connect = nbdTlsPsk
    ? [
        `  nbdinfo 'nbds://USER@${h}:${p}/vol0?tls-psk-file=${nbdTlsPsk}'     (USER: a name in the PSK file)`,
        `  qemu-io --object tls-creds-psk,id=tls0,endpoint=client,dir=DIR,username=USER --image-opts driver=nbd,host=${h},port=${p},export=vol0,tls-creds=tls0     (DIR holds the file as keys.psk)`,
      ]
    : [
        `  nbdinfo nbd://${h}:${p}/vol0`,
        `  nbd-client ${h} ${p} /dev/nbd0 -N vol0`,
        `  fio --ioengine=nbd --uri=nbd://${h}:${p}/vol0 --rw=randwrite --bs=4k --iodepth=32 --size=256M --name=rw`,
      ];
  process.stdout.write(
    [
      `raftblock: ${layout.nodes} nodes up, volume vol0 served by every node (data in ${dataDir}, logs in node-N.log)${nbdTlsPsk ? '; NBD requires TLS' : ''}`,
      ...remembered.map((r) => `  with ${r}`),
      ...connect,
      `  raftblock status --server ${http[0]}${adminTokenFile ? ` --token-file ${adminTokenFile}` : ''}${httpsCa ? ` --ca-file ${security.httpTlsCa ?? httpTlsCert}` : ''}     (metrics: ${httpsCa ? 'https' : 'http'}://${http[0]}/metrics)`,
      `Ctrl-C stops every node cleanly.`,
      '',
    ].join('\n'),
  );
  process.stdout.write(JSON.stringify({ event: 'ready', nbd, http, peer, pids: children.map((c) => c.pid) }) + '\n');
  await new Promise(() => undefined);
}

/** What `start` gives every node besides the layout, not remembered (cluster.json). */
export interface NodeTuning {
  /** --nbd-memory-budget, in bytes; undefined: the node's default. */
  nbdMemoryBudgetBytes?: number;
}

/** The `raftblock node` command line (from `node` on) of node `i` (0-based) of `layout`, its data in `dir`. */
export function nodeArguments(layout: Layout, i: number, dir: string, keyPath: string, tuning: NodeTuning): string[] {
  const id = i + 1;
  const addr = (base: number): string => `${layout.host}:${base + i}`;
  const { peerTls, nbdTlsPsk, adminTokenFile, httpTlsCert, httpTlsKey } = layout.security ?? {};
  return [
    'node',
    '--id', String(id),
    '--data', dir,
    '--peer', addr(layout.peerPort),
    '--nbd', addr(layout.nbdPort),
    '--http', addr(layout.httpPort),
    '--labels', `zone=z${id},rack=r${id},host=h${id}`,
    '--cluster-key-file', keyPath,
    ...(peerTls ? ['--peer-tls'] : []),
    ...(nbdTlsPsk ? ['--nbd-tls-psk', nbdTlsPsk] : []),
    ...(adminTokenFile ? ['--admin-token-file', adminTokenFile] : []),
    ...(httpTlsCert && httpTlsKey ? ['--http-tls-cert', httpTlsCert, '--http-tls-key', httpTlsKey] : []),
    ...(tuning.nbdMemoryBudgetBytes !== undefined ? ['--nbd-memory-budget', String(tuning.nbdMemoryBudgetBytes)] : []),
    ...(i === 0 ? ['--bootstrap'] : ['--join', `${layout.host}:${layout.peerPort}`]),
  ];
}

/** DIR/cluster.json, checked enough that a damaged file is named rather than crashing later. */
function readLayout(path: string): Layout {
  let layout: Partial<Layout>;
  try {
    layout = JSON.parse(readFileSync(path, 'utf8')) as Partial<Layout>;
  } catch (err) {
    throw new InvalidArgument(`${path} is not readable JSON (${(err as Error).message}); it records the cluster's ports: mend or restore it`);
  }
  const nodes = layout?.nodes as number;
  // Node 0's port, and the last node's too.
  const isPort = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 1 && (v as number) + nodes - 1 <= maxPort;
  // The bounds the flags have (--nodes, --pg-count): a hand-edited file is held to them too.
  const pgCount = layout?.pgCount;
  if (
    typeof layout !== 'object' || layout === null ||
    !Number.isInteger(nodes) || nodes < 1 || nodes > maxStartNodes ||
    typeof layout.host !== 'string' ||
    !isPort(layout.nbdPort) || !isPort(layout.httpPort) || !isPort(layout.peerPort) ||
    (pgCount !== undefined && (!Number.isInteger(pgCount) || pgCount < 1 || pgCount > maxPgsPerPool))
  ) {
    throw new InvalidArgument(
      `${path} does not describe a cluster (nodes 1..${maxStartNodes}, host, nbdPort, httpPort, peerPort, pgCount 1..${maxPgsPerPool}); mend or restore it`,
    );
  }
  return layout as Layout;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Pool `default` and volume `vol0` exist, every PG of the pool has a leader, and the map
 * survives the loss of a node (group 0 on its voters) when there are three nodes or more.
 */
async function ensureVolume(layout: Layout, addr: (base: number, i: number) => string, access: { token?: string; ca?: Buffer }): Promise<void> {
  const admin = new AdminClient(addr(layout.httpPort, 0), access);
  const deadline = Date.now() + readyTimeoutMs;
  const retry = async <T>(what: string, fn: () => Promise<T | undefined>): Promise<T> => {
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await fn();
        if (v !== undefined) return v;
      } catch (err) {
        last = err;
      }
      await sleep(200);
    }
    throw new Unavailable(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
  };
  await retry('every node to register', async () => ((await admin.map()).nodes.length >= layout.nodes ? true : undefined));
  await retry('pool default', async () => {
    const map = await admin.map();
    if (!map.pools.some((p) => p.name === 'default')) {
      const replicas = defaultReplicas(layout.nodes);
      await admin.createPool({ name: 'default', replicas, pgCount: layout.pgCount ?? defaultPgCount(layout.nodes, replicas), failureDomain: 'zone' }).catch((err) => {
        if (err.code !== 'ALREADY_EXISTS') throw err;
      });
    }
    return true;
  });
  await retry('volume vol0', async () => {
    const map = await admin.map();
    if (!map.volumes.some((v) => v.name === 'vol0')) {
      await admin.createVolume({ name: 'vol0', sizeBytes: defaultVolumeBytes }).catch((err) => {
        if (err.code !== 'ALREADY_EXISTS') throw err;
      });
    }
    return true;
  });
  await retry('a leader in every PG', async () => {
    const map = await admin.map();
    const groups = allGroups(map).filter((g) => g.pool === 'default');
    const led = new Set<number>();
    for (let i = 0; i < layout.nodes; i++) {
      const s = await new AdminClient(addr(layout.httpPort, i), { ...access, timeoutMs: 3000 }).status().catch(() => undefined);
      if (!s || s.epoch < map.epoch) return undefined;
      for (const g of s.groups) if (g.role === 'leader' && g.appliedIndex >= 1) led.add(g.groupId);
    }
    return groups.every((g) => led.has(g.groupId)) ? true : undefined;
  });
  // Group 0 grows from one voter to three in one change once the nodes are connected (then to
  // five with five nodes): a node lost before that would leave the map unchangeable until it
  // came back.
  if (layout.nodes >= 3) {
    const voters = metaVotersWanted(layout.nodes);
    await retry(`the metadata group on ${voters} voters`, async () => {
      const s = await admin.clusterStatus();
      const meta = s.groups.find((g) => g.groupId === metadataGroupId);
      return meta && meta.replicas.length >= voters && meta.health === 'ok' ? true : undefined;
    });
  }
}
