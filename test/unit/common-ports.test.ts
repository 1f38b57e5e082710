import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { spawn } from 'node:child_process';
import { writeFileSync, readFileSync, existsSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePortRange } from '../../src/common/ports.js';
import { listenOn } from '../../src/common/address.js';
import { RaftblockError } from '../../src/common/errors.js';

const reservation = (port: number): string => join(tmpdir(), 'raftblock-ports', String(port));

test('ports: ranges handed out in one process never overlap, and each port is reserved for it', async () => {
  const ports = new Set<number>();
  for (let i = 0; i < 40; i++) {
    const base = await freePortRange(3);
    for (let p = base; p < base + 3; p++) {
      assert.ok(!ports.has(p), `port ${p} handed out twice`);
      assert.ok(p >= 20000 && p < 32768, `port ${p} is in or above the ephemeral range`);
      assert.equal(readFileSync(reservation(p), 'utf8'), String(process.pid));
      ports.add(p);
    }
  }
});

test('ports: a port reserved by a live process is skipped, one left by a dead process is reclaimed', async () => {
  // A live holder: a child that sleeps. A dead holder: a pid that exited.
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  const dead = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((r) => dead.once('exit', r));
  const taken: number[] = [];
  try {
    for (let p = 20000; p < 32000; p++) {
      if (existsSync(reservation(p))) continue;
      if (taken.length < 6000) {
        writeFileSync(reservation(p), String(live.pid));
        taken.push(p);
      }
    }
    // About half the range is held by the live child; none of it may be handed out.
    for (let i = 0; i < 30; i++) {
      const base = await freePortRange(1);
      assert.ok(!taken.includes(base), `port ${base} reserved by live pid ${live.pid} was handed out`);
    }
    // Rewrite them as the dead pid's: they may now be reclaimed.
    for (const p of taken) writeFileSync(reservation(p), String(dead.pid));
    let reclaimed = 0;
    for (let i = 0; i < 30; i++) {
      const base = await freePortRange(1);
      if (taken.includes(base)) {
        reclaimed++;
        assert.equal(readFileSync(reservation(base), 'utf8'), String(process.pid));
      }
    }
    assert.ok(reclaimed > 0, 'no port of a dead holder was reclaimed in 30 tries over a range half of which it held');
  } finally {
    live.kill('SIGKILL');
    for (const p of taken) {
      const holder = existsSync(reservation(p)) ? readFileSync(reservation(p), 'utf8') : '';
      if (holder === String(live.pid) || holder === String(dead.pid)) unlinkSync(reservation(p));
    }
  }
});

test('listenOn: an address in use is an ADDRESS_UNAVAILABLE error that names the server', async () => {
  const first = createServer();
  const bound = await listenOn(first, { host: '127.0.0.1', port: 0 }, 'first');
  try {
    await assert.rejects(listenOn(createServer(), bound, 'NBD server'), (err: unknown) => {
      assert.ok(err instanceof RaftblockError);
      assert.equal(err.code, 'ADDRESS_UNAVAILABLE');
      assert.match(err.message, new RegExp(`NBD server: cannot listen on 127.0.0.1:${bound.port}: it is in use`));
      return true;
    });
  } finally {
    first.close();
  }
});
