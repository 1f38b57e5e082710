/**
 * The search's memo: a hash set of (linearized-operations bitset, model state) pairs.
 *
 * Held in flat typed arrays (open addressing, linear probing) rather than one object per
 * entry: a large search memoizes millions of pairs, and per-entry objects would make the
 * garbage collector, not the search, the bottleneck.
 *
 * Bitsets are stored as windows. Operations are numbered in call order and linearized
 * roughly in that order, so a linearized set is nearly always "every operation below some
 * point, plus a few above it". A set is stored as `lo` (the first bitset word that is not
 * all ones; every word below it is) and the words from `lo` up to its last non-zero word.
 * That form is canonical, so two sets are equal iff their windows are; an entry costs a few
 * words however long the partition is.
 */
import { assert } from '../common/assert.js';

const initialCapacity = 1024;
const initialPoolWords = 4096;
/** A guess at what one memoized state object costs on the heap (a kv state: object + string). */
const stateAllowanceBytes = 64;
/** Per entry besides its window: key, lo, offset, length, two table slots, state reference. */
const entryBytes = 4 * 4 + 8 + 8 + stateAllowanceBytes;

/** What `add` did. */
export const enum CacheAdd {
  Present = 0,
  Added = 1,
  /** Not added: growing would pass the byte limit. */
  Full = 2,
}

export class StateCache<S> {
  private readonly equal: (a: S, b: S) => boolean;
  private readonly maxBytes: number;
  private pool: Uint32Array = new Uint32Array(initialPoolWords);
  private poolUsed = 0;
  private keys: Uint32Array = new Uint32Array(initialCapacity);
  private los: Uint32Array = new Uint32Array(initialCapacity);
  private offsets: Uint32Array = new Uint32Array(initialCapacity);
  private lengths: Uint32Array = new Uint32Array(initialCapacity);
  private states: S[] = [];
  /** Slot → entry index + 1 (0 = empty). Always at most half full. */
  private table = new Int32Array(initialCapacity * 2);
  private mask = initialCapacity * 2 - 1;
  size = 0;

  constructor(equal: (a: S, b: S) => boolean, maxBytes = Infinity) {
    this.equal = equal;
    this.maxBytes = maxBytes;
  }

  private bytes(capacity: number, poolWords: number): number {
    return capacity * entryBytes + poolWords * 4;
  }

  /**
   * Adds the set whose words below `lo` are all ones and whose words `lo..hi-1` are
   * `bits[lo..hi-1]` (all later words zero), with `state`, under `key` — unless an equal pair
   * is already present or there is no room.
   */
  add(key: number, bits: Uint32Array, lo: number, hi: number, state: S): CacheAdd {
    const length = hi > lo ? hi - lo : 0;
    const pool = this.pool;
    let slot = key & this.mask;
    for (;;) {
      const at = this.table[slot];
      if (at === 0) break;
      const idx = at - 1;
      if (this.keys[idx] === key && this.los[idx] === lo && this.lengths[idx] === length) {
        let same = true;
        const base = this.offsets[idx];
        for (let w = 0; w < length; w++) {
          if (pool[base + w] !== bits[lo + w]) {
            same = false;
            break;
          }
        }
        if (same && this.equal(this.states[idx], state)) return CacheAdd.Present;
      }
      slot = (slot + 1) & this.mask;
    }
    const idx = this.size;
    const capacity = this.keys.length;
    const needEntries = idx === capacity;
    const needPool = this.poolUsed + length > this.pool.length;
    if (needEntries || needPool) {
      const newCapacity = needEntries ? capacity * 2 : capacity;
      let newPool = this.pool.length;
      while (newPool < this.poolUsed + length) newPool *= 2;
      if (this.bytes(newCapacity, newPool) > this.maxBytes) return CacheAdd.Full;
      if (needPool) this.growPool(newPool);
      if (needEntries) {
        this.growEntries(newCapacity);
        return this.add(key, bits, lo, hi, state);
      }
    }
    const offset = this.poolUsed;
    for (let w = 0; w < length; w++) this.pool[offset + w] = bits[lo + w];
    this.poolUsed += length;
    this.keys[idx] = key;
    this.los[idx] = lo;
    this.offsets[idx] = offset;
    this.lengths[idx] = length;
    this.states.push(state);
    this.table[slot] = idx + 1;
    this.size++;
    return CacheAdd.Added;
  }

  private growPool(words: number): void {
    assert(words >= this.poolUsed, 'the pool only grows');
    const pool = new Uint32Array(words);
    pool.set(this.pool.subarray(0, this.poolUsed));
    this.pool = pool;
  }

  private growEntries(capacity: number): void {
    const grow = (a: Uint32Array): Uint32Array => {
      const b = new Uint32Array(capacity);
      b.set(a);
      return b;
    };
    this.keys = grow(this.keys);
    this.los = grow(this.los);
    this.offsets = grow(this.offsets);
    this.lengths = grow(this.lengths);
    this.table = new Int32Array(capacity * 2);
    this.mask = capacity * 2 - 1;
    for (let idx = 0; idx < this.size; idx++) {
      let slot = this.keys[idx] & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = idx + 1;
    }
  }
}
