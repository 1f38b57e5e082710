/**
 * `raftblock volume create|list|resize|delete`: manage volumes through a node's admin API
 * (src/cluster/admin-client.ts). `--server HOST:PORT` picks the node (default: the first node
 * of `raftblock start`, or $RAFTBLOCK_SERVER); `--json` prints the API's answer as JSON.
 * Errors print `raftblock: MESSAGE [CODE]` and exit 2 (bad usage: commander's exit 1).
 */
import type { Command } from 'commander';
import { parseSize } from '../../common/address.js';
import { InvalidArgument } from '../../common/errors.js';
import { AdminClient, defaultAdminServer, type AdminClientOptions } from '../../cluster/admin-client.js';
import { readAdminToken } from '../../cluster/admin-token.js';
import { readCaFile } from '../../cluster/http-tls.js';
import type { Volume } from '../../cluster/map.js';

interface CommonOptions {
  server: string;
  tokenFile?: string;
  caFile?: string;
  json?: boolean;
}

/** The admin server: --server, else $RAFTBLOCK_SERVER, else the local `raftblock start` node. */
export function serverDefault(): string {
  return process.env.RAFTBLOCK_SERVER || defaultAdminServer;
}

export function addCommonOptions(cmd: Command): Command {
  return cmd
    .option('--server <host:port>', "a node's HTTP admin address", serverDefault())
    .option('--token-file <path>', "the admin token, for nodes started with --admin-token-file (default: $RAFTBLOCK_ADMIN_TOKEN_FILE)", process.env.RAFTBLOCK_ADMIN_TOKEN_FILE || undefined)
    .option('--ca-file <path>', 'speak HTTPS to nodes started with --http-tls-cert, trusting this PEM CA file (default: $RAFTBLOCK_CA_FILE)', process.env.RAFTBLOCK_CA_FILE || undefined)
    .option('--json', 'print JSON instead of text');
}

/** A client for the options addCommonOptions parsed. */
export function adminClientFor(opts: { server: string; tokenFile?: string; caFile?: string }, extra: AdminClientOptions = {}): AdminClient {
  return new AdminClient(opts.server, {
    ...extra,
    ...(opts.tokenFile === undefined ? {} : { token: readAdminToken(opts.tokenFile) }),
    ...(opts.caFile === undefined ? {} : { ca: readCaFile(opts.caFile) }),
  });
}

/** `1073741824` → `1 GiB`; keeps exact values exact (`1536 MiB`, not `1.5 GiB`). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = bytes;
  while (i < units.length - 1 && v >= 1024 && v % 1024 === 0) {
    v /= 1024;
    i++;
  }
  return `${v} ${units[i]}`;
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/** Renders rows as aligned columns (first row is the header). */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}

function describeVolume(v: Volume): string {
  return `${v.name}: ${formatBytes(v.sizeBytes)} in pool ${v.pool} (id ${v.id}, ${formatBytes(v.extentBytes)} extents)`;
}

function sizeOption(text: string | undefined, what: string): number {
  if (text === undefined) throw new InvalidArgument(`${what}: --size is required`);
  const size = parseSize(text, '--size');
  if (size === 0) throw new InvalidArgument('--size must be more than 0');
  return size;
}

export function register(program: Command): void {
  const volume = program.command('volume').description('create, list, resize and delete volumes');

  addCommonOptions(
    volume
      .command('create <name>')
      .description('create a volume')
      .requiredOption('--size <bytes>', 'size, e.g. 10G (binary units; a multiple of 4 KiB)')
      .option('--pool <name>', 'pool to place it in (default: default)')
      .option('--extent-size <bytes>', 'extent size, a power of two from 64K to 1G (default 4M)'),
  ).action(async (name: string, opts: CommonOptions & { size: string; pool?: string; extentSize?: string }) => {
    const sizeBytes = sizeOption(opts.size, 'volume create');
    const extentBytes = opts.extentSize === undefined ? undefined : parseSize(opts.extentSize, '--extent-size');
    const res = await adminClientFor(opts).createVolume({
      name,
      sizeBytes,
      ...(opts.pool === undefined ? {} : { pool: opts.pool }),
      ...(extentBytes === undefined ? {} : { extentBytes }),
    });
    if (opts.json) printJson(res);
    else if (res.changed === false) print(`volume ${describeVolume(res.volume)} already exists as asked (map epoch ${res.epoch})`);
    else print(`created volume ${describeVolume(res.volume)} at map epoch ${res.epoch}`);
  });

  addCommonOptions(volume.command('list').description('list volumes')).action(async (opts: CommonOptions) => {
    const res = await adminClientFor(opts).listVolumes();
    if (opts.json) return printJson(res);
    if (res.volumes.length === 0) return print(`no volumes (map epoch ${res.epoch})`);
    const rows = [['NAME', 'ID', 'POOL', 'SIZE', 'EXTENT']];
    for (const v of res.volumes) rows.push([v.name, String(v.id), v.pool, formatBytes(v.sizeBytes), formatBytes(v.extentBytes)]);
    print(table(rows));
  });

  addCommonOptions(
    volume
      .command('resize <name>')
      .description('grow (or, with --shrink, shrink) a volume')
      .requiredOption('--size <bytes>', 'new size, e.g. 20G')
      .option('--shrink', 'allow a smaller size: the data past the new end is discarded'),
  ).action(async (name: string, opts: CommonOptions & { size: string; shrink?: boolean }) => {
    const sizeBytes = sizeOption(opts.size, 'volume resize');
    const res = await adminClientFor(opts).resizeVolume(name, { sizeBytes, ...(opts.shrink ? { allowShrink: true } : {}) });
    if (opts.json) printJson(res);
    else print(`resized volume ${describeVolume(res.volume)} at map epoch ${res.epoch}`);
  });

  addCommonOptions(volume.command('delete <name>').description('delete a volume and its data')).action(async (name: string, opts: CommonOptions) => {
    const res = await adminClientFor(opts).deleteVolume(name);
    if (opts.json) printJson(res);
    else print(`deleted volume ${res.volume.name} at map epoch ${res.epoch}`);
  });
}
