/**
 * Free loopback ports for tools that start local servers (tests, benchmarks): ranges below
 * Linux's ephemeral range (32768-60999), so no outgoing connection takes a port between the
 * check and the server's bind, nor while its server is down for a restart.
 *
 * A port handed out is also reserved (a file named after it in `reservationDir`, holding the
 * pid of the process that took it) until that process exits: a bind check alone cannot see a
 * port another caller was just given but has not bound yet, whether in this process (three
 * ranges asked for one after the other) or in another (a server restarting after a crash).
 */
import { createServer } from 'node:net';
import { mkdirSync, openSync, closeSync, writeSync, readFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const reservationDir = join(tmpdir(), 'raftblock-ports');
const reservedHere = new Set<number>();
let cleanupInstalled = false;

/** True when 127.0.0.1:`port` can be bound right now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** True while process `pid` exists (signal 0 reaches it, or it exists but is not ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes `port` for this process unless a live process holds it; a dead holder's file is reclaimed. */
function reserve(port: number): boolean {
  const path = join(reservationDir, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      reservedHere.add(port);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = NaN;
    try {
      holder = Number(readFileSync(path, 'utf8'));
    } catch {
      continue; // released meanwhile: try again
    }
    // A file still being written (no pid yet) belongs to a live taker.
    if (!Number.isSafeInteger(holder) || holder <= 0 || pidAlive(holder)) return false;
    try {
      unlinkSync(path);
    } catch {
      /* another process reclaimed it first */
    }
  }
  return false;
}

function release(ports: Iterable<number>): void {
  for (const port of ports) {
    try {
      unlinkSync(join(reservationDir, String(port)));
    } catch {
      /* gone already */
    }
    reservedHere.delete(port);
  }
}

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.once('exit', () => release([...reservedHere]));
}

/**
 * A base port such that `count` consecutive loopback ports from it are free, not in `taken`,
 * and reserved for this process (until it exits) against every other caller of this function.
 */
export async function freePortRange(count: number, taken: ReadonlySet<number> = new Set()): Promise<number> {
  mkdirSync(reservationDir, { recursive: true });
  installCleanup();
  for (let attempt = 0; attempt < 1000; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 12000);
    const got: number[] = [];
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      const port = base + i;
      ok = !taken.has(port) && !reservedHere.has(port) && reserve(port);
      if (ok) got.push(port);
      ok = ok && (await portFree(port));
    }
    if (ok) return base;
    release(got);
  }
  throw new Error(`no ${count} consecutive free ports found`);
}
