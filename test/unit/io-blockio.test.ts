import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, existsSync, openSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { IoError } from '../../src/common/errors.js';
import { setLogSink } from '../../src/common/log.js';
import { ExtentQueries, loadNative } from '../../src/io/native.js';
import { type BlockFile, ExtentKind } from '../../src/io/types.js';
import { openBlockIo } from '../../src/io/select.js';
import { holesTrusted } from '../../src/io/holes-trusted.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { fsWithAddonBackend, testBackends } from '../../src/io/testing.js';
import { UringBlockIo } from '../../src/io/uring.js';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/tools.js';

type Run = [number, number, ExtentKind];
const D = ExtentKind.Data;
const H = ExtentKind.Hole;
const U = ExtentKind.Unwritten;

/** Where this process's descriptors lead (/proc/self/fd). */
function openDescriptors(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // Closed since it was listed (the listing's own descriptor among them).
    }
  }
  return out;
}

/** f.extentMap's triples as [from, to, kind] tuples. */
async function runsOf(f: BlockFile, start: number, end: number, maxRuns = 100): Promise<Run[]> {
  const flat = await f.extentMap(start, end, maxRuns);
  const out: Run[] = [];
  for (let i = 0; i < flat.length; i += 3) out.push([flat[i], flat[i + 1], flat[i + 2]]);
  return out;
}

