/**
 * `npm run bench -- nbd-tls [--size BYTES] [--repeat N] [--dir DIR] [--out FILE]`: what TLS
 * costs on the NBD path, against nbdkit's TLS (GnuTLS) on the same kind of export. fio's nbd
 * engine cannot take a PSK file, so nbdcopy (libnbd) moves the bytes: a random image written
 * to the export, then the export read to `null:`, with nbdcopy's defaults (256 KiB requests,
 * 4 connections, 64 requests in flight each). Servers: `raftblock export-file` and `nbdkit
 * file`, each plain and with TLS-PSK, started once; their runs interleaved; the median by
 * throughput reported, with the server's CPU per MiB.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseBenchOptionsOrExit } from './lib/args.js';
import { treeCpuUs } from './lib/cpu.js';
import { cliPath, exportName, freePort, makeSparseFile, probeSize, sleep, spawnServer, stopProcess } from './lib/peers.js';

interface Variant {
  name: string;
  tls: boolean;
  start(dir: string, sizeBytes: number, pskFile: string): Promise<{ uri: string; pid: number; stop(): Promise<void> }>;
}

interface Row {
  server: string;
  direction: 'write' | 'read';
  mibps: number;
  cpuUsPerMiB: number;
}

const user = 'bench';

function uriOf(hostPort: string, tls: boolean, pskFile: string): string {
  return tls ? `nbds://${user}@${hostPort}/${exportName}?tls-psk-file=${pskFile}` : `nbd://${hostPort}/${exportName}`;
}

async function served(uri: string, pid: number, stderrTail: () => string, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (probeSize(uri) === undefined) {
    if (Date.now() > deadline) throw new Error(`${what} (pid ${pid}) did not serve ${uri} within 30 s\n${stderrTail()}`);
    await sleep(200);
  }
}

/** A server started as `launch` says, on a free loopback port, served once it answers. */
function variant(name: string, tls: boolean, launch: (file: string, port: number, pskFile: string, sizeBytes: number) => { cmd: string; args: string[] }): Variant {
  return {
    name,
    tls,
    async start(dir, sizeBytes, pskFile) {
      const port = await freePort();
      const { cmd, args } = launch(join(dir, `${name}.img`), port, pskFile, sizeBytes);
      const { child, stderrTail } = spawnServer(cmd, args);
      const uri = uriOf(`127.0.0.1:${port}`, tls, pskFile);
      await served(uri, child.pid!, stderrTail, name);
      return { uri, pid: child.pid!, stop: () => stopProcess(child) };
    },
  };
}

const raftblock = (tls: boolean): Variant =>
  variant(tls ? 'raftblock-tls' : 'raftblock', tls, (file, port, pskFile, sizeBytes) => ({
    cmd: process.execPath,
    args: [cliPath, 'export-file', file, '--name', exportName, '--listen', `127.0.0.1:${port}`, '--size', String(sizeBytes), ...(tls ? ['--tls-psk', pskFile] : [])],
  }));

const nbdkit = (tls: boolean): Variant =>
  variant(tls ? 'nbdkit-file-tls' : 'nbdkit-file', tls, (file, port, pskFile, sizeBytes) => {
    makeSparseFile(file, sizeBytes);
    return {
      cmd: 'nbdkit',
      args: ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '-e', exportName, ...(tls ? ['--tls=require', `--tls-psk=${pskFile}`] : []), 'file', `file=${file}`],
    };
  });

function nbdcopy(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('nbdcopy', args, { timeout: 600_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`nbdcopy ${args.join(' ')}: ${stderr || err.message}`)) : resolve()));
  });
}

function median(rows: Row[]): Row {
  const sorted = [...rows].sort((a, b) => a.mibps - b.mibps);
  return sorted[Math.floor(sorted.length / 2)];
}

export async function run(argv: string[]): Promise<void> {
  const opts = parseBenchOptionsOrExit(argv, { runtimeS: 0, sizeBytes: 1024 * 1024 * 1024 });
  const variants = [raftblock(false), nbdkit(false), raftblock(true), nbdkit(true)].filter((v) => opts.servers.length === 0 || opts.servers.includes(v.name));
  const dir = mkdtempSync(join(opts.dir, 'raftblock-bench-tls-'));
  const log = (s: string): void => void process.stderr.write(`[bench] ${s}\n`);
  log(`bench nbd-tls: ${variants.length} servers × write+read × ${opts.repeat} runs of ${opts.sizeBytes} bytes; ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}; files in ${dir}`);
  const pskFile = join(dir, 'keys.psk');
  writeFileSync(pskFile, `${user}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  // The source image: random (nbdcopy would send zero runs as zeroing, not data), read from the page cache.
  const source = join(dir, 'source.raw');
  const fd = openSync(source, 'w');
  const chunk = Buffer.allocUnsafe(1 << 20);
  for (let off = 0; off < opts.sizeBytes; off += chunk.length) writeSync(fd, randomFillSync(chunk), 0, Math.min(chunk.length, opts.sizeBytes - off), off);
  closeSync(fd);
  const servers: { v: Variant; s: Awaited<ReturnType<Variant['start']>> }[] = [];
  const rows: Row[] = [];
  try {
    for (const v of variants) servers.push({ v, s: await v.start(dir, opts.sizeBytes, pskFile) });
    const mib = opts.sizeBytes / (1 << 20);
    for (let round = 0; round < opts.repeat; round++) {
      for (const { v, s } of servers) {
        for (const direction of ['write', 'read'] as const) {
          const cpu0 = treeCpuUs(s.pid);
          const t0 = performance.now();
          await nbdcopy(direction === 'write' ? [source, s.uri] : [s.uri, 'null:']);
          const seconds = (performance.now() - t0) / 1000;
          const row = { server: v.name, direction, mibps: mib / seconds, cpuUsPerMiB: (treeCpuUs(s.pid) - cpu0) / mib };
          rows.push(row);
          log(`${v.name} ${direction}: ${row.mibps.toFixed(1)} MiB/s, server CPU ${row.cpuUsPerMiB.toFixed(0)} µs/MiB`);
        }
      }
    }
  } finally {
    for (const { s } of servers) await s.stop();
    if (!opts.keep) rmSync(dir, { recursive: true, force: true });
  }
  const medians = variants.flatMap((v) => (['write', 'read'] as const).map((d) => median(rows.filter((r) => r.server === v.name && r.direction === d))));
  const peerOf = (name: string): string => name.replace('raftblock', 'nbdkit-file');
  const lines = [
    '| direction | server | MiB/s | server CPU µs/MiB | raftblock ÷ nbdkit (same mode) |',
    '|---|---|---:|---:|---:|',
    ...medians.map((r) => {
      const peer = r.server.startsWith('raftblock') ? medians.find((p) => p.server === peerOf(r.server) && p.direction === r.direction) : undefined;
      return `| ${r.direction} | ${r.server} | ${r.mibps.toFixed(1)} | ${r.cpuUsPerMiB.toFixed(0)} | ${peer ? (r.mibps / peer.mibps).toFixed(2) + '×' : ''} |`;
    }),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  if (opts.out) writeFileSync(opts.out, JSON.stringify(medians, null, 2) + '\n');
}
