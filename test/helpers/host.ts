/**
 * One MultiRaftHost (node 1) for host tests, on a real WAL in a directory of its own and a
 * transport on a loopback port; its peers, if any, are played by the test through receive().
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { MultiRaftHost, type HostOptions } from '../../src/cluster/host.js';
import { Transport } from '../../src/cluster/transport.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { Wal } from '../../src/wal/index.js';
import type { WalOptions } from '../../src/wal/types.js';

export interface TestHost {
  host: MultiRaftHost;
  wal: Wal;
  /** Stops the host, closes its transport and WAL; once (the test's end calls it too). */
  stop(): Promise<void>;
}

export interface TestHostOptions {
  /** How the name of its directory (under $RAFTBLOCK_TEST_DIR, else /var/tmp) starts. */
  prefix: string;
  /** Over the WAL's (256 KiB segments, 32 KiB batches). */
  wal?: Partial<WalOptions>;
  /** Over the host's (10 ms ticks, no checkpoint timer to speak of, empty snapshots). */
  host?: Partial<HostOptions>;
  /** Runs at the test's end before the host stops: opens what a failed check left waiting. */
  beforeStop?: () => void;
}

/**
 * The host, its transport listening; the test adds its groups, then calls host.start(). Stopped,
 * and its directory removed, when the test ends.
 */
export async function startTestHost(t: TestContext, opts: TestHostOptions): Promise<TestHost> {
  // Removed after the WAL is closed (tempDir's own removal would run first).
  const dir = mkdtempSync(join(process.env.RAFTBLOCK_TEST_DIR ?? '/var/tmp', opts.prefix));
  const wal = await Wal.open({ dir: join(dir, 'wal'), io: new FsBlockIo(), segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024, ...opts.wal });
  let host!: MultiRaftHost;
  const transport = new Transport({
    nodeId: '1',
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    handlers: { onMessages: (from, _e, msgs) => host.receive(Number(from), msgs), onRequest: async () => undefined },
  });
  await transport.start();
  host = new MultiRaftHost({
    nodeId: 1,
    wal,
    transport,
    tickMs: 10,
    fetchSnapshot: async () => new Uint8Array(0),
    checkpointIntervalMs: 1e9,
    ...opts.host,
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await host.stop();
    await transport.close();
    await wal.close();
  };
  t.after(async () => {
    opts.beforeStop?.();
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { host, wal, stop };
}