for (const backend of testBackends()) {
  test(`${backend.name}: a closed file refuses every operation (EBADF), never reaching the file that took its fd number`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const buf = io.allocAligned(4096);
    const stale = await io.open(join(dir, 'old'), { create: true });
    await stale.close();
    // Opened next, it most likely takes the number the closed one had.
    const other = await io.open(join(dir, 'other'), { create: true });
    t.after(() => other.close());
    buf.fill(0x5a);
    for (const op of [() => stale.pwrite(buf, 0), () => stale.pwritev([buf], 4096), () => stale.pread(buf, 0), () => stale.fdatasync(), () => stale.size(), () => stale.zeroRange(0, 4096), () => stale.truncate(8192), () => stale.extentMap(0, 4096, 1)]) {
      await assert.rejects(op(), (err: Error) => err instanceof IoError && err.errno === 9 && /after it was closed/.test(err.message));
    }
    assert.equal(await other.size(), 0, 'a write through the closed file reached another');
  });

  test(`${backend.name}: a second close() answers only once the descriptor (and the ring) is closed`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'twice');
    const rings = (): number => openDescriptors().filter((l) => l === 'anon_inode:[io_uring]').length;
    const ringsBefore = rings();
    const io = backend.make();
    let ioClosed = false;
    t.after(() => (ioClosed ? undefined : io.close()));
    const f = await io.open(path, { create: true });
    assert.ok(openDescriptors().includes(path), 'the open file shows in /proc/self/fd');
    const first = f.close();
    await f.close();
    assert.ok(!openDescriptors().includes(path), 'the second close() answered while the descriptor was still open');
    await first;
    const firstIo = io.close();
    await io.close();
    ioClosed = true;
    assert.equal(rings(), ringsBefore, 'the second close() answered while the ring was still open');
    await firstIo;
  });

  test(`${backend.name}: aligned writes read back and survive reopen`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const slab = io.allocAligned(64 * 1024);
    assert.equal(slab.length, 64 * 1024);
    assert.ok(slab.every((b) => b === 0), 'allocAligned zero-fills');
    const a = slab.subarray(0, 8192);
    const b = slab.subarray(8192, 16384);
    const back = slab.subarray(32768, 49152);
    randomBytes(8192).copy(a);
    randomBytes(8192).copy(b);
    const f = await io.open(join(dir, 'f'), { create: true });
    await Promise.all([f.pwrite(a, 0, true), f.pwritev([b, a], 8192, true)]);
    await f.fdatasync();
    assert.equal(await f.size(), 24576);
    assert.equal(await f.pread(back, 0), 16384);
    assert.ok(back.subarray(0, 8192).equals(a));
    assert.ok(back.subarray(8192).equals(b));
    // Short read at end of file.
    assert.equal(await f.pread(back, 16384), 8192);
    await f.close();
    const disk = readFileSync(join(dir, 'f'));
    assert.ok(disk.subarray(0, 8192).equals(a) && disk.subarray(8192, 16384).equals(b) && disk.subarray(16384).equals(a));
  });

  test(`${backend.name}: many concurrent operations all complete in one batch of submissions`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const count = 300; // more than the ring holds (64 entries, 128 slots): the rest wait for a slot
    const slab = io.allocAligned(count * 4096);
    for (let i = 0; i < count; i++) slab.fill(i & 0xff, i * 4096, (i + 1) * 4096);
    const f = await io.open(join(dir, 'g'), { create: true });
    await Promise.all(Array.from({ length: count }, (_, i) => f.pwrite(slab.subarray(i * 4096, (i + 1) * 4096), i * 4096)));
    await f.fdatasync();
    const back = io.allocAligned(count * 4096);
    assert.equal(await f.pread(back, 0), count * 4096);
    assert.ok(back.equals(slab));
    await f.close();
  });

  test(`${backend.name}: errors carry errno and syscall`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    await assert.rejects(io.open(join(dir, 'missing')), (e: unknown) => e instanceof IoError && e.errno === 2 && e.syscall === 'open');
    writeFileSync(join(dir, 'ro'), Buffer.alloc(4096));
    const f = await io.open(join(dir, 'ro'), { readOnly: true });
    await assert.rejects(f.pwrite(io.allocAligned(4096), 0), (e: unknown) => e instanceof IoError && e.errno === 9 /* EBADF */);
    await f.close();
  });

  test(`${backend.name}: misaligned requests are refused before reaching the kernel`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const f = await io.open(join(dir, 'h'), { create: true });
    t.after(() => f.close());
    const buf = io.allocAligned(8192);
    await assert.rejects(async () => f.pwrite(buf.subarray(0, 512), 0), /aligned/);
    await assert.rejects(async () => f.pwrite(buf.subarray(0, 4096), 100), /aligned/);
    assert.throws(() => io.allocAligned(1000), /aligned/);
  });

  test(`${backend.name}: punch hole and zero range read back as zeros; seek finds data, the extent map the zeroed range's unwritten extents`, { skip: backend.skip }, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const f = await io.open(join(dir, 'z'), { create: true });
    t.after(() => f.close());
    const buf = io.allocAligned(16 * 4096);
    buf.fill(0xab);
    await f.pwrite(buf, 0, true);
    await f.punchHole(4096, 4096);
    await f.zeroRange(3 * 4096, 2 * 4096);
    const back = io.allocAligned(16 * 4096);
    await f.pread(back, 0);
    for (let blk = 0; blk < 16; blk++) {
      const expectZero = blk === 1 || blk === 3 || blk === 4;
      assert.equal(back[blk * 4096], expectZero ? 0 : 0xab, `block ${blk}`);
    }
    assert.equal(await f.seekData(0), 0);
    assert.equal(await f.seekHole(15 * 4096), 16 * 4096, 'end of file counts as a hole');
    assert.equal(await f.seekHole(16 * 4096), -1, 'nothing at or past end of file');
    assert.equal(await f.seekData(16 * 4096), -1);
    const B = 4096;
    if (backend.name === 'uring') {
      assert.equal(await f.seekHole(0), B, 'the punched block is a hole');
      assert.equal(await f.seekData(B), 2 * B);
      // The zeroed range (still allocated) is unwritten, inside what SEEK_DATA calls a hole.
      assert.deepEqual(await runsOf(f, 0, 16 * B), [[0, B, D], [B, 2 * B, H], [2 * B, 3 * B, D], [3 * B, 5 * B, U], [5 * B, 16 * B, D]]);
      assert.deepEqual(await runsOf(f, 4 * B, 16 * B), [[4 * B, 5 * B, U], [5 * B, 16 * B, D]], 'clipped to the range asked');
      assert.deepEqual(await runsOf(f, 0, 4 * B), [[0, B, D], [B, 2 * B, H], [2 * B, 3 * B, D], [3 * B, 4 * B, U]], 'clipped at its end');
      assert.deepEqual(await runsOf(f, B + 100, 2 * B + 5), [[B + 100, 2 * B, H], [2 * B, 2 * B + 5, D]], 'unaligned ends');
      // Past the end of the file too (KEEP_SIZE), where SEEK_DATA sees nothing at all.
      await f.zeroRange(20 * B, B);
      assert.equal(await f.seekData(16 * B), -1);
      assert.deepEqual(await runsOf(f, 16 * B, 24 * B), [[16 * B, 20 * B, H], [20 * B, 21 * B, U], [21 * B, 24 * B, H]]);
    } else {
      // The fs backend without the addon tells no holes nor unwritten extents: data to the end
      // of the file. (With the addon it tells them: see the fs-with-the-addon test below.)
      assert.deepEqual(await runsOf(f, 0, 16 * B), [[0, 16 * B, D]]);
      assert.deepEqual(await runsOf(f, 8 * B, 24 * B), [[8 * B, 16 * B, D], [16 * B, 24 * B, H]]);
      assert.deepEqual(await runsOf(f, 8 * B, 24 * B, 1), [[8 * B, 16 * B, D]], 'at most as many runs as asked');
    }
    await f.truncate(32 * 4096);
    assert.equal(await f.size(), 32 * 4096);
  });
}

