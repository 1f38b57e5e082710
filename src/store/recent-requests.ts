/**
 * The request keys a PG applied most recently, first in first out, for deduplication (see
 * PgStore): a bounded window whose membership test and update are O(1). The keys also live in
 * a ring in arrival order, so the oldest is dropped without walking the set (a Set's first
 * element sits behind every slot deleted before it: asking a full window for its oldest key
 * on every write cost a follower a few percent of its CPU).
 *
 * A bounded window forgets: a retry that arrives after its first attempt's key has left would
 * apply a second time, over whatever was written in between. So the ring also holds the log
 * index each key was applied at, and `coversRetry` tells a leader whether a retry first sent
 * when the log was at some index would still be recognised (see StorageNode.serveLocal). The
 * indexes are kept in memory only: keys loaded from a checkpoint or an image count as applied
 * at the index of that checkpoint or image, an upper bound, which errs toward refusing.
 */
import { Corruption } from '../common/errors.js';
import { isKey, KeySet } from '../common/key-set.js';

export class RecentRequests {
  private readonly keys: KeySet;
  private readonly ring: Float64Array;
  /** Per ring slot, the log index its key was applied at (non-decreasing from the head). */
  private readonly indexes: Float64Array;
  /** Ring slot of the oldest key. */
  private head = 0;
  /** At least the highest log index of a key that left the window (0: none ever left). */
  private evictedThrough = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`window of ${capacity} requests`);
    this.keys = new KeySet(capacity);
    this.ring = new Float64Array(capacity);
    this.indexes = new Float64Array(capacity);
  }

  get size(): number {
    return this.keys.size;
  }

  /** True when `key` is in the window. A key of 0 (no request id) never is. */
  has(key: number): boolean {
    return this.keys.has(key);
  }

  /** True the first time `key` is seen within the window; remembers it. A key of 0 is always new. */
  firstTime(key: number, index = 0): boolean {
    if (this.has(key)) return false;
    this.remember(key, index);
    return true;
  }

  /**
   * Puts `key` in the window (the oldest key leaves a full one); a key already there, or 0,
   * changes nothing. A PG remembers a request's key only once its data is in place (see
   * PgStore.apply), so that every image of the window also holds that data.
   */
  remember(key: number, index = 0): void {
    if (key === 0 || this.keys.has(key)) return;
    const size = this.keys.size;
    let slot: number;
    if (size === this.capacity) {
      slot = this.head;
      this.keys.delete(this.ring[slot]);
      if (this.indexes[slot] > this.evictedThrough) this.evictedThrough = this.indexes[slot];
      this.head = (this.head + 1) % this.capacity;
    } else {
      slot = (this.head + size) % this.capacity;
    }
    this.ring[slot] = key;
    this.indexes[slot] = index;
    this.keys.add(key);
  }

  /**
   * Whether a retried request whose first attempt was sent when the log's entries up to
   * `notBefore` were known (so its entry, if any, sits after `notBefore`) is still recognised
   * if that entry applied, after `pendingApplies` more keyed entries apply first. False once
   * a key newer than `notBefore` may have left, or could leave before the retry's entry applies.
   */
  coversRetry(notBefore: number, pendingApplies: number): boolean {
    if (this.evictedThrough > notBefore) return false;
    // Evictions take the oldest first: free slots fill, then keys at or below notBefore leave.
    return this.capacity - this.keys.size + this.countAppliedAtOrBelow(notBefore) >= pendingApplies;
  }

  /** Keys applied at or below `index` (a binary search: indexes grow from the head). */
  private countAppliedAtOrBelow(index: number): number {
    let lo = 0;
    let hi = this.keys.size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.indexes[(this.head + mid) % this.capacity] <= index) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The keys oldest first, 8 bytes each (big-endian doubles): the replicated form. */
  toBytes(): Buffer {
    const size = this.keys.size;
    const out = Buffer.allocUnsafe(size * 8);
    for (let i = 0; i < size; i++) out.writeDoubleBE(this.ring[(this.head + i) % this.capacity], i * 8);
    return out;
  }

  /**
   * Replaces the window with `bytes` (toBytes' form), the window of a state applied up to
   * `appliedIndex`; beyond the capacity, the newest keys stay. Every key counts as applied at
   * `appliedIndex`, and a full window as having let keys up to it go (a window only loses keys
   * once full, and those were older than any it kept).
   */
  load(bytes: Uint8Array, appliedIndex: number): void {
    if (bytes.byteLength % 8 !== 0) throw new Corruption(`dedupe table of ${bytes.byteLength} bytes`);
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.keys.clear();
    this.head = 0;
    this.evictedThrough = 0;
    for (let at = 0; at < b.length; at += 8) {
      const key = b.readDoubleBE(at);
      if (key !== 0 && !isKey(key)) throw new Corruption(`dedupe table: key ${key} is no request key`);
      if (key !== 0 && !this.keys.has(key)) this.remember(key, appliedIndex);
    }
    this.evictedThrough = this.keys.size === this.capacity ? appliedIndex : 0;
  }
}
