/**
 * Floods of idle TCP connections, for the tests of the servers' connection limits: how many
 * a server closes at once.
 */
import { createConnection, type Socket } from 'node:net';

/** `count` connections to 127.0.0.1:`port` that never send a byte. */
export function openIdle(port: number, count: number): Promise<Socket[]> {
  return Promise.all(
    Array.from({ length: count }, () => new Promise<Socket>((resolve, reject) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => resolve(s));
      s.once('error', reject);
    })),
  );
}

/** How many of `sockets` the far end closes within `ms`. */
export async function closedWithin(sockets: readonly Socket[], ms: number): Promise<number> {
  const closed = await Promise.all(
    sockets.map((s) => new Promise<boolean>((resolve) => {
      if (s.destroyed) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      s.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    })),
  );
  return closed.filter((c) => c).length;
}