/** fallocate(1) on `path`: the fs backend's own punch and zero write zeros (Node has no fallocate). */
function fallocate(path: string, ...args: string[]): void {
  const r = spawnSync('fallocate', [...args, path], { encoding: 'utf8' });
  assert.equal(r.status, 0, `fallocate ${args.join(' ')} ${path}: ${r.stderr}`);
}

const fsWithAddon = fsWithAddonBackend();

test('fs with the addon: seek and the extent map tell data, a punched hole and unwritten extents as uring does; without the addon everything below the end of the file is data', { skip: fsWithAddon.skip }, async (t) => {
  const B = 4096;
  const io = fsWithAddon.make();
  t.after(() => io.close());
  const path = join(tempDir(t), 'sparse');
  const f = await io.open(path, { create: true });
  t.after(() => f.close());
  const buf = io.allocAligned(16 * B);
  buf.fill(0xab);
  await f.pwrite(buf, 0, true);
  // The layout of the uring test above: block 1 punched, blocks 3-4 zeroed (unwritten), and a
  // zeroed block past the end of the file (KEEP_SIZE).
  fallocate(path, '--punch-hole', '--offset', String(B), '--length', String(B));
  fallocate(path, '--zero-range', '--keep-size', '--offset', String(3 * B), '--length', String(2 * B));
  fallocate(path, '--zero-range', '--keep-size', '--offset', String(20 * B), '--length', String(B));
  assert.equal(await f.seekData(0), 0);
  assert.equal(await f.seekHole(0), B, 'the punched block is a hole');
  assert.equal(await f.seekData(B), 2 * B);
  assert.equal(await f.seekData(3 * B), 5 * B, 'unwritten extents are holes to SEEK_DATA');
  assert.equal(await f.seekHole(15 * B), 16 * B, 'end of file counts as a hole');
  assert.equal(await f.seekHole(16 * B), -1, 'nothing at or past end of file');
  assert.equal(await f.seekData(16 * B), -1, 'no data past the end of the file, allocated or not');
  assert.deepEqual(await runsOf(f, 0, 16 * B), [[0, B, D], [B, 2 * B, H], [2 * B, 3 * B, D], [3 * B, 5 * B, U], [5 * B, 16 * B, D]]);
  assert.deepEqual(await runsOf(f, 4 * B, 16 * B), [[4 * B, 5 * B, U], [5 * B, 16 * B, D]], 'clipped to the range asked');
  assert.deepEqual(await runsOf(f, B + 100, 2 * B + 5), [[B + 100, 2 * B, H], [2 * B, 2 * B + 5, D]], 'unaligned ends');
  assert.deepEqual(await runsOf(f, 0, 16 * B, 2), [[0, B, D], [B, 2 * B, H]], 'at most as many runs as asked');
  assert.deepEqual(await runsOf(f, 16 * B, 24 * B), [[16 * B, 20 * B, H], [20 * B, 21 * B, U], [21 * B, 24 * B, H]]);

  // The same file on the fs backend without the addon: no holes, data up to the end of the file.
  const plain = new FsBlockIo();
  t.after(() => plain.close());
  const g = await plain.open(path, { readOnly: true });
  t.after(() => g.close());
  assert.equal(await g.seekData(B), B);
  assert.equal(await g.seekHole(0), 16 * B);
  assert.deepEqual(await runsOf(g, 0, 24 * B), [[0, 16 * B, D], [16 * B, 24 * B, H]]);
});

