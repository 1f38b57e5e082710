/**
 * The file export reads and writes short ranges synchronously (cheaper than a pool round trip),
 * and decides whether a READ of zeros is a hole with a synchronous lseek. While a punch or zero
 * range (fallocate) of the same file runs, ext4 holds the inode's locks, a second for
 * gigabytes, and each of those calls waited for it on the event loop: every client of the
 * process was served nothing meanwhile. With a deallocation under way they go to the pool.
 *
 * A real file of written data on a real disk, punched whole by a TRIM; a READ of a punched
 * block and a WRITE asked right after must let the event loop turn before they settle, and
 * answer as they should.
 */
import assert from 'node:assert/strict';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileBackend } from '../../src/nbd/file-backend.js';
import { tempDir } from '../helpers/tools.js';
import { turnsWhile } from '../helpers/event-loop.js';

const B = 4096;
/** Written, then punched: long enough that the punch still runs when the READ and WRITE come. */
const fileBytes = 1024 * 1024 * 1024;

function writeDataFile(path: string): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(8 * 1024 * 1024, 0xa7);
    for (let at = 0; at < fileBytes; at += chunk.length) writeSync(fd, chunk, 0, chunk.length, at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

test('file export: a READ and a WRITE asked during a punch of the file leave the event loop free and answer right', async (t) => {
  const path = join(tempDir(t), 'data.img');
  writeDataFile(path);
  const b = await FileBackend.open(path);
  t.after(() => b.close());
  assert.equal(b.sparseMode.kind, 'native', 'the addon punches on its ring');

  const punching = b.trim(0, fileBytes - B, false);
  const readBuf = Buffer.alloc(B, 0xee);
  const read = turnsWhile(b.read(B, B, readBuf));
  const written = Buffer.alloc(B, 0x5c);
  const write = turnsWhile(b.write(fileBytes - B, written, false));
  const [r, w] = await Promise.all([read, write]);
  await punching;
  assert.ok(r.turns > 0, 'the event loop did not turn while the READ waited for the punch');
  assert.ok(w.turns > 0, 'the event loop did not turn while the WRITE waited for the punch');
  // The READ ran before or after the punch of its block: the data or zeros, nothing else.
  assert.ok(readBuf.equals(Buffer.alloc(B, 0xa7)) || readBuf.equals(Buffer.alloc(B)), 'the READ returned neither the data nor zeros');
  const back = Buffer.alloc(B);
  await b.read(fileBytes - B, B, back);
  assert.ok(back.equals(written), 'the WRITE past the punched range landed');
  const after = Buffer.alloc(B, 0xee);
  await b.read(B, B, after);
  assert.ok(after.equals(Buffer.alloc(B)), 'the punched block reads as zeros');
});

test('file export: a READ waiting for a punch goes before a punch asked after it (a stream of TRIMs does not starve it)', async (t) => {
  const path = join(tempDir(t), 'data.img');
  writeDataFile(path);
  const b = await FileBackend.open(path);
  t.after(() => b.close());
  const half = fileBytes / 2;
  const done: string[] = [];
  const first = b.trim(0, half, false).then(() => done.push('first punch'));
  const read = b.read(half + B, B, Buffer.alloc(B)).then(() => done.push('read'));
  const second = b.trim(half, half - B, false).then(() => done.push('second punch'));
  await Promise.all([first, read, second]);
  // The READ runs once the first punch has ended (its reply may even come before the TRIM's).
  assert.ok(done.indexOf('read') < done.indexOf('second punch'), `done in the order ${done.join(', ')}`);
});
