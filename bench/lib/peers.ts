import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, ftruncateSync } from 'node:fs';
import { createServer } from 'node:net';
import { freePortRange } from '../../src/common/ports.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The NBD servers a benchmark runs side by side: raftblock and its peers, each on a loopback
 * TCP port, each over its own file of the same size (or memory). Every server is started in
 * its own process group so that stopping it cannot leave children behind.
 */

/** The repository root: this file runs from dist/bench/lib/. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

/** The export name every server offers (nbdkit accepts any name). */
export const exportName = 'disk';

export interface ServerContext {
  /** Directory for backing files and data, on a real disk. */
  dir: string;
  sizeBytes: number;
  /** When set, node servers run with --cpu-prof into this directory. */
  cpuProfDir?: string;
  /** The raftblock CLI to run (default: this tree's build). */
  cliPath?: string;
}

export interface RunningServer {
  name: string;
  /** An NBD URI fio's nbd engine and nbdinfo accept. */
  uri: string;
  /** The process whose tree holds the server (for CPU accounting). */
  pid: number;
  /** Only processes of this name count as the server's CPU (undefined: the whole tree). */
  cpuComm?: RegExp;
  stop(): Promise<void>;
}

export interface ServerSpec {
  name: string;
  /** Run only when named in `--servers` (a variant of another server, measured on request). */
  onRequest?: boolean;
  /** What an acknowledged write means for this server; printed beside the table. */
  durability: string;
  start(ctx: ServerContext): Promise<RunningServer>;
}

/** A free loopback TCP port (the OS picks it; a small window exists before the server binds). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** A sparse file of exactly `sizeBytes`, created or truncated. */
export function makeSparseFile(path: string, sizeBytes: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
}

/** The export's size as nbdinfo sees it, or undefined while the server is not answering. */
export function probeSize(uri: string): number | undefined {
  const r = spawnSync('nbdinfo', ['--size', uri], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return undefined;
  const n = Number(r.stdout.trim());
  return Number.isFinite(n) ? n : undefined;
}

/** Polls until the server answers the NBD handshake, or throws after `timeoutMs`. */
export async function waitForNbd(uri: string, child: ChildProcess, timeoutMs: number, what: string): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.signalCode ?? child.exitCode}) before serving ${uri}`);
    }
    const size = probeSize(uri);
    if (size !== undefined) return size;
    if (Date.now() > deadline) throw new Error(`${what} did not serve ${uri} within ${timeoutMs} ms`);
    await sleep(200);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Starts a server process in its own group, its stderr kept for error messages. */
export function spawnServer(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { child: ChildProcess; stderrTail: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: env ?? process.env });
  let tail = '';
  child.stderr!.on('data', (b: Buffer) => {
    tail = (tail + b.toString('utf8')).slice(-4000);
  });
  // Keep draining stdout so a chatty server never blocks on a full pipe.
  child.stdout!.on('data', () => {});
  return { child, stderrTail: () => tail };
}

/**
 * Stops a server: `signal` first (the server finishes in-flight work and exits), then SIGKILL
 * to its whole process group after `graceMs`.
 */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut && child.pid !== undefined) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // the group is already gone
    }
    await exited;
  }
}

function tcpUri(port: number, name = exportName): string {
  return `nbd://127.0.0.1:${port}/${name}`;
}

async function startSimple(name: string, cmd: string, args: string[], port: number, ctx: ServerContext): Promise<RunningServer> {
  const { child, stderrTail } = spawnServer(cmd, args);
  const uri = tcpUri(port);
  try {
    const size = await waitForNbd(uri, child, 30_000, name);
    if (size !== ctx.sizeBytes) throw new Error(`${name} serves ${size} bytes, expected ${ctx.sizeBytes}`);
  } catch (e) {
    await stopProcess(child, 'SIGKILL', 1000);
    throw new Error(`${(e as Error).message}\n${stderrTail()}`);
  }
  return { name, uri, pid: child.pid!, stop: () => stopProcess(child) };
}

