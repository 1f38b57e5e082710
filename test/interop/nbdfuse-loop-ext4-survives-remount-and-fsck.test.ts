import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeRun, runTool, runToolOk, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

/** A cleanup stack run in reverse when the test ends, whatever happened. */
function cleanups(t: TestContext): (fn: () => Promise<unknown>) => void {
  const stack: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    while (stack.length) {
      try {
        await stack.pop()!();
      } catch {
        // best effort: a failed test may have left any subset behind
      }
    }
  });
  return (fn) => stack.push(fn);
}

/** Mounts the export as MOUNTDIR/nbd with nbdfuse (several connections) and attaches a loop device. */
async function attach(t: TestContext, defer: (fn: () => Promise<unknown>) => void, uri: string, fuseDir: string): Promise<{ loop: string; detach: () => Promise<void> }> {
  mkdirSync(fuseDir, { recursive: true });
  const pidFile = join(fuseDir + '.pid');
  const fuse = spawn('nbdfuse', ['-C', '4', '-P', pidFile, fuseDir, uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let fuseErr = '';
  fuse.stderr!.on('data', (d: Buffer) => { fuseErr += d.toString(); });
  const fuseExited = new Promise<void>((r) => fuse.once('close', () => r()));
  defer(async () => {
    await runTool('fusermount3', ['-u', fuseDir]);
    fuse.kill('SIGTERM');
    await fuseExited;
  });
  const deadline = Date.now() + 15_000;
  while (!existsSync(pidFile) || !existsSync(join(fuseDir, 'nbd'))) {
    if (fuse.exitCode !== null) throw new Error(`nbdfuse exited ${fuse.exitCode}: ${fuseErr}`);
    if (Date.now() > deadline) throw new Error(`nbdfuse did not mount: ${fuseErr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const lo = await runToolOk('losetup', ['-f', '--show', join(fuseDir, 'nbd')]);
  const loop = lo.stdout.trim();
  let detached = false;
  defer(async () => {
    if (!detached) await runTool('losetup', ['-d', loop]);
  });
  return {
    loop,
    detach: async () => {
      await runToolOk('losetup', ['-d', loop]);
      detached = true;
      // The loop device lets go of the file asynchronously; unmount may need a retry.
      for (let i = 0; ; i++) {
        const r = await runTool('fusermount3', ['-u', fuseDir]);
        if (r.code === 0) break;
        if (i >= 50) throw new Error(describeRun('fusermount3 -u', r));
        await new Promise((res) => setTimeout(res, 100));
      }
      await fuseExited;
    },
  };
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

test('ext4 on a loop device over nbdfuse (4 connections) survives sync, umount, fsck and remount', async (t) => {
  if (!requireTools(t, 'nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'fsck.ext4', 'mount', 'umount', 'sync')) return;
  const dir = tempDir(t);
  const defer = cleanups(t);
  const image = join(dir, 'fs.img');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  let server = await startExportFile(t, { path: image, exportName: 'fuse', sizeBytes: 128 * MiB });

  const first = await attach(t, defer, server.uri, join(dir, 'fuse1'));
  await runToolOk('mkfs.ext4', ['-q', '-F', first.loop], { timeoutMs: 60_000 });
  await runToolOk('mount', ['-t', 'ext4', first.loop, mnt]);
  let mounted = true;
  defer(async () => {
    if (mounted) await runTool('umount', ['-l', mnt]);
  });
  const sums = new Map<string, string>();
  mkdirSync(join(mnt, 'a', 'b'), { recursive: true });
  for (let i = 0; i < 24; i++) {
    const rel = join(i % 2 ? 'a' : join('a', 'b'), `file${i}`);
    const data = randomBytes(4096 * (1 + ((i * 53) % 97)) + (i % 5) * 123);
    writeFileSync(join(mnt, rel), data);
    sums.set(rel, createHash('sha256').update(data).digest('hex'));
  }
  const big = randomBytes(16 * MiB);
  writeFileSync(join(mnt, 'big'), big);
  sums.set('big', createHash('sha256').update(big).digest('hex'));
  await runToolOk('sync', []);
  await runToolOk('umount', [mnt]);
  mounted = false;
  const fsck = await runTool('fsck.ext4', ['-fn', first.loop], { timeoutMs: 60_000 });
  assert.equal(fsck.code, 0, describeRun('fsck.ext4 -fn', fsck));
  await first.detach();

  // Restart the server on the same file, then mount again through fresh connections.
  assert.equal(await server.stop(), 0, server.stderr());
  server = await startExportFile(t, { path: image, exportName: 'fuse' });
  const second = await attach(t, defer, server.uri, join(dir, 'fuse2'));
  await runToolOk('mount', ['-t', 'ext4', second.loop, mnt]);
  mounted = true;
  for (const [rel, sum] of sums) assert.equal(sha256(join(mnt, rel)), sum, `${rel} reads back unchanged`);
  await runToolOk('umount', [mnt]);
  mounted = false;
  const fsck2 = await runTool('fsck.ext4', ['-fn', second.loop], { timeoutMs: 60_000 });
  assert.equal(fsck2.code, 0, describeRun('fsck.ext4 -fn after remount', fsck2));
  await second.detach();
});
