/**
 * Runs `run` on every item, at most `limit` at a time, in the items' order: each of up to
 * `limit` lanes takes the next item once its last one is done. Once an item fails no lane
 * starts another (the ones under way finish). Returns the lanes' promises, for the caller to
 * wait as it must: for the first failure (Promise.all) or for every lane to settle.
 */
export function inLanes<T>(items: readonly T[], limit: number, run: (item: T) => Promise<unknown>): Promise<void>[] {
  let next = 0;
  let failed = false;
  const lane = async (): Promise<void> => {
    while (next < items.length && !failed) {
      const item = items[next++];
      try {
        await run(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  return Array.from({ length: Math.min(limit, items.length) }, lane);
}
