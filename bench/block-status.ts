import { spawnSync } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openBlockIo } from '../src/io/select.js';
import { NBD_CMD_BLOCK_STATUS, NBD_CMD_READ, NBD_CMD_WRITE_ZEROES } from '../src/nbd/protocol.js';
import { TinyClient } from '../test/unit/nbd-client-helper.js';
import { parseBenchOptionsOrExit } from './lib/args.js';
import { raftblockExportFile, type RunningServer } from './lib/peers.js';

/**
 * `npm run bench -- block-status [--size BYTES] [--repeat N] [--dir DIR] [--cli PATH] [--out FILE]`:
 * BLOCK_STATUS of `raftblock export-file`, in two parts.
 *
 * map: a file of `--size` bytes (default 256 MiB) whose 4 KiB blocks go data, hole, unwritten
 * (FALLOC_FL_ZERO_RANGE), data, ...: one extent per block. Timed: `nbdinfo --map` of the whole
 * export, and the same walk by one client asking BLOCK_STATUS again from where each reply ends.
 *
 * stall: a file of `stallFileBytes` written with data; one client punches it all with one
 * WRITE_ZEROES (no NO_HOLE: FALLOC_FL_PUNCH_HOLE on the export's io_uring ring), a second asks
 * BLOCK_STATUS of the same file just after (or, in the read runs, READs a punched MiB: short
 * reads are synchronous, and a READ of zeros asks lseek whether it is a hole), and a third connects every millisecond and times
 * the server's greeting, which only the event loop sends: its worst wait is how long the
 * process served nobody (and, over half a second before the WRITE_ZEROES, the machine's noise).
 * ext4 makes lseek and FIEMAP wait for the punch.
 *
 * Each part runs `--repeat` times (default 3); medians, and the worst greeting wait, printed.
 */

const blockBytes = 4096;
/** Written, then punched by one WRITE_ZEROES (NBD lengths are 32-bit: below 4 GiB). */
const stallFileBytes = 2 * 1024 * 1024 * 1024;
/** Range of the BLOCK_STATUS asked during the punch. */
const stallStatusBytes = 64 * 1024 * 1024;
/** Length of the READ asked during the punch (the export reads up to 1 MiB synchronously). */
const stallReadBytes = 1024 * 1024;
/** Pause between two greeting probes. */
const probeIntervalMs = 1;
/** Delay from the WRITE_ZEROES to the BLOCK_STATUS (the punch is under way by then). */
const statusDelayMs = 20;
/** Probing before the WRITE_ZEROES, for the greeting waits of an idle server. */
const idleProbeMs = 500;

interface MapResult {
  nbdinfoMs: number;
  walkMs: number;
  requests: number;
  extents: number;
}

type StallAsk = 'status' | 'read';

interface StallResult {
  /** What the second client asked during the punch. */
  ask: StallAsk;
  /** The worst greeting wait over `idleProbeMs` before the WRITE_ZEROES: the machine's noise. */
  idleWorstGreetingMs: number;
  zeroMs: number;
  /** How long the BLOCK_STATUS (or READ) asked during the punch took. */
  askMs: number;
  worstGreetingMs: number;
  probes: number;
}

