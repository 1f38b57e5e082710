/**
 * The request keys a PG applied most recently, first in first out, for deduplication (see
 * PgStore): a bounded window whose membership test and update are O(1). The keys also live in
 * a ring in arrival order, so the oldest is dropped without walking the set (a Set's first
 * element sits behind every slot deleted before it: asking a full window for its oldest key
 * on every write cost a follower a few percent of its CPU).
 */
import { Corruption } from '../common/errors.js';

export class RecentRequests {
  private readonly keys = new Set<number>();
  private readonly ring: Float64Array;
  /** Ring slot of the oldest key. */
  private head = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`window of ${capacity} requests`);
    this.ring = new Float64Array(capacity);
  }

  get size(): number {
    return this.keys.size;
  }

  /** True when `key` is in the window. A key of 0 (no request id) never is. */
  has(key: number): boolean {
    return key !== 0 && this.keys.has(key);
  }

  /** True the first time `key` is seen within the window; remembers it. A key of 0 is always new. */
  firstTime(key: number): boolean {
    if (this.has(key)) return false;
    this.remember(key);
    return true;
  }

  /**
   * Puts `key` in the window (the oldest key leaves a full one); a key already there, or 0,
   * changes nothing. A PG remembers a request's key only once its data is in place (see
   * PgStore.apply), so that every image of the window also holds that data.
   */
  remember(key: number): void {
    if (key === 0 || this.keys.has(key)) return;
    const size = this.keys.size;
    if (size === this.capacity) {
      this.keys.delete(this.ring[this.head]);
      this.ring[this.head] = key;
      this.head = (this.head + 1) % this.capacity;
    } else {
      this.ring[(this.head + size) % this.capacity] = key;
    }
    this.keys.add(key);
  }

  /** The keys oldest first, 8 bytes each (big-endian doubles): the replicated form. */
  toBytes(): Buffer {
    const size = this.keys.size;
    const out = Buffer.allocUnsafe(size * 8);
    for (let i = 0; i < size; i++) out.writeDoubleBE(this.ring[(this.head + i) % this.capacity], i * 8);
    return out;
  }

  /** Replaces the window with `bytes` (toBytes' form); beyond the capacity, the newest keys stay. */
  load(bytes: Uint8Array): void {
    if (bytes.byteLength % 8 !== 0) throw new Corruption(`dedupe table of ${bytes.byteLength} bytes`);
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.keys.clear();
    this.head = 0;
    for (let at = 0; at < b.length; at += 8) {
      const key = b.readDoubleBE(at);
      if (key !== 0 && !this.keys.has(key)) this.remember(key);
    }
  }
}
