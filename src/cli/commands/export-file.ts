/**
 * `raftblock export-file PATH --name NAME --listen HOST:PORT [--size BYTES] [--readonly]
 *  [--metrics HOST:PORT] [--description TEXT] [--tls-psk FILE] [--max-connections N]
 *  [--handshake-limit SECONDS] [--memory-budget BYTES]`
 *
 * Serves one local file over NBD until SIGINT/SIGTERM, then stops accepting, lets in-flight
 * requests finish, flushes and exits 0. On start it prints one JSON line to stdout:
 * {"event":"listening","nbd":"HOST:PORT","metrics":"HOST:PORT"|null} with the real ports.
 *
 * Holes and deallocation use the native addon (SEEK_DATA/SEEK_HOLE, fallocate) when it loads;
 * RAFTBLOCK_IO=fs forces the portable fallback, RAFTBLOCK_IO=uring refuses to start without it.
 */
import type { Command } from 'commander';
import { formatHostPort, parseCount, parseHostPort, parseSecondsToMs, parseSize } from '../../common/address.js';
import { RaftblockError } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { parseIoBackendChoice } from '../../io/select.js';
import { createRegistry, startMetricsServer, type MetricsServer } from '../../metrics/server.js';
import { FileBackend } from '../../nbd/file-backend.js';
import { defaultMaxNbdConnections, defaultNbdHandshakeLimitMs, NbdServer } from '../../nbd/server.js';
import { PskKeys } from '../../nbd/tls-psk.js';
import { reloadOnSighup } from '../../common/sighup-reload.js';
import { nbdMemoryBudgetHelp, parseNbdMemoryBudget } from '../nbd-memory-budget-flag.js';

interface ExportFileOptions {
  name: string;
  listen: string;
  size?: string;
  readonly?: boolean;
  metrics?: string;
  description?: string;
  syncIoMax?: string;
  tlsPsk?: string;
  maxConnections?: string;
  handshakeLimit?: string;
  memoryBudget?: string;
}

export function register(program: Command): void {
  program
    .command('export-file')
    .description('serve a local file over NBD (created sparse with --size if absent)')
    .argument('<path>', 'file to export')
    .requiredOption('--name <name>', 'export name')
    .option('--listen <host:port>', 'NBD listen address', '127.0.0.1:10809')
    .option('--size <bytes>', 'size of the file to create if it does not exist (e.g. 1G)')
    .option('--readonly', 'export read-only')
    .option('--metrics <host:port>', 'serve Prometheus /metrics and /healthz here')
    .option('--description <text>', 'export description shown to clients')
    .option('--max-connections <n>', `open client connections at most; one more is closed at once (default ${defaultMaxNbdConnections})`)
    .option('--handshake-limit <seconds>', `a client that has not finished its handshake by then is disconnected (default ${defaultNbdHandshakeLimitMs / 1000})`)
    .option('--memory-budget <bytes>', nbdMemoryBudgetHelp)
    .option('--tls-psk <file>', 'require TLS: clients prove a key of this PSK file (username:hexkey lines, as psktool writes; re-read on SIGHUP)')
    .option('--sync-io-max <bytes>', 'tuning: reads/writes up to this size use synchronous pread/pwrite (0 = always async)')
    .action(async (path: string, opts: ExportFileOptions) => {
      await exportFile(path, opts);
    });
}

async function exportFile(path: string, opts: ExportFileOptions): Promise<void> {
  const log = createLogger('export-file');
  const listen = parseHostPort(opts.listen, '--listen');
  const metricsAddr = opts.metrics ? parseHostPort(opts.metrics, '--metrics') : undefined;
  const createSizeBytes = opts.size !== undefined ? parseSize(opts.size, '--size') : undefined;
  const syncIoMaxBytes = opts.syncIoMax !== undefined ? parseSize(opts.syncIoMax, '--sync-io-max') : undefined;
  const tlsPsk = opts.tlsPsk !== undefined ? PskKeys.fromFile(opts.tlsPsk) : undefined;
  const maxConnections = opts.maxConnections !== undefined ? parseCount(opts.maxConnections, '--max-connections') : undefined;
  const handshakeLimitMs = parseSecondsToMs(opts.handshakeLimit, '--handshake-limit');
  const memoryBudgetBytes = parseNbdMemoryBudget(opts.memoryBudget, '--memory-budget');
  const ioChoice = parseIoBackendChoice(process.env.RAFTBLOCK_IO);
  const native = ioChoice === 'fs' ? { error: 'RAFTBLOCK_IO=fs' } : undefined;
  const backend = await FileBackend.open(path, { createSizeBytes, readOnly: opts.readonly ?? false, syncIoMaxBytes, native });
  if (backend.sparseMode.kind === 'fallback') {
    if (ioChoice === 'uring') {
      await backend.close();
      throw new RaftblockError('IO_BACKEND_UNAVAILABLE', `native sparse-file support unavailable: ${backend.sparseMode.reason}`);
    }
    log.info('holes inferred from zero blocks, fallocate(1) for large trims', { sparse: 'fallback', reason: backend.sparseMode.reason });
  } else {
    log.info('holes from SEEK_DATA/SEEK_HOLE, trims with fallocate', { sparse: 'native' });
  }
  if (createSizeBytes !== undefined && createSizeBytes !== backend.size()) {
    log.warn('file exists with a different size; serving its actual size', { path, sizeBytes: backend.size(), requested: createSizeBytes });
  }
  const registry = createRegistry();
  const server = new NbdServer({
    exports: new Map([[opts.name, { backend, description: opts.description }]]),
    registry,
    tlsPsk,
    maxConnections,
    handshakeLimitMs,
    memoryBudgetBytes,
  });
  // Signal handlers go in before the "listening" line: a supervisor may signal right after it.
  let stopping = false;
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal });
      resolve();
    };
    process.once('SIGINT', () => onSignal('SIGINT'));
    process.once('SIGTERM', () => onSignal('SIGTERM'));
  });
  const pskFile = opts.tlsPsk;
  if (pskFile !== undefined) reloadOnSighup('the NBD TLS keys', pskFile, () => server.setTlsPsk(PskKeys.fromFile(pskFile)), log);
  const nbdAddr = await server.listen(listen);
  let metrics: MetricsServer | undefined;
  if (metricsAddr) metrics = await startMetricsServer(metricsAddr, registry, () => (stopping ? 'shutting down' : null));
  process.stdout.write(
    JSON.stringify({ event: 'listening', nbd: formatHostPort(nbdAddr), metrics: metrics ? formatHostPort(metrics.address) : null }) + '\n',
  );
  log.info('serving', { path, name: opts.name, sizeBytes: backend.size(), readOnly: backend.capabilities.readOnly, nbd: formatHostPort(nbdAddr) });
  await stopped;
  await server.close();
  await backend.close();
  if (metrics) await metrics.close();
  log.info('stopped');
  process.exit(0);
}
