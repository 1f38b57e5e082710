/**
 * A set of positive safe integers of bounded size, for keys looked up on every write (the
 * request keys a PG remembers, store/recent-requests.ts). A JS Set of such numbers keeps each
 * as a heap number and pays a hash-table walk, an allocation and a rehash now and then for
 * every add and delete: a few percent of a replica's CPU at 4 KiB writes. This one is a flat
 * Float64Array, open addressing with linear probing at a load of at most one half, and deletion
 * by shifting the probe run back (no tombstones, so lookups never slow down as keys come and
 * go). It allocates nothing after construction.
 */
import { assert } from './assert.js';
import { AssertionFailed } from './errors.js';

/** True for the keys a KeySet holds: positive safe integers (0 marks an empty slot). */
export function isKey(key: number): boolean {
  return Number.isSafeInteger(key) && key > 0;
}

export class KeySet {
  private readonly slots: Float64Array;
  private readonly mask: number;
  private count = 0;

  /** Room for `capacity` keys. */
  constructor(readonly capacity: number) {
    assert(Number.isSafeInteger(capacity) && capacity >= 1 && capacity <= 2 ** 26, `a key set of ${capacity} keys`);
    let slots = 2;
    while (slots < 2 * capacity) slots *= 2;
    this.slots = new Float64Array(slots);
    this.mask = slots - 1;
  }

  get size(): number {
    return this.count;
  }

  has(key: number): boolean {
    if (!isKey(key)) return false;
    const slots = this.slots;
    for (let i = this.home(key); ; i = (i + 1) & this.mask) {
      const k = slots[i];
      if (k === key) return true;
      if (k === 0) return false;
    }
  }

  /** Adds `key` (a positive safe integer); true if it was not there. */
  add(key: number): boolean {
    // (Checked without building a message per call: this runs on every write.)
    if (!isKey(key)) throw new AssertionFailed(`key ${key} is no positive safe integer`);
    const slots = this.slots;
    let i = this.home(key);
    for (; slots[i] !== 0; i = (i + 1) & this.mask) if (slots[i] === key) return false;
    if (this.count >= this.capacity) throw new AssertionFailed(`key set full (${this.capacity} keys)`);
    slots[i] = key;
    this.count++;
    return true;
  }

  /** Removes `key`; true if it was there. */
  delete(key: number): boolean {
    if (!isKey(key)) return false;
    const slots = this.slots;
    const mask = this.mask;
    let hole = this.home(key);
    for (; slots[hole] !== key; hole = (hole + 1) & mask) if (slots[hole] === 0) return false;
    // Shift back every later key of the probe run that may sit in the hole: one whose home is
    // not cyclically within (hole, j], so it would no longer be found past the hole.
    for (let j = (hole + 1) & mask; slots[j] !== 0; j = (j + 1) & mask) {
      const home = this.home(slots[j]);
      const staysPut = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (staysPut) continue;
      slots[hole] = slots[j];
      hole = j;
    }
    slots[hole] = 0;
    this.count--;
    return true;
  }

  clear(): void {
    this.slots.fill(0);
    this.count = 0;
  }

  /** The first slot to probe for `key`: both 32-bit halves mixed (keys differ mostly low). */
  private home(key: number): number {
    const lo = key >>> 0;
    const hi = (key - lo) / 4294967296;
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h & this.mask;
  }
}
