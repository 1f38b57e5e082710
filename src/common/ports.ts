/**
 * Free loopback ports for tools that start local servers (tests, benchmarks): ranges below
 * Linux's ephemeral range (32768-60999), so no outgoing connection takes a port between the
 * check and the server's bind, nor while its server is down for a restart.
 */
import { createServer } from 'node:net';

/** True when 127.0.0.1:`port` can be bound right now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A base port such that `count` consecutive loopback ports from it are free and not in `taken`. */
export async function freePortRange(count: number, taken: ReadonlySet<number> = new Set()): Promise<number> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 12000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = !taken.has(base + i) && (await portFree(base + i));
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}
