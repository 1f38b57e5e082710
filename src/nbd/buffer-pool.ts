/**
 * Payload buffers for READ and WRITE, reused instead of allocated per request.
 * Sizes come in power-of-two classes from `minClassBytes`; each class keeps a free list
 * bounded so the pool as a whole holds at most `maxIdleBytes` idle. Every PooledBuffer carries
 * its own pre-bound `release` so it can be handed to socket.write as the completion callback
 * without creating a closure per request.
 */
import { assert } from '../common/assert.js';

export const minClassBytes = 4096;

export class PooledBuffer {
  /** Capacity is the class size; callers use the first `length` bytes they asked for. */
  readonly buf: Buffer;
  readonly classIndex: number;
  inUse = false;
  readonly release: () => void;

  constructor(pool: BufferPool, classIndex: number, bytes: number) {
    this.buf = Buffer.allocUnsafeSlow(bytes);
    this.classIndex = classIndex;
    this.release = () => pool.put(this);
  }
}

export class BufferPool {
  private readonly free: PooledBuffer[][] = [];
  private idleBytes = 0;
  /** Buffers handed out and not yet returned (for tests and metrics). */
  outstanding = 0;

  constructor(
    readonly maxBufferBytes: number,
    readonly maxIdleBytes = 256 * 1024 * 1024,
  ) {
    assert(maxBufferBytes >= minClassBytes, 'maxBufferBytes below the smallest class');
  }

  static classOf(bytes: number): number {
    let c = 0;
    let size = minClassBytes;
    while (size < bytes) {
      size *= 2;
      c++;
    }
    return c;
  }

  acquire(bytes: number): PooledBuffer {
    assert(bytes > 0 && bytes <= this.maxBufferBytes, `pool request of ${bytes} bytes out of bounds`);
    const c = BufferPool.classOf(bytes);
    const list = this.free[c];
    let p = list !== undefined ? list.pop() : undefined;
    if (p !== undefined) this.idleBytes -= p.buf.length;
    else p = new PooledBuffer(this, c, minClassBytes * 2 ** c);
    p.inUse = true;
    this.outstanding++;
    return p;
  }

  put(p: PooledBuffer): void {
    assert(p.inUse, 'pooled buffer released twice');
    p.inUse = false;
    this.outstanding--;
    if (this.idleBytes + p.buf.length > this.maxIdleBytes) return; // let GC have it
    let list = this.free[p.classIndex];
    if (list === undefined) list = this.free[p.classIndex] = [];
    list.push(p);
    this.idleBytes += p.buf.length;
  }
}
