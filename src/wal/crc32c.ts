/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every WAL record and
 * batch header. It runs on the append hot path, so there are two implementations:
 *  - the addon's, with the SSE4.2 crc32 instruction (several GB/s), when the addon loaded and
 *    the CPU has it;
 *  - slicing-by-8 in TypeScript (eight 256-entry tables, one 64-bit step per iteration).
 * `crc32c` picks the faster one at load; bench/wal.ts measures both (see bench/README.md).
 * `seed` chains a checksum over pieces: crc32c(b, 0, n) === crc32c(b, k, n, crc32c(b, 0, k)).
 */
import { loadNative } from '../io/native.js';

const poly = 0x82f63b78;
const tables: Int32Array = (() => {
  const t = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i];
    for (let s = 1; s < 8; s++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[s * 256 + i] = c;
    }
  }
  return t;
})();

/** Slicing-by-8 CRC32C of buf[start, end), continuing from `seed` (0 for a fresh checksum). */
export function crc32cTs(buf: Uint8Array, start = 0, end = buf.length, seed = 0): number {
  const t = tables;
  let c = ~seed;
  let i = start;
  // Byte steps until the rest is a multiple of 8.
  while (i < end && (end - i) & 7) c = t[(c ^ buf[i++]) & 0xff] ^ (c >>> 8);
  while (i < end) {
    const lo = c ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24));
    const hi = buf[i + 4] | (buf[i + 5] << 8) | (buf[i + 6] << 16) | (buf[i + 7] << 24);
    c =
      t[1792 + (lo & 0xff)] ^
      t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^
      t[1024 + (lo >>> 24)] ^
      t[768 + (hi & 0xff)] ^
      t[512 + ((hi >>> 8) & 0xff)] ^
      t[256 + ((hi >>> 16) & 0xff)] ^
      t[hi >>> 24];
    i += 8;
  }
  return ~c >>> 0;
}

type CrcFn = (buf: Uint8Array, start?: number, end?: number, seed?: number) => number;

function nativeCrc(): CrcFn | undefined {
  const n = loadNative();
  if (!('addon' in n) || typeof n.addon.crc32c !== 'function' || !n.addon.hasHardwareCrc32c) return undefined;
  const f = n.addon.crc32c;
  return (buf, start = 0, end = buf.length, seed = 0) => f(buf, start, end, seed);
}

/** Below this many bytes the call into the addon costs more than slicing-by-8 in JS. */
const nativeCrcMinBytes = 256;

function hybrid(native: CrcFn): CrcFn {
  return (buf, start = 0, end = buf.length, seed = 0) =>
    end - start < nativeCrcMinBytes ? crc32cTs(buf, start, end, seed) : native(buf, start, end, seed);
}

/** The addon's SSE4.2 CRC32C, or undefined where unavailable. */
export const crc32cNative: CrcFn | undefined = nativeCrc();

/** CRC32C with the fastest implementation available here. */
export const crc32c: CrcFn = crc32cNative ? hybrid(crc32cNative) : crc32cTs;
/** Which implementation `crc32c` is. */
export const crc32cImpl: 'sse4.2' | 'ts-slicing-by-8' = crc32cNative ? 'sse4.2' : 'ts-slicing-by-8';
