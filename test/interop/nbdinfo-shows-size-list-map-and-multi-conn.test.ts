import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describeRun, runTool, runToolOk, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { python3WithNbd, sparseFile } from './clients.js';

const MiB = 1024 * 1024;
const sizeBytes = 4 * MiB;

interface MapEntry {
  offset: number;
  length: number;
  type: number;
  description: string;
}

/** The map's type for every byte of [offset, offset+length) must satisfy `pred`. */
function assertRange(map: MapEntry[], offset: number, length: number, pred: (type: number) => boolean, what: string): void {
  const end = offset + length;
  for (const e of map) {
    const s = Math.max(e.offset, offset);
    const f = Math.min(e.offset + e.length, end);
    if (s < f) assert.ok(pred(e.type), `${what}: [${s}, ${f}) is ${e.description} (type ${e.type})\nmap: ${JSON.stringify(map)}`);
  }
}

const isData = (type: number): boolean => (type & 1) === 0 && (type & 2) === 0;
const isHoleZero = (type: number): boolean => (type & 1) === 1 && (type & 2) === 2;

test('nbdinfo shows size, the export list, the allocation map after writes and trims, and multi-conn', async (t) => {
  if (!requireTools(t, 'nbdinfo', python3WithNbd)) return;
  const dir = tempDir(t);
  const server = await startExportFile(t, { path: join(dir, 'disk.img'), exportName: 'info-disk', sizeBytes });

  const size = await runToolOk('nbdinfo', ['--size', server.uri]);
  assert.equal(size.stdout.trim(), String(sizeBytes));

  const list = await runToolOk('nbdinfo', ['--list', '--json', `nbd://${server.host}:${server.port}`]);
  const listed = JSON.parse(list.stdout) as { exports: { 'export-name': string; 'export-size': number }[] };
  const mine = listed.exports.find((e) => e['export-name'] === 'info-disk');
  assert.ok(mine, `export not listed: ${list.stdout}`);
  assert.equal(mine['export-size'], sizeBytes);

  // A fresh sparse export is one zero hole.
  const fresh = JSON.parse((await runToolOk('nbdinfo', ['--map', '--json', server.uri])).stdout) as MapEntry[];
  assertRange(fresh, 0, sizeBytes, isHoleZero, 'fresh export');

  // Data at [0,1M) and [2M,3M); then trim [2M,2.5M).
  const script = [
    'import nbd, sys',
    'h = nbd.NBD()',
    'h.connect_uri(sys.argv[1])',
    `h.pwrite(b"\\xa5" * ${MiB}, 0)`,
    `h.pwrite(b"\\x5a" * ${MiB}, ${2 * MiB})`,
    'h.flush()',
    `h.trim(${MiB / 2}, ${2 * MiB})`,
    'h.flush()',
    'h.shutdown()',
  ].join('\n');
  const w = await runTool(python3WithNbd, ['-c', script, server.uri]);
  assert.equal(w.code, 0, describeRun('python3 writer', w));

  const map = JSON.parse((await runToolOk('nbdinfo', ['--map', '--json', server.uri])).stdout) as MapEntry[];
  let covered = 0;
  for (const e of map) {
    assert.equal(e.offset, covered, `map is contiguous: ${JSON.stringify(map)}`);
    covered += e.length;
  }
  assert.equal(covered, sizeBytes, 'map covers the export');
  assertRange(map, 0, MiB, isData, 'written');
  assertRange(map, MiB, MiB, isHoleZero, 'never written');
  assertRange(map, 2 * MiB, MiB / 2, isHoleZero, 'trimmed');
  assertRange(map, 2 * MiB + MiB / 2, MiB / 2, isData, 'written, not trimmed');
  assertRange(map, 3 * MiB, MiB, isHoleZero, 'never written');

  const totals = await runToolOk('nbdinfo', ['--map', '--totals', server.uri]);
  assert.match(totals.stdout, /data/, totals.stdout);

  for (const cap of ['multi-conn', 'flush', 'fua', 'trim', 'zero']) {
    const r = await runTool('nbdinfo', ['--can', cap, server.uri]);
    assert.equal(r.code, 0, `--can ${cap}: ${describeRun('nbdinfo', r)}`);
  }
  const ro = await runTool('nbdinfo', ['--is', 'read-only', server.uri]);
  assert.equal(ro.code, 2, `a writable export is not read-only: ${describeRun('nbdinfo', ro)}`);

  assert.equal(await server.stop(), 0, `SIGTERM exits 0; stderr:\n${server.stderr()}`);
});

test('nbdinfo sees a --readonly export as read-only', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const dir = tempDir(t);
  const server = await startExportFile(t, { path: sparseFile(join(dir, 'ro.img'), MiB), exportName: 'ro', readOnly: true });
  const ro = await runTool('nbdinfo', ['--is', 'read-only', server.uri]);
  assert.equal(ro.code, 0, describeRun('nbdinfo --is read-only', ro));
  const write = await runTool('nbdinfo', ['--can', 'write', server.uri]);
  assert.equal(write.code, 2, describeRun('nbdinfo --can write', write));
});
