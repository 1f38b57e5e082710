/**
 * Waits between the attempts of a retry loop, spread at random so that loops do not stay in
 * step: several nodes retrying against one peer after it restarts, or a loop whose period
 * divides a periodic round's on the far side (a rebuild check retried every 500 ms against
 * check-quorum rounds of 1 s kept landing at the same points of the round). Used outside the
 * deterministic core only: src/raft and src/check draw from their seeded source instead.
 */
import { assert } from './assert.js';

/**
 * A wait of `nominalMs` spread over its upper half ("equal jitter"): at least half of it, so a
 * loop never retries much faster than it means to, and at most all of it, so any bound its
 * callers documented still holds. `random` returns values in [0, 1).
 */
export function jitteredMs(nominalMs: number, random: () => number = Math.random): number {
  assert(Number.isFinite(nominalMs) && nominalMs >= 0, `a retry wait of ${nominalMs} ms`);
  const r = random();
  assert(r >= 0 && r < 1, `a random draw of ${r}`);
  // Clamped: for the tiniest (subnormal) waits the sum can round past the nominal value.
  return Math.min(nominalMs, nominalMs / 2 + (r * nominalMs) / 2);
}
