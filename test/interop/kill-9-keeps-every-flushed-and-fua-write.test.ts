import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describeRun, runTool, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { pyScript, python3WithNbd } from './clients.js';

const MiB = 1024 * 1024;
const blockBytes = 4096;
/** The writer's region: [0, 64 MiB). fio loads the region above it. */
const writerSlots = (64 * MiB) / blockBytes;
const sizeBytes = 128 * MiB;
/** Kill once this many durable sets were reported (the writer is then mid-stream). */
const killAfterLines = 60;

test('kill -9 of the server loses no write acknowledged by a FLUSH or FUA reply', async (t) => {
  if (!requireTools(t, python3WithNbd, 'fio')) return;
  const dir = tempDir(t);
  const image = join(dir, 'crash.img');
  const seed = 1 + Math.floor(Math.random() * 1_000_000);
  t.diagnostic(`seed ${seed}`);
  const server = await startExportFile(t, { path: image, exportName: 'crash', sizeBytes });

  // Background load with flushes on the upper half while the tagged writer runs.
  const fio = spawn('fio', [
    '--ioengine=nbd', `--uri=${server.uri}`, '--name=load', '--rw=randwrite', '--bs=4k', '--iodepth=16',
    `--offset=${64 * MiB}`, `--size=${64 * MiB}`, '--fsync=16', '--time_based', '--runtime=60', '--output=/dev/null',
    '--verify_state_save=0',
    // Jobs as threads of one process, so the SIGKILL below ends all of fio (a forked job
    // process outlived it, running on after the test).
    '--thread',
  ], { stdio: 'ignore', cwd: dir });
  const fioExited = new Promise<void>((r) => fio.once('close', () => r()));
  t.after(async () => {
    fio.kill('SIGKILL');
    await fioExited;
  });

  const durable: number[][] = [];
  let finished = false;
  let killed: Promise<void> | undefined;
  const writer = runTool(python3WithNbd, [pyScript('crash_writer.py'), server.uri, String(seed), String(writerSlots)], {
    timeoutMs: 120_000,
    onLine: (line) => {
      if (!line.startsWith('{')) return;
      const ev = JSON.parse(line) as { durable?: number[]; finished?: boolean };
      if (ev.finished) finished = true;
      if (ev.durable) durable.push(ev.durable);
      if (durable.length === killAfterLines && killed === undefined) killed = server.kill9();
    },
  });
  const w = await writer;
  assert.ok(killed, `the writer reported only ${durable.length} durable sets before it stopped: ${describeRun('writer', w)}`);
  await killed;
  assert.ok(!finished, 'the writer was still writing when the server was killed');
  assert.notEqual(w.code, 0, 'the writer saw its connection die');
  fio.kill('SIGKILL');
  await fioExited;

  const restarted = await startExportFile(t, { path: image, exportName: 'crash' });
  const acked = durable.flat();
  const verify = await runTool(python3WithNbd, [pyScript('crash_writer.py'), restarted.uri, String(seed), String(writerSlots), '--verify'], {
    input: durable.map((d) => JSON.stringify(d)).join('\n') + '\n',
    timeoutMs: 120_000,
  });
  assert.equal(verify.code, 0, `acknowledged writes lost or blocks torn (${acked.length} acknowledged): ${describeRun('verify', verify)}`);
  const summary = JSON.parse(verify.stdout.trim()) as { acked: number; kept: number };
  assert.equal(summary.acked, acked.length);
  assert.ok(summary.kept >= acked.length, `every acknowledged block read back: ${verify.stdout}`);
  t.diagnostic(`acknowledged ${acked.length} blocks before kill -9; after restart ${summary.kept} blocks hold their data`);
});
