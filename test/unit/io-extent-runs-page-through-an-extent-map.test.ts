/**
 * extentRuns walks a range of a file's extent map a call at a time, each call asked from where
 * the last run ended: runs clipped to the range, in order, never one already passed, the walk
 * ending with the range, an empty answer or one that gets no further, and no call asked for
 * runs the caller does not want.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { extentRuns, type ExtentRun } from '../../src/io/extent-runs.js';
import { ExtentKind, type BlockFile } from '../../src/io/types.js';

const B = 4096;
type Call = [start: number, end: number, maxRuns: number];

/**
 * A file whose map is `runs` ([from, to, kind], touching), answering at most `perCall` runs a
 * call, whole: a run that crosses either end of the range asked is not cut.
 */
function pagingFile(runs: [number, number, ExtentKind][], perCall: number): { file: Pick<BlockFile, 'extentMap'>; calls: Call[] } {
  const calls: Call[] = [];
  const file = {
    extentMap: async (start: number, end: number, maxRuns: number): Promise<Float64Array> => {
      calls.push([start, end, maxRuns]);
      const hit = runs.filter(([from, to]) => to > start && from < end).slice(0, Math.min(perCall, maxRuns));
      return Float64Array.from(hit.flat());
    },
  };
  return { file, calls };
}

/** A file that gives `answers` in turn, whatever it is asked. */
function scriptedFile(answers: number[][]): { file: Pick<BlockFile, 'extentMap'>; calls: Call[] } {
  const calls: Call[] = [];
  const file = {
    extentMap: async (start: number, end: number, maxRuns: number): Promise<Float64Array> => {
      calls.push([start, end, maxRuns]);
      const answer = answers.shift();
      assert.ok(answer, `no answer left for a call at ${start}`);
      return Float64Array.from(answer);
    },
  };
  return { file, calls };
}

async function walk(file: Pick<BlockFile, 'extentMap'>, start: number, end: number, runsPerCall: number): Promise<ExtentRun[]> {
  const out: ExtentRun[] = [];
  for await (const run of extentRuns(file, start, end, runsPerCall)) out.push(run);
  return out;
}

const map: [number, number, ExtentKind][] = [
  [0, 1 * B, ExtentKind.Data],
  [1 * B, 3 * B, ExtentKind.Hole],
  [3 * B, 4 * B, ExtentKind.Unwritten],
  [4 * B, 5 * B, ExtentKind.Data],
  [5 * B, 8 * B, ExtentKind.Hole],
];

test('the walk pages from where each answer ended, clipping runs to the range', async () => {
  const { file, calls } = pagingFile(map, 2);
  assert.deepEqual(await walk(file, B / 2, 6 * B, 2), [
    { start: B / 2, end: 1 * B, kind: ExtentKind.Data },
    { start: 1 * B, end: 3 * B, kind: ExtentKind.Hole },
    { start: 3 * B, end: 4 * B, kind: ExtentKind.Unwritten },
    { start: 4 * B, end: 5 * B, kind: ExtentKind.Data },
    { start: 5 * B, end: 6 * B, kind: ExtentKind.Hole },
  ]);
  assert.deepEqual(calls, [
    [B / 2, 6 * B, 2],
    [3 * B, 6 * B, 2],
    [5 * B, 6 * B, 2],
  ]);
});

test('an empty range asks nothing', async () => {
  const { file, calls } = pagingFile(map, 2);
  assert.deepEqual(await walk(file, 2 * B, 2 * B, 2), []);
  assert.deepEqual(calls, []);
});

test('an empty answer ends the walk short of the range', async () => {
  const { file, calls } = scriptedFile([[0, B, ExtentKind.Data], []]);
  assert.deepEqual(await walk(file, 0, 4 * B, 1), [{ start: 0, end: B, kind: ExtentKind.Data }]);
  assert.deepEqual(calls, [
    [0, 4 * B, 1],
    [B, 4 * B, 1],
  ]);
});

test('runs ending at or before where the walk got are skipped, one starting before it is clipped', async () => {
  const { file, calls } = scriptedFile([
    [0, B, ExtentKind.Data, B, 2 * B, ExtentKind.Hole],
    [0, B, ExtentKind.Data, B, 2 * B, ExtentKind.Hole, B, 3 * B, ExtentKind.Unwritten, 3 * B, 4 * B, ExtentKind.Data],
  ]);
  assert.deepEqual(await walk(file, 0, 4 * B, 4), [
    { start: 0, end: B, kind: ExtentKind.Data },
    { start: B, end: 2 * B, kind: ExtentKind.Hole },
    { start: 2 * B, end: 3 * B, kind: ExtentKind.Unwritten },
    { start: 3 * B, end: 4 * B, kind: ExtentKind.Data },
  ]);
  assert.deepEqual(calls, [
    [0, 4 * B, 4],
    [2 * B, 4 * B, 4],
  ]);
});

test('an answer that gets no further than it was asked from ends the walk', async () => {
  const { file, calls } = scriptedFile([[0, B, ExtentKind.Data], [0, B, ExtentKind.Data]]);
  assert.deepEqual(await walk(file, 0, 4 * B, 1), [{ start: 0, end: B, kind: ExtentKind.Data }]);
  assert.equal(calls.length, 2);
});

test('a caller that stops early causes no further call', async () => {
  const { file, calls } = pagingFile(map, 2);
  // Stopping at the last run of an answer: the next answer is never asked for.
  for await (const run of extentRuns(file, 0, 8 * B, 2)) if (run.end === 3 * B) break;
  assert.deepEqual(calls, [[0, 8 * B, 2]]);

  calls.length = 0;
  const stopAt = async (): Promise<number | null> => {
    for await (const run of extentRuns(file, 0, 8 * B, 2)) if (run.kind === ExtentKind.Unwritten) return run.start;
    return null;
  };
  assert.equal(await stopAt(), 3 * B);
  assert.deepEqual(calls, [
    [0, 8 * B, 2],
    [3 * B, 8 * B, 2],
  ]);
});
