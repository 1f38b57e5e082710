/**
 * A TCP proxy that keeps every byte it forwards, both ways: what an observer on the network
 * sees of a connection (tests that check traffic is encrypted). It can also lose answers: the
 * first `dropAnswers` connections are cut when the target first answers, the answer unsent
 * (tests of what a client does when the outcome of its request is unknown).
 */
import type { TestContext } from 'node:test';
import { createConnection, createServer, type Socket } from 'node:net';

/** A TCP proxy to `target` that keeps every byte it forwards, both ways. */
export async function recordingProxy(
  t: TestContext,
  target: string,
  opts: { dropAnswers?: number } = {},
): Promise<{ address: string; bytes: () => Buffer; connections: () => number }> {
  let connections = 0;
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const seen: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((inbound) => {
    const loseAnswer = connections++ < (opts.dropAnswers ?? 0);
    const outbound = createConnection({ host, port });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.on('data', (d: Buffer) => {
      seen.push(Buffer.from(d));
      outbound.write(d);
    });
    outbound.on('data', (d: Buffer) => {
      if (loseAnswer) return void inbound.destroy();
      seen.push(Buffer.from(d));
      inbound.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { address: `127.0.0.1:${(server.address() as { port: number }).port}`, bytes: () => Buffer.concat(seen), connections: () => connections };
}

