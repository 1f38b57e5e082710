import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeRun, runTool, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { pyScript, python3WithNbd } from './clients.js';

/**
 * A power cut, not just a process crash. The export's file lives on a stack that forgets
 * everything not flushed: nbdfuse exposes an NBD device as a file, served by nbdkit with its
 * cache filter in writeback mode, which holds written blocks in a private cache and writes them
 * to the real image only when a FLUSH arrives (which is what the server's fdatasync/O_DSYNC
 * turns into on that file). Killing nbdkit with -9 drops every unflushed block, as losing power
 * drops a disk's volatile cache; the image then holds exactly what was made durable.
 */

const MiB = 1024 * 1024;
const writerSlots = (32 * MiB) / 4096;
const killAfterLines = 40;

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('close', () => r()));
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a power cut under the server loses no write acknowledged by a FLUSH or FUA reply', async (t) => {
  if (!requireTools(t, python3WithNbd, 'nbdkit', 'nbdfuse', 'fusermount3')) return;
  const dir = tempDir(t);
  const image = join(dir, 'disk.img');
  const socket = join(dir, 'nbdkit.sock');
  const mnt = join(dir, 'mnt');
  const fusePid = join(dir, 'nbdfuse.pid');
  mkdirSync(mnt);
  writeFileSync(image, '');
  truncateSync(image, 32 * MiB);
  const seed = 1 + Math.floor(Math.random() * 1_000_000);
  t.diagnostic(`seed ${seed}`);

  // The forgetful disk.
  const nbdkit = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', socket, '--filter=cache', 'file', image, 'cache=writeback'], { stdio: 'ignore' });
  let fuse: ChildProcess | undefined;
  t.after(async () => {
    nbdkit.kill('SIGKILL');
    fuse?.kill('SIGKILL');
    await Promise.all([exited(nbdkit), fuse ? exited(fuse) : undefined]);
    await runTool('fusermount3', ['-u', '-z', mnt]);
  });
  // nbdfuse connects once, at start: it must not start before nbdkit listens (a loaded machine
  // starts nbdkit slowly, and nbdfuse then exits at once, refused).
  await waitFor('nbdkit to listen', () => existsSync(socket) || nbdkit.exitCode !== null);
  assert.equal(nbdkit.exitCode, null, `nbdkit exited with ${nbdkit.exitCode}`);
  const fuseProcess = spawn('nbdfuse', ['-P', fusePid, mnt, '--unix', socket], { stdio: 'ignore' });
  fuse = fuseProcess;
  await waitFor('nbdfuse', () => (existsSync(fusePid) && existsSync(join(mnt, 'nbd'))) || fuseProcess.exitCode !== null);
  assert.equal(fuseProcess.exitCode, null, `nbdfuse exited with ${fuseProcess.exitCode}`);

  const server = await startExportFile(t, { path: join(mnt, 'nbd'), exportName: 'pc' });
  const durable: number[][] = [];
  let cut: Promise<void> | undefined;
  const powerCut = async (): Promise<void> => {
    // Power goes: the disk's volatile cache first, then everything above it.
    nbdkit.kill('SIGKILL');
    await exited(nbdkit);
    await server.kill9();
    fuseProcess.kill('SIGKILL');
    await exited(fuseProcess);
    await runTool('fusermount3', ['-u', '-z', mnt]);
  };
  const w = await runTool(python3WithNbd, [pyScript('crash_writer.py'), server.uri, String(seed), String(writerSlots)], {
    timeoutMs: 120_000,
    onLine: (line) => {
      if (!line.startsWith('{')) return;
      const ev = JSON.parse(line) as { durable?: number[] };
      if (ev.durable) durable.push(ev.durable);
      if (durable.length === killAfterLines && cut === undefined) cut = powerCut();
    },
  });
  assert.ok(cut, `the writer reported only ${durable.length} durable sets: ${describeRun('writer', w)}`);
  await cut;

  // After the power comes back, serve the image itself.
  const restarted = await startExportFile(t, { path: image, exportName: 'pc' });
  const verify = await runTool(python3WithNbd, [pyScript('crash_writer.py'), restarted.uri, String(seed), String(writerSlots), '--verify'], {
    input: durable.map((d) => JSON.stringify(d)).join('\n') + '\n',
    timeoutMs: 120_000,
  });
  assert.equal(verify.code, 0, `acknowledged writes lost in the power cut: ${describeRun('verify', verify)}`);
  t.diagnostic(verify.stdout.trim());
});
