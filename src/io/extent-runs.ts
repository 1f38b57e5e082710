/**
 * A walk over a file's extent map. BlockFile.extentMap answers at most `maxRuns` runs and may
 * stop short of the range's end; a walk asks again from where the last run ended.
 */
import type { BlockFile, ExtentKind } from './types.js';

/** One run of an extent map, in bytes: [start, end) of one kind. */
export interface ExtentRun {
  start: number;
  end: number;
  kind: ExtentKind;
}

/**
 * The runs of [startBytes, endBytes), in order, clipped to the range and to where the walk has
 * got, asking at most `runsPerCall` runs a call. A run that ends at or before that point is
 * skipped. The walk ends at the range's end, or when an answer is empty or reaches no further
 * than the point it was asked from (asking again would answer the same). The next call is
 * asked only when the caller wants the run after the last one answered, so a caller that
 * stops early (break, return) causes no further call.
 */
export async function* extentRuns(
  file: Pick<BlockFile, 'extentMap'>,
  startBytes: number,
  endBytes: number,
  runsPerCall: number,
): AsyncGenerator<ExtentRun, void, undefined> {
  let cursor = startBytes;
  while (cursor < endBytes) {
    const askedFrom = cursor;
    const map = await file.extentMap(cursor, endBytes, runsPerCall);
    for (let i = 0; i + 2 < map.length; i += 3) {
      const end = Math.min(map[i + 1], endBytes);
      if (end <= cursor) continue;
      const start = Math.max(map[i], cursor);
      cursor = end;
      yield { start, end, kind: map[i + 2] as ExtentKind };
    }
    if (cursor === askedFrom) return;
  }
}