test('fs with the addon: a file closes once its extent queries ended, then refuses them (EBADF); a failed query is an IoError naming lseek and the file', { skip: fsWithAddon.skip }, async (t) => {
  const B = 4096;
  const dir = tempDir(t);
  const io = fsWithAddon.make();
  t.after(() => io.close());
  const f = await io.open(join(dir, 'f'), { create: true });
  const buf = io.allocAligned(B);
  buf.fill(0x3c);
  await f.pwrite(buf, 0);
  await f.pwrite(buf, 8 * B);
  // The second waits behind the first (one query per file at a time); close waits for both.
  const pending = [f.extentMap(0, 16 * B, 10), f.extentMap(B, 16 * B, 10)];
  const closing = f.close();
  const [whole, tail] = await Promise.all(pending);
  await closing;
  assert.deepEqual(Array.from(whole), [0, B, D, B, 8 * B, H, 8 * B, 9 * B, D, 9 * B, 16 * B, H]);
  assert.deepEqual(Array.from(tail), [B, 8 * B, H, 8 * B, 9 * B, D, 9 * B, 16 * B, H]);
  for (const op of [() => f.seekData(0), () => f.seekHole(0), () => f.extentMap(0, B, 1)]) {
    await assert.rejects(op(), (e: unknown) => e instanceof IoError && e.errno === 9 && e.syscall === 'lseek');
  }
  // A FIFO: lseek on it fails with ESPIPE.
  const fifo = join(dir, 'fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const p = await io.open(fifo);
  t.after(() => p.close());
  const espipe = (e: unknown): boolean => e instanceof IoError && e.errno === 29 && e.syscall === 'lseek' && e.message.includes(fifo);
  await assert.rejects(p.seekData(0), espipe);
  await assert.rejects(p.seekHole(0), espipe);
  await assert.rejects(p.extentMap(0, B, 1), espipe);
});

test('uring: an extent map finds unwritten extents beyond one FIEMAP call\'s, in order, at most as many runs as asked', { skip: testBackends()[0].skip }, async (t) => {
  const io = testBackends()[0].make();
  t.after(() => io.close());
  const f = await io.open(join(tempDir(t), 'many'), { create: true });
  t.after(() => f.close());
  const B = 4096;
  const blocks = 400;
  const buf = io.allocAligned(blocks * B);
  buf.fill(0x5c);
  await f.pwrite(buf, 0, true);
  // 200 unwritten blocks between written ones: 400 extents, more than one call's 64.
  const expected: Run[] = [];
  for (let blk = 0; blk < blocks; blk++) {
    if (blk % 2 === 1) await f.zeroRange(blk * B, B);
    expected.push([blk * B, (blk + 1) * B, blk % 2 === 1 ? U : D]);
  }
  assert.deepEqual(await runsOf(f, 0, blocks * B, 1000), expected);
  assert.deepEqual(await runsOf(f, 0, blocks * B, 150), expected.slice(0, 150), 'cut at the count asked for');
  assert.deepEqual(await runsOf(f, 100 * B + 1, 300 * B, 1000), [[100 * B + 1, 101 * B, D], ...expected.slice(101, 300)]);
  // Neighbouring unwritten extents come back as one run.
  await f.zeroRange(0, 8 * B);
  assert.deepEqual((await runsOf(f, 0, 20 * B, 1000))[0], [0, 8 * B, U]);
});

test('uring: a failed extent query rejects with IoError naming the call and its errno', { skip: testBackends()[0].skip }, async (t) => {
  const native = loadNative();
  assert.ok('addon' in native);
  // A FIFO: lseek on it fails with ESPIPE.
  const fifo = join(tempDir(t), 'fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const fd = openSync(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
  t.after(() => closeSync(fd));
  const q = new ExtentQueries(native.addon, fd, fifo);
  await assert.rejects(q.map(0, 4096, 10), (e: unknown) => e instanceof IoError && e.errno === 29 && e.syscall === 'lseek' && e.message.includes(fifo));
  await q.drained();
});

test('auto picks a backend that works here and logs which one', async (t) => {
  const dir = tempDir(t);
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  t.after(() => setLogSink((l) => process.stderr.write(l + '\n')));
  const io = await openBlockIo({ probeDir: dir });
  t.after(() => io.close());
  const expected = 'error' in loadNative() ? 'fs' : 'uring';
  assert.equal(io.kind, expected);
  assert.ok(lines.some((l) => JSON.parse(l).backend === expected), 'a log line names the backend');
  const forced = await openBlockIo({ probeDir: dir, backend: 'fs' });
  assert.equal(forced.kind, 'fs');
  assert.ok(!existsSync(join(dir, '.raftblock-io-probe')), 'the probe cleans up');
  assert.equal(statSync(dir).isDirectory(), true);
});

const uring = testBackends().find((b) => b.name === 'uring')!;

function runNode(script: string): { status: number | null; stdout: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, ms: Date.now() - t0 };
}

test('uring: an idle ring lets the process exit; in-flight I/O keeps it alive until completion', { skip: uring.skip }, (t) => {
  const dir = tempDir(t);
  const mod = JSON.stringify(join(repoRoot, 'dist', 'src', 'io', 'testing.js'));
  const idle = runNode(`import { testBackends } from ${mod}; const io = testBackends()[0].make(); console.log('made', io.kind);`);
  assert.equal(idle.status, 0);
  assert.match(idle.stdout, /made uring/);
  const busy = runNode(`
    import { testBackends } from ${mod};
    const io = testBackends()[0].make();
    const f = await io.open(${JSON.stringify(join(dir, 'busy'))}, { create: true });
    const buf = io.allocAligned(4 << 20);
    // Nothing else holds the loop: only the ring's ref while the write is in flight.
    f.pwrite(buf, 0, true).then(() => console.log('completed'));
  `);
  assert.equal(busy.status, 0);
  assert.match(busy.stdout, /completed/, 'the write completed before the process exited');
});

test('uring: closing while completions drain settles every operation, then refuses new ones', { skip: uring.skip }, async (t) => {
  const dir = tempDir(t);
  const io = uring.make(16);
  const f = await io.open(join(dir, 'drain'), { create: true });
  const slab = io.allocAligned(200 * 4096);
  const writes = Array.from({ length: 200 }, (_, i) => f.pwrite(slab.subarray(i * 4096, (i + 1) * 4096), i * 4096, i % 10 === 0));
  const closed = io.close();
  await Promise.all(writes);
  await closed;
  await assert.rejects(async () => f.pwrite(slab.subarray(0, 4096), 0), /closed/);
  await assert.rejects(io.open(join(dir, 'x'), { create: true }), /closed/);
  await f.close();
});

test('errors surface as IoError with errno from the ring (EINVAL for a misaligned O_DIRECT buffer)', { skip: uring.skip }, async (t) => {
  const dir = tempDir(t);
  const io = uring.make(8);
  t.after(() => io.close());
  const f = await io.open(join(dir, 'einval'), { create: true });
  t.after(() => f.close());
  // One byte off an aligned slab: the address is wrong, which only the kernel checks.
  const slab = io.allocAligned(8192);
  await assert.rejects(f.pwrite(slab.subarray(1, 4097), 0, true), (e: unknown) => e instanceof IoError && e.errno === 22 && e.syscall === 'pwrite');
});

test('uring: a failed sync names the call asked for: fsync or fdatasync', { skip: uring.skip }, async (t) => {
  const dir = tempDir(t);
  const io = uring.make(8);
  t.after(() => io.close());
  const f = await io.open(join(dir, 'sync'), { create: true });
  // Its descriptor closed under it (the file object does not know): the ring answers EBADF.
  closeSync(Reflect.get(f, 'fd') as number);
  await assert.rejects(f.fsync(), (e: unknown) => e instanceof IoError && e.errno === 9 && e.syscall === 'fsync' && /^fsync /.test(e.message));
  await assert.rejects(f.fdatasync(), (e: unknown) => e instanceof IoError && e.errno === 9 && e.syscall === 'fdatasync');
});

test('uring: both ways of making a direct write durable write the same bytes', { skip: uring.skip }, async (t) => {
  const dir = tempDir(t);
  const native = loadNative();
  assert.ok('addon' in native);
  for (const mode of ['rwf-dsync', 'fdatasync'] as const) {
    const io: UringBlockIo = new UringBlockIo(native.addon, 16, mode);
    assert.equal(io.durableWrites, mode);
    const f = await io.open(join(dir, mode), { create: true });
    const slab = io.allocAligned(3 * 4096);
    randomBytes(2 * 4096).copy(slab);
    await f.pwrite(slab.subarray(0, 4096), 0, true);
    await f.pwritev([slab.subarray(4096, 8192)], 4096, true);
    await f.close();
    await io.close();
    assert.ok(readFileSync(join(dir, mode)).equals(slab.subarray(0, 8192)), mode);
  }
});

test('auto falls back to fs, saying why, where io_uring is refused; a forced uring fails instead', { skip: uring.skip }, async (t) => {
  const dir = tempDir(t);
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  t.after(() => setLogSink((l) => process.stderr.write(l + '\n')));
  const real = loadNative();
  assert.ok('addon' in real);
  // As under a seccomp filter: io_uring_setup fails with EPERM.
  const refusing = {
    addon: {
      ...real.addon,
      Ring: class {
        constructor() {
          throw Object.assign(new Error('io_uring_setup failed: Operation not permitted'), { errno: 1, syscall: 'io_uring_setup' });
        }
      } as never,
    },
  };
  const io = await openBlockIo({ probeDir: dir, native: refusing });
  assert.equal(io.kind, 'fs');
  const warn = lines.map((l) => JSON.parse(l)).find((r) => r.backend === 'fs');
  assert.ok(warn && /not permitted/.test(warn.reason), 'the log line gives the reason');
  const missing = await openBlockIo({ probeDir: dir, native: { error: 'addon not built' } });
  assert.equal(missing.kind, 'fs');
  // A file whose first 8 blocks were never written: the fallback still tells that hole through
  // the addon; with no addon at all it is data.
  const sparse = join(dir, 'sparse');
  const fd = openSync(sparse, 'w');
  writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 8 * 4096);
  closeSync(fd);
  for (const [backend, firstData] of [[io, 8 * 4096], [missing, 0]] as const) {
    const f = await backend.open(sparse, { readOnly: true });
    assert.equal(await f.seekData(0), firstData);
    await f.close();
  }
  await assert.rejects(openBlockIo({ probeDir: dir, backend: 'uring', native: refusing }), /io_uring backend unavailable/);
  // As on a filesystem refusing O_DIRECT: the probe's open fails, auto goes to fs.
  await assert.rejects(openBlockIo({ probeDir: join(dir, 'no-such-dir'), backend: 'uring' }), /unavailable/);
  const fromProbe = await openBlockIo({ probeDir: join(dir, 'no-such-dir') });
  assert.equal(fromProbe.kind, 'fs');
});

