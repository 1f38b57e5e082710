/**
 * BlockIo wrappers for the store tests that need a device to misbehave (fail, lose writes, stall,
 * lack a fallocate mode): every call goes to a real BlockIo except the file methods a test
 * overrides, and PG stores opened on one.
 */
import type { TestContext } from 'node:test';
import type { BlockFile, BlockIo, IoBackendKind, OpenFileOptions } from '../../src/io/types.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import type { WriteBehindBudgetOptions } from '../../src/store/write-behind.js';

/**
 * A BlockIo that passes every call to `inner`; each file it opens is `inner`'s with the
 * methods `wrapFile` returns in their place. Subclasses keep the state their overrides read.
 */
export abstract class WrappedBlockIo implements BlockIo {
  readonly alignmentBytes = 4096;
  constructor(
    readonly inner: BlockIo,
    readonly kind: IoBackendKind = 'fs',
  ) {}
  allocAligned(n: number): Buffer {
    return this.inner.allocAligned(n);
  }
  async close(): Promise<void> {}
  async open(path: string, o?: OpenFileOptions): Promise<BlockFile> {
    const f = await this.inner.open(path, o);
    return Object.assign(Object.create(f) as BlockFile, { path, direct: f.direct }, this.wrapFile(f, path));
  }
  /** The methods of `f` (opened at `path`) replaced. */
  protected abstract wrapFile(f: BlockFile, path: string): Partial<BlockFile>;
}

/** A WrappedBlockIo with no state of its own: each file's methods replaced by `wrapFile`. */
export function wrapBlockIo(inner: BlockIo, wrapFile: (f: BlockFile, path: string) => Partial<BlockFile>): BlockIo {
  return new (class extends WrappedBlockIo {
    protected wrapFile(f: BlockFile, path: string): Partial<BlockFile> {
      return wrapFile(f, path);
    }
  })(inner);
}

/** PG 7's store in `dir` on `io`, with a scratch pool of its own (`pool` its options). */
export function openStore(io: BlockIo, dir: string, pool?: WriteBehindBudgetOptions): Promise<PgStore> {
  return PgStore.open(io, new ScratchPool(io, pool), dir, 7);
}

/** As openStore, closed when the test ends. */
export async function openStoreForTest(t: TestContext, io: BlockIo, dir: string, pool?: WriteBehindBudgetOptions): Promise<PgStore> {
  const s = await openStore(io, dir, pool);
  t.after(() => s.close());
  return s;
}