export async function run(argv: string[]): Promise<void> {
  const opts = parseBenchOptionsOrExit(argv, { runtimeS: 1, sizeBytes: 256 * 1024 * 1024 });
  const repeat = Math.max(opts.repeat, 3);
  const root = mkdtempSync(join(opts.dir, 'raftblock-bench-bs-'));
  try {
    const maps: MapResult[] = [];
    const mapDir = join(root, 'map');
    await makeFragmentedFile(join(mapDir, 'raftblock.img'), opts.sizeBytes);
    const server = await raftblockExportFile.start({ dir: mapDir, sizeBytes: opts.sizeBytes, cliPath: opts.cliPath });
    try {
      for (let i = 0; i < repeat; i++) maps.push(await timeMap(server, opts.sizeBytes));
    } finally {
      await server.stop();
    }

    const stalls: StallResult[] = [];
    const reads: StallResult[] = [];
    for (let i = 0; i < repeat; i++) {
      for (const ask of ['status', 'read'] as const) {
        const dir = join(root, `stall-${ask}-${i}`);
        writeDataFile(join(dir, 'raftblock.img'), stallFileBytes);
        const s = await raftblockExportFile.start({ dir, sizeBytes: stallFileBytes, cliPath: opts.cliPath });
        try {
          (ask === 'status' ? stalls : reads).push(await timeStall(s, ask));
        } finally {
          await s.stop();
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }

    const f = (x: number): string => x.toFixed(1);
    const out = {
      cli: opts.cliPath ?? 'this tree',
      map: { sizeBytes: opts.sizeBytes, extents: maps[0].extents, requests: maps[0].requests, nbdinfoMs: median(maps.map((m) => m.nbdinfoMs)), walkMs: median(maps.map((m) => m.walkMs)), runs: maps },
      stall: { fileBytes: stallFileBytes, statusBytes: stallStatusBytes, ...summarizeStalls(stalls) },
      readStall: { fileBytes: stallFileBytes, readBytes: stallReadBytes, ...summarizeStalls(reads) },
    };
    process.stdout.write(
      [
        `block-status (${out.cli})`,
        `map:   ${opts.sizeBytes / 1048576} MiB, ${out.map.extents} extents in ${out.map.requests} BLOCK_STATUS replies: ` +
          `walk ${f(out.map.walkMs)} ms, nbdinfo --map ${f(out.map.nbdinfoMs)} ms (medians of ${repeat})`,
        `stall: WRITE_ZEROES of ${stallFileBytes / 1073741824} GiB ${f(out.stall.zeroMs)} ms; BLOCK_STATUS during it ${f(out.stall.askMs)} ms; ` +
          `greeting wait worst ${f(out.stall.worstGreetingMs)} ms (median of the runs' worst ${f(out.stall.medianWorstGreetingMs)} ms; ` +
          `idle server ${f(out.stall.idleWorstGreetingMs)} ms)`,
        `  per run: ${stalls.map((s) => `zero ${f(s.zeroMs)} / status ${f(s.askMs)} / worst greeting ${f(s.worstGreetingMs)} ms (${s.probes} probes)`).join('; ')}`,
        `stall: WRITE_ZEROES of ${stallFileBytes / 1073741824} GiB ${f(out.readStall.zeroMs)} ms; READ of ${stallReadBytes / 1048576} MiB during it ${f(out.readStall.askMs)} ms; ` +
          `greeting wait worst ${f(out.readStall.worstGreetingMs)} ms (median of the runs' worst ${f(out.readStall.medianWorstGreetingMs)} ms; ` +
          `idle server ${f(out.readStall.idleWorstGreetingMs)} ms)`,
        `  per run: ${reads.map((s) => `zero ${f(s.zeroMs)} / read ${f(s.askMs)} / worst greeting ${f(s.worstGreetingMs)} ms (${s.probes} probes)`).join('; ')}`,
        '',
      ].join('\n'),
    );
    if (opts.out) {
      const fd = openSync(opts.out, 'w');
      writeSync(fd, JSON.stringify(out, null, 2) + '\n');
      closeSync(fd);
    }
  } finally {
    if (!opts.keep) rmSync(root, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** Medians of a part's runs, and its worst greeting waits. */
function summarizeStalls(runs: StallResult[]): { zeroMs: number; askMs: number; worstGreetingMs: number; medianWorstGreetingMs: number; idleWorstGreetingMs: number; runs: StallResult[] } {
  return {
    zeroMs: median(runs.map((s) => s.zeroMs)),
    askMs: median(runs.map((s) => s.askMs)),
    worstGreetingMs: Math.max(...runs.map((s) => s.worstGreetingMs)),
    medianWorstGreetingMs: median(runs.map((s) => s.worstGreetingMs)),
    idleWorstGreetingMs: Math.max(...runs.map((s) => s.idleWorstGreetingMs)),
    runs,
  };
}

/** Blocks cycle data, hole, unwritten: written through O_DIRECT, zeroed with ZERO_RANGE. */
async function makeFragmentedFile(path: string, sizeBytes: number): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const io = await openBlockIo({ backend: 'uring', probeDir: dirname(path) });
  try {
    const f = await io.open(path, { create: true });
    try {
      await f.truncate(sizeBytes);
      const data = io.allocAligned(blockBytes).fill(0x5a);
      const batch: Promise<void>[] = [];
      for (let block = 0; block * blockBytes < sizeBytes; block++) {
        const at = block * blockBytes;
        if (block % 3 === 0) batch.push(f.pwrite(data, at));
        else if (block % 3 === 2) batch.push(f.zeroRange(at, blockBytes));
        if (batch.length >= 256) await Promise.all(batch.splice(0));
      }
      await Promise.all(batch);
      await f.fdatasync();
    } finally {
      await f.close();
    }
  } finally {
    await io.close();
  }
}

/** `bytes` of data, durable, so that a punch has extents to free. */
function writeDataFile(path: string, bytes: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const chunk = Buffer.alloc(1024 * 1024, 0xa7);
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < bytes; at += chunk.length) writeSync(fd, chunk, 0, chunk.length, at);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function portOf(uri: string): number {
  return Number(/:(\d+)\//.exec(uri)![1]);
}

async function timeMap(server: RunningServer, sizeBytes: number): Promise<MapResult> {
  const t0 = performance.now();
  const r = spawnSync('nbdinfo', ['--map', server.uri], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const nbdinfoMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`nbdinfo --map failed: ${r.stderr}`);
  const c = await TinyClient.connect(portOf(server.uri));
  try {
    await c.handshake('disk');
    let pos = 0;
    let requests = 0;
    let extents = 0;
    const t1 = performance.now();
    while (pos < sizeBytes) {
      c.send(NBD_CMD_BLOCK_STATUS, pos, Math.min(sizeBytes - pos, 0xffff_f000));
      const reply = await c.nextReply();
      if (reply.error !== 0 || !reply.descriptors) throw new Error(`BLOCK_STATUS at ${pos} failed: ${reply.error}`);
      requests++;
      for (const d of reply.descriptors) {
        pos += d.length;
        extents++;
      }
    }
    return { nbdinfoMs, walkMs: performance.now() - t1, requests, extents };
  } finally {
    c.socket.destroy();
  }
}

async function timeStall(server: RunningServer, ask: StallAsk): Promise<StallResult> {
  const port = portOf(server.uri);
  const zeroer = await TinyClient.connect(port);
  const asker = await TinyClient.connect(port);
  await zeroer.handshake('disk');
  await asker.handshake('disk');
  let probing = true;
  let worstGreetingMs = 0;
  let probes = 0;
  const prober = (async () => {
    while (probing) {
      worstGreetingMs = Math.max(worstGreetingMs, await greetingMs(port));
      probes++;
      await new Promise((r) => setTimeout(r, probeIntervalMs));
    }
  })();
  try {
    await new Promise((r) => setTimeout(r, idleProbeMs));
    const idleWorstGreetingMs = worstGreetingMs;
    worstGreetingMs = 0;
    probes = 0;
    const t0 = performance.now();
    zeroer.send(NBD_CMD_WRITE_ZEROES, 0, stallFileBytes - blockBytes);
    const zeroed = zeroer.nextReply().then((r) => {
      if (r.error !== 0) throw new Error(`WRITE_ZEROES failed: ${r.error}`);
      return performance.now() - t0;
    });
    await new Promise((r) => setTimeout(r, statusDelayMs));
    const t1 = performance.now();
    if (ask === 'status') asker.send(NBD_CMD_BLOCK_STATUS, 0, stallStatusBytes);
    else asker.send(NBD_CMD_READ, 0, stallReadBytes);
    const status = await asker.nextReply();
    if (status.error !== 0) throw new Error(`${ask === 'status' ? 'BLOCK_STATUS' : 'READ'} failed: ${status.error}`);
    const askMs = performance.now() - t1;
    const zeroMs = await zeroed;
    return { ask, idleWorstGreetingMs, zeroMs, askMs, worstGreetingMs, probes };
  } finally {
    probing = false;
    await prober;
    zeroer.socket.destroy();
    asker.socket.destroy();
  }
}

/** Connect, wait for the 18-byte NBD greeting, hang up: the event loop's answer time. */
function greetingMs(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    const s = connect(port, '127.0.0.1');
    s.on('data', (b: Buffer) => {
      got += b.length;
      if (got >= 18) {
        s.destroy();
        resolve(performance.now() - t0);
      }
    });
    s.once('error', reject);
  });
}
