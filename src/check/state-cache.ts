/**
 * The search's memo: a hash set of (linearized-operations bitset, model state) pairs.
 *
 * Held in flat typed arrays (open addressing, linear probing) rather than one object per
 * entry: a large search memoizes millions of pairs, and per-entry objects would make the
 * garbage collector, not the search, the bottleneck. Bitsets sit back to back in one pool.
 */
import { assert } from '../common/assert.js';

const initialCapacity = 1024;
/** A guess at what one memoized state object costs on the heap (a kv state: object + string). */
const stateAllowanceBytes = 64;

/** What `add` did. */
export const enum CacheAdd {
  Present = 0,
  Added = 1,
  /** Not added: growing would pass the byte limit. */
  Full = 2,
}

export class StateCache<S> {
  private readonly words: number;
  private readonly equal: (a: S, b: S) => boolean;
  private pool: Uint32Array;
  private keys: Uint32Array;
  private states: S[] = [];
  /** Slot → entry index + 1 (0 = empty). Always at most half full. */
  private table: Int32Array;
  private mask: number;
  size = 0;

  private readonly maxBytes: number;

  constructor(words: number, equal: (a: S, b: S) => boolean, maxBytes = Infinity) {
    assert(words > 0, 'bitset words > 0');
    this.words = words;
    this.maxBytes = maxBytes;
    this.equal = equal;
    this.pool = new Uint32Array(initialCapacity * words);
    this.keys = new Uint32Array(initialCapacity);
    this.table = new Int32Array(initialCapacity * 2);
    this.mask = initialCapacity * 2 - 1;
  }

  /**
   * Bytes the memo costs at a given capacity: per entry its bitset, key, two table slots and
   * state reference, plus an allowance for a state object the model allocated.
   */
  private bytesAt(capacity: number): number {
    return capacity * (this.words * 4 + 4 + 8 + 8 + stateAllowanceBytes);
  }

  /** Adds (bits, state) under `key`, unless an equal pair is already present or there is no room. */
  add(key: number, bits: Uint32Array, state: S): CacheAdd {
    const words = this.words;
    const pool = this.pool;
    let slot = key & this.mask;
    for (;;) {
      const at = this.table[slot];
      if (at === 0) break;
      const idx = at - 1;
      if (this.keys[idx] === key) {
        let same = true;
        const base = idx * words;
        for (let w = 0; w < words; w++) {
          if (pool[base + w] !== bits[w]) {
            same = false;
            break;
          }
        }
        if (same && this.equal(this.states[idx], state)) return CacheAdd.Present;
      }
      slot = (slot + 1) & this.mask;
    }
    const idx = this.size;
    if (idx === this.keys.length) {
      if (this.bytesAt(idx * 2) > this.maxBytes) return CacheAdd.Full;
      this.grow();
      return this.add(key, bits, state);
    }
    this.pool.set(bits, idx * words);
    this.keys[idx] = key;
    this.states.push(state);
    this.table[slot] = idx + 1;
    this.size++;
    return CacheAdd.Added;
  }

  private grow(): void {
    const capacity = this.keys.length * 2;
    const pool = new Uint32Array(capacity * this.words);
    pool.set(this.pool);
    this.pool = pool;
    const keys = new Uint32Array(capacity);
    keys.set(this.keys);
    this.keys = keys;
    this.table = new Int32Array(capacity * 2);
    this.mask = capacity * 2 - 1;
    for (let idx = 0; idx < this.size; idx++) {
      let slot = keys[idx] & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = idx + 1;
    }
  }
}
