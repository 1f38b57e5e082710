/**
 * The peers' store command levels a node keeps in its data dir (peer-levels-file.ts): written
 * after each change a peer tells (changes told during a write follow it), read back at start,
 * and a file that cannot be trusted is reported and ignored rather than stopping the node (the
 * levels are a hint: they are learned again from the peers' frames).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePeerLevels, PeerLevelsFile, peerLevelsFileName } from '../../src/cluster/peer-levels-file.js';
import { maxStoreOpsLevel } from '../../src/store/ops.js';

// Real disk, not tmpfs: the file is written with fsync and a rename.
const base = process.env.RAFTBLOCK_TEST_DIR ?? (process.platform === 'linux' ? '/var/tmp' : tmpdir());

async function dataDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(base, 'raftblock-peer-levels-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('what peers told is written, read back by the next start, and written again only on news', async (t) => {
  const dir = await dataDir(t);
  const errors: unknown[] = [];
  const file = new PeerLevelsFile(dir, (err) => errors.push(err));
  assert.deepEqual(await file.load(), { levels: new Map() }, 'no file: nothing known, nothing wrong');
  file.note('3', 3);
  file.note('12', 1);
  file.note('2', 3);
  file.note('3', 2); // told during the first write: written after it
  await file.settled();
  assert.deepEqual(JSON.parse(await readFile(join(dir, peerLevelsFileName), 'utf8')), { levels: { '2': 3, '3': 2, '12': 1 } });
  const next = new PeerLevelsFile(dir, (err) => errors.push(err));
  const loaded = await next.load();
  assert.equal(loaded.problem, undefined);
  assert.deepEqual([...loaded.levels], [['2', 3], ['3', 2], ['12', 1]]);
  // The same level again is no news: the file is not written (a write renames a new file in
  // place, so its inode would change).
  const inode = (await stat(join(dir, peerLevelsFileName))).ino;
  next.note('3', 2);
  await next.settled();
  assert.equal((await stat(join(dir, peerLevelsFileName))).ino, inode, 'rewritten with nothing new');
  next.note('3', 3);
  await next.settled();
  assert.notEqual((await stat(join(dir, peerLevelsFileName))).ino, inode, 'news is written');
  assert.deepEqual(errors, []);
});

test("a removed node's level is forgotten from the file; forgetting one the file lacks writes nothing", async (t) => {
  const dir = await dataDir(t);
  const errors: unknown[] = [];
  const file = new PeerLevelsFile(dir, (err) => errors.push(err));
  file.note('2', 3);
  file.note('9', 1);
  await file.settled();
  assert.deepEqual(file.ids().sort(), ['2', '9']);
  file.forget('9');
  await file.settled();
  assert.deepEqual(JSON.parse(await readFile(join(dir, peerLevelsFileName), 'utf8')), { levels: { '2': 3 } });
  assert.deepEqual(file.ids(), ['2']);
  const inode = (await stat(join(dir, peerLevelsFileName))).ino;
  file.forget('9');
  file.forget('4');
  await file.settled();
  assert.equal((await stat(join(dir, peerLevelsFileName))).ino, inode, 'nothing to forget: not rewritten');
  assert.deepEqual([...(await new PeerLevelsFile(dir, (err) => errors.push(err)).load()).levels], [['2', 3]], 'the next start reads it without node 9');
  assert.deepEqual(errors, []);
});

test('a write that fails is reported, and the node goes on', async (t) => {
  const dir = await dataDir(t);
  const errors: unknown[] = [];
  const gone = join(dir, 'gone');
  const file = new PeerLevelsFile(gone, (err) => errors.push(err));
  file.note('2', 3);
  await file.settled();
  assert.equal(errors.length, 1);
  assert.match((errors[0] as Error).message, /ENOENT/);
  await mkdir(gone);
  file.note('2', 2);
  await file.settled();
  assert.deepEqual(JSON.parse(await readFile(join(gone, peerLevelsFileName), 'utf8')), { levels: { '2': 2 } });
});

test('a file that cannot be trusted is ignored whole, with the reason', async (t) => {
  const dir = await dataDir(t);
  const cases: [string, RegExp][] = [
    ['{"levels": {"2": 3', /not JSON/],
    ['[]', /no "levels" object/],
    ['{"levels": [3]}', /no "levels" object/],
    ['null', /no "levels" object/],
    ['{"levels": {"0": 3}}', /"0" is no node id/],
    ['{"levels": {"02": 3}}', /"02" is no node id/],
    ['{"levels": {"2147483648": 3}}', /"2147483648" is no node id/],
    ['{"levels": {"x": 3}}', /"x" is no node id/],
    ['{"levels": {"2": 0}}', /node 2: 0 is no store command level/],
    ['{"levels": {"2": 2.5}}', /node 2: 2.5 is no store command level/],
    ['{"levels": {"2": "3"}}', /node 2: "3" is no store command level/],
    ['{"levels": {"2": 1e9}}', /node 2: 1000000000 is no store command level/],
    ['{"levels": {"2": 65536}}', /node 2: 65536 is no store command level/],
  ];
  // Any level a frame may carry (frame.ts) is one the file keeps: a peer's told level is
  // never what makes the next start ignore the whole file.
  const highest = parsePeerLevels(JSON.stringify({ levels: { '2': maxStoreOpsLevel } }));
  assert.ok('levels' in highest);
  assert.deepEqual([...highest.levels], [['2', maxStoreOpsLevel]]);
  for (const [text, why] of cases) {
    const parsed = parsePeerLevels(text);
    assert.ok('problem' in parsed, text);
    assert.match(parsed.problem, why, text);
    await writeFile(join(dir, peerLevelsFileName), text);
    const loaded = await new PeerLevelsFile(dir, () => undefined).load();
    assert.deepEqual(loaded.levels, new Map(), text);
    assert.ok(loaded.problem?.startsWith(join(dir, peerLevelsFileName) + ': '), `${text}: ${loaded.problem}`);
  }
  // A file the node cannot read at all (here: a directory in its place) is ignored too.
  await rm(join(dir, peerLevelsFileName));
  await mkdir(join(dir, peerLevelsFileName));
  const loaded = await new PeerLevelsFile(dir, () => undefined).load();
  assert.deepEqual(loaded.levels, new Map());
  assert.match(loaded.problem ?? '', /EISDIR/);
});