test('the fs backend trusts the addon with holes only on file systems that count dirty page-cache data as data', async () => {
  // The fs backend writes through the page cache: a SEEK_DATA that missed dirty pages would make
  // an image skip data just written. ext4 and tmpfs are on the list; procfs stands for the rest.
  assert.equal(await holesTrusted('/dev/shm'), true, 'tmpfs');
  assert.equal(await holesTrusted('/proc'), false, 'procfs');
  assert.equal(await holesTrusted('/nonexistent-raftblock-dir'), false, 'a directory statfs cannot read');
});

test('openBlockIo gives the fs backend the addon\'s hole telling only where the file system is trusted with it', { skip: uring.skip }, async (t) => {
  const dir = tempDir(t, 'raftblock-holes-wiring-');
  const path = join(dir, 'sparse');
  const fd = openSync(path, 'w');
  writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 1 << 20);
  closeSync(fd);
  for (const trusted of [true, false]) {
    const io = await openBlockIo({ backend: 'fs', probeDir: dir, holesTrusted: async () => trusted });
    const f = await io.open(path, { readOnly: true });
    try {
      // [0, 1 MiB) was never written: a hole the addon tells, data to a backend that tells none.
      assert.equal(await f.seekData(0), trusted ? 1 << 20 : 0, `trusted ${trusted}`);
    } finally {
      await f.close();
      await io.close();
    }
  }
});
