/**
 * TCP connections and listeners made by hand on loopback: floods of idle connections, for the
 * tests of the servers' connection limits (how many a server closes at once), and single
 * connections and listeners that play a peer in transport tests, all closed when the test ends.
 */
import { connect, createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

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

/** A connection to `address` (HOST:PORT), once connected; its errors ignored, destroyed when the test ends. */
export async function dial(t: TestContext, address: string): Promise<Socket> {
  const [host, port] = address.split(':');
  const s = connect({ host, port: Number(port) });
  s.on('error', () => undefined);
  t.after(() => s.destroy());
  await new Promise((r) => s.once('connect', r));
  return s;
}

/** As dial, and whether the connection has closed since. */
export async function dialWatched(t: TestContext, address: string): Promise<{ s: Socket; closed: () => boolean }> {
  const s = await dial(t, address);
  let closed = false;
  s.on('close', () => (closed = true));
  return { s, closed: () => closed };
}

/** A server on 127.0.0.1 (on `port`, else any free one) whose accepted sockets are handed to `onSocket`; it and they closed when the test ends. */
export async function listen(t: TestContext, onSocket: (s: Socket) => void, port = 0): Promise<{ server: Server; address: string }> {
  const accepted: Socket[] = [];
  const server = createServer((s) => {
    s.on('error', () => undefined);
    accepted.push(s);
    onSocket(s);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}` };
}
