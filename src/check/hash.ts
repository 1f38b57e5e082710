/** Small deterministic 32-bit hashes for model states and linearized-set keys. */

/** murmur3's finalizer: spreads every input bit over the 32-bit result. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** FNV-1a's offset basis: the hash of ''. */
export const emptyStringHash = 0x811c9dc5;

/** FNV-1a over UTF-16 code units. */
export function hashString(s: string): number {
  return continueStringHash(emptyStringHash, s);
}

/** hashString(a + b) from hashString(a) and b: FNV-1a runs left to right. */
export function continueStringHash(hashOfPrefix: number, s: string): number {
  let h = hashOfPrefix;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Hash of a register-like value: null, a number or a string (distinct kinds hash apart). */
export function hashValue(v: string | number | null): number {
  if (v === null) return 0x9e3779b9;
  if (typeof v === 'number') {
    if (Number.isInteger(v) && Math.abs(v) <= 0x7fffffff) return mix32(v | 0);
    return hashString(`n${v}`);
  }
  return mix32(hashString(v) ^ 0x5bd1e995);
}

/** Combines two hashes (order matters). */
export function combineHash(a: number, b: number): number {
  return mix32((Math.imul(a, 31) + b) | 0);
}
