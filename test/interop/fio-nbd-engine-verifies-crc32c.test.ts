import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describeRun, runTool, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number; iops: number };
  read: { io_bytes: number };
}

async function fio(cwd: string, uri: string, args: string[]): Promise<FioJob> {
  const r = await runTool('fio', [
    '--ioengine=nbd', `--uri=${uri}`, '--output-format=json', '--verify=crc32c', '--do_verify=1',
    '--verify_fatal=1', '--exitall_on_error=1', '--verify_state_save=0', ...args,
  ], { timeoutMs: 180_000, cwd });
  assert.equal(r.code, 0, describeRun('fio', r));
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: FioJob[] };
  const job = json.jobs[0];
  assert.equal(job.error, 0, r.stdout);
  return job;
}

test('fio 4K random writes at iodepth 32 verify with crc32c', async (t) => {
  if (!requireTools(t, 'fio')) return;
  const dir = tempDir(t);
  const sizeBytes = 64 * MiB;
  const server = await startExportFile(t, { path: join(dir, 'fio.img'), exportName: 'fio', sizeBytes });
  const job = await fio(dir, server.uri, ['--name=rand4k', '--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${sizeBytes}`]);
  assert.equal(job.write.io_bytes, sizeBytes, 'every block written');
  assert.equal(job.read.io_bytes, sizeBytes, 'every block read back and verified');
});

test('fio 512K sequential writes verify with crc32c', async (t) => {
  if (!requireTools(t, 'fio')) return;
  const dir = tempDir(t);
  const sizeBytes = 128 * MiB;
  const server = await startExportFile(t, { path: join(dir, 'fio.img'), exportName: 'fio', sizeBytes });
  const job = await fio(dir, server.uri, ['--name=seq512k', '--rw=write', '--bs=512k', '--iodepth=8', `--size=${sizeBytes}`]);
  assert.equal(job.write.io_bytes, sizeBytes);
  assert.equal(job.read.io_bytes, sizeBytes);
});