export const nbdkitMemory: ServerSpec = {
  name: 'nbdkit-memory',
  durability: 'RAM only (sparse array); nothing is durable; the ceiling of client + loopback',
  async start(ctx) {
    const port = await freePort();
    const args = ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '-e', exportName, 'memory', `size=${ctx.sizeBytes}`];
    return startSimple(this.name, 'nbdkit', args, port, ctx);
  },
};

export const nbdkitFile: ServerSpec = {
  name: 'nbdkit-file',
  durability: 'write() into the page cache; FLUSH = fdatasync (not durable until flushed)',
  async start(ctx) {
    const port = await freePort();
    const file = join(ctx.dir, 'nbdkit-file.img');
    makeSparseFile(file, ctx.sizeBytes);
    const args = ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '-e', exportName, 'file', `file=${file}`];
    return startSimple(this.name, 'nbdkit', args, port, ctx);
  },
};

function qemuNbd(name: string, cache: 'none' | 'directsync', durability: string): ServerSpec {
  return {
    name,
    durability,
    async start(ctx) {
      const port = await freePort();
      const file = join(ctx.dir, `${name}.img`);
      makeSparseFile(file, ctx.sizeBytes);
      const args = [
        '-f', 'raw', '-b', '127.0.0.1', '-p', String(port), '-x', exportName,
        `--cache=${cache}`, '--aio=io_uring',
        // persistent, many connections: fio and nbdinfo connect one after another
        '-t', '-e', '16',
        file,
      ];
      return startSimple(this.name, 'qemu-nbd', args, port, ctx);
    },
  };
}

export const qemuNbdNone = qemuNbd(
  'qemu-nbd-none',
  'none',
  'O_DIRECT via io_uring: in the device cache on ack; FLUSH = fdatasync',
);

export const qemuNbdDirectsync = qemuNbd(
  'qemu-nbd-directsync',
  'directsync',
  'O_DIRECT|O_DSYNC via io_uring: durable on ack',
);

/**
 * `raftblock export-file`: prints `{"event":"listening","nbd":"HOST:PORT",...}` on stdout once
 * it serves, and exits cleanly on SIGTERM.
 */
export const raftblockExportFile: ServerSpec = {
  name: 'raftblock',
  durability: 'pwrite() into the page cache (node:fs; small requests synchronous, larger ones on the libuv thread pool); FLUSH = fdatasync (coalesced)',
  async start(ctx) {
    const file = join(ctx.dir, 'raftblock.img');
    mkdirSync(ctx.dir, { recursive: true });
    const nodeArgs: string[] = [];
    if (ctx.cpuProfDir) {
      mkdirSync(ctx.cpuProfDir, { recursive: true });
      nodeArgs.push('--cpu-prof', '--cpu-prof-dir', ctx.cpuProfDir);
    }
    const args = [...nodeArgs, ctx.cliPath ?? cliPath, 'export-file', file, '--name', exportName, '--listen', '127.0.0.1:0', '--size', String(ctx.sizeBytes)];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => {
      stderr = (stderr + b.toString('utf8')).slice(-4000);
    });
    try {
      const hostPort = await new Promise<string>((resolve, reject) => {
        let buf = '';
        const timer = setTimeout(() => reject(new Error('raftblock export-file printed no listening line within 30 s')), 30_000);
        child.stdout!.on('data', (b: Buffer) => {
          buf += b.toString('utf8');
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            try {
              const ev = JSON.parse(line) as { event?: string; nbd?: string };
              if (ev.event === 'listening' && typeof ev.nbd === 'string') {
                clearTimeout(timer);
                resolve(ev.nbd);
              }
            } catch {
              // not a JSON line: ignore
            }
          }
        });
        child.once('exit', (code, sig) => {
          clearTimeout(timer);
          reject(new Error(`raftblock export-file exited (${sig ?? code}) before listening`));
        });
      });
      const uri = `nbd://${hostPort}/${exportName}`;
      const size = await waitForNbd(uri, child, 30_000, this.name);
      if (size !== ctx.sizeBytes) throw new Error(`raftblock serves ${size} bytes, expected ${ctx.sizeBytes}`);
      return { name: this.name, uri, pid: child.pid!, stop: () => stopProcess(child) };
    } catch (e) {
      await stopProcess(child, 'SIGKILL', 1000);
      throw new Error(`${(e as Error).message}\n${stderr}`);
    }
  },
};

export const allNbdServers: readonly ServerSpec[] = [raftblockExportFile, nbdkitMemory, nbdkitFile, qemuNbdNone, qemuNbdDirectsync];


/**
 * `raftblock start`: an embedded cluster of `nodes` node processes on this machine serving
 * volume `vol0`; node i serves NBD on nbd-port + i. It prints
 * `{"event":"ready","nbd":[...],"pids":[...]}` once every PG has a leader. Its CPU is every
 * `node` process in the tree of the start command (the nodes and the supervisor).
 */
/** `raftblock start` with `nodes` nodes; `peerTls`: its peers speak TLS (`--peer-tls`). */
export function raftblockCluster(nodes: number, peerTls = false, readyTimeoutMs = 180_000): ServerSpec {
  return {
    name: peerTls ? 'raftblock-cluster-tls' : 'raftblock-cluster',
    onRequest: peerTls,
    durability: `raftblock start${peerTls ? ' --peer-tls' : ''}, ${nodes} replicas: acknowledged once durable on a quorum (WAL with O_DSYNC)`,
    async start(ctx) {
      // NBD, HTTP and peer ports: `nodes` consecutive free ports each.
      const base = await freePortRange(3 * nodes);
      const nbdPort = base;
      const dataDir = join(ctx.dir, 'data');
      mkdirSync(dataDir, { recursive: true });
      const nodeArgs: string[] = [];
      if (ctx.cpuProfDir) {
        mkdirSync(ctx.cpuProfDir, { recursive: true });
        // start passes its own execArgv to every node, so each node writes its profile too.
        nodeArgs.push('--cpu-prof', '--cpu-prof-dir', ctx.cpuProfDir);
      }
      const args = [
        ...nodeArgs, ctx.cliPath ?? cliPath, 'start', '--data', dataDir, '--nodes', String(nodes),
        '--nbd-port', String(nbdPort), '--http-port', String(base + nodes), '--peer-port', String(base + 2 * nodes),
        ...(peerTls ? ['--peer-tls'] : []),
      ];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let stderr = '';
      child.stderr!.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString('utf8')).slice(-4000);
      });
      try {
        const nbd = await new Promise<string>((resolve, reject) => {
          let buf = '';
          const timer = setTimeout(() => reject(new Error(`raftblock start was not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
          child.stdout!.on('data', (b: Buffer) => {
            buf += b.toString('utf8');
            for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (!line.startsWith('{')) continue;
              try {
                const ev = JSON.parse(line) as { event?: string; nbd?: string[] };
                if (ev.event === 'ready' && Array.isArray(ev.nbd) && ev.nbd.length > 0) {
                  clearTimeout(timer);
                  resolve(ev.nbd[0]);
                } else if (ev.event === 'node-exit' || ev.event === 'node-restarted') {
                  process.stderr.write(`[bench] raftblock start: ${line}\n`);
                }
              } catch {
                // not a JSON line: ignore
              }
            }
          });
          child.once('exit', (code, sig) => {
            clearTimeout(timer);
            reject(new Error(`raftblock start exited (${sig ?? code}) before ready`));
          });
        });
        const uri = `nbd://${nbd}/vol0`;
        await waitForNbd(uri, child, 30_000, this.name);
        // Ctrl-C is the documented way to stop it: every node shuts down cleanly.
        return { name: this.name, uri, pid: child.pid!, cpuComm: /^node/, stop: () => stopProcess(child, 'SIGINT', 40_000) };
      } catch (e) {
        await stopProcess(child, 'SIGTERM', 5000);
        throw new Error(`${(e as Error).message}\n${stderr}\n(node logs in ${dataDir})`);
      }
    },
  };
}
