import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgument } from '../../src/common/errors.js';
import { blockModel, casRegisterModel, kvModel } from '../../src/check/index.js';
import { parseBlockJsonl, parseEdnMap, parseHistory, parseJepsenLog, parseKvEdn } from '../../src/check/parse/index.js';

const bad = (re: RegExp) => (e: unknown) => e instanceof InvalidArgument && re.test((e as Error).message);

test('EDN maps: keywords, strings with escapes, integers, nil; commas are whitespace', () => {
  const m = parseEdnMap('{:process 12, :type :ok, :f :get, :key "a \\"b\\"", :value nil, :x -3}');
  assert.equal(m.get('process'), 12);
  assert.deepEqual(m.get('type'), { keyword: 'ok' });
  assert.equal(m.get('key'), 'a "b"');
  assert.equal(m.get('value'), null);
  assert.equal(m.get('x'), -3);
  assert.throws(() => parseEdnMap('{:a "unterminated}'), bad(/unterminated string/));
  assert.throws(() => parseEdnMap('{:a 1} trailing'), bad(/text after the map/));
  assert.throws(() => parseEdnMap('{"a" 1}'), bad(/keys must be keywords/));
});

test('kv events: a completion must match its invocation; errors name the line', () => {
  const inv = '{:process 0, :type :invoke, :f :append, :key "1", :value "x"}';
  assert.throws(() => parseKvEdn(`${inv}\n{:process 0, :type :ok, :f :append, :key "2", :value "x"}`, kvModel), bad(/^line 2: .*invoked :append "1"/));
  assert.throws(() => parseKvEdn(`${inv}\n${inv}`, kvModel), bad(/^line 2: .*in flight/));
  assert.throws(() => parseKvEdn('{:process 0, :type :ok, :f :get, :key "1", :value ""}', kvModel), bad(/^line 1: .*no operation in flight/));
  assert.throws(() => parseKvEdn('{:process 0, :type :invoke, :f :cas, :key "1", :value "x"}', kvModel), bad(/^line 1: unknown :f cas/));
  const h = parseKvEdn(`${inv}\n{:process 0, :type :info, :f :append, :key "1", :value "x"}\n`, kvModel);
  assert.equal(h.operations[0].returnAt, Infinity);
});

test('jepsen lines: malformed values and mismatched completions are errors naming the line', () => {
  const line = (p: string, rest: string) => `INFO  jepsen.util - ${p}\t${rest}`;
  assert.throws(() => parseJepsenLog(line('1', ':invoke\t:write\tx'), casRegisterModel), bad(/^line 1: expected an integer or nil/));
  assert.throws(() => parseJepsenLog(line('1', ':invoke\t:cas\t[1]'), casRegisterModel), bad(/^line 1: expected \[A B\]/));
  assert.throws(() => parseJepsenLog(line('1', ':invoke\t:frob\tnil'), casRegisterModel), bad(/^line 1: unknown operation :frob/));
  assert.throws(
    () => parseJepsenLog([line('1', ':invoke\t:read\tnil'), line('1', ':ok\t:write\t3')].join('\n'), casRegisterModel),
    bad(/^line 2: process 1 completes :write but invoked :read/),
  );
  // The register model has no CAS: a CAS line is an error, not a silent conviction.
  assert.throws(() => parseHistory(line('1', ':invoke\t:cas\t[1 2]'), 'register'), bad(/unknown operation :cas/));
});

test('block events: every field is checked', () => {
  const one = (o: object) => () => parseBlockJsonl(JSON.stringify(o), blockModel);
  assert.throws(one({ process: 'a', type: 'invoke', f: 'read', block: 1 }), bad(/"process" must be an integer/));
  assert.throws(one({ process: 1, type: 'begin', f: 'read', block: 1 }), bad(/"type" must be/));
  assert.throws(one({ process: 1, type: 'invoke', f: 'trim', block: 1 }), bad(/"f" must be read or write/));
  assert.throws(one({ process: 1, type: 'invoke', f: 'read', block: -1 }), bad(/"block" must be/));
  assert.throws(one({ process: 1, type: 'invoke', f: 'write', block: 1 }), bad(/a write needs "value"/));
  assert.throws(one({ process: 1, type: 'invoke', f: 'write', block: 1, value: { x: 1 } }), bad(/"value" must be/));
  assert.throws(one([1, 2]), bad(/expected a JSON object/));
  const readNoValue = [
    { process: 1, type: 'invoke', f: 'read', block: 1 },
    { process: 1, type: 'ok', f: 'read', block: 1 },
  ];
  assert.throws(() => parseBlockJsonl(readNoValue.map((o) => JSON.stringify(o)).join('\n'), blockModel), bad(/^line 2: an ok read needs "value"/));
  const tagAlias = [
    { process: 1, type: 'invoke', f: 'write', block: 'vol0/3', tag: 't1' },
    { process: 1, type: 'ok', f: 'write', block: 'vol0/3', tag: 't1' },
  ];
  const h = parseBlockJsonl(tagAlias.map((o) => JSON.stringify(o)).join('\n'), blockModel);
  assert.deepEqual(h.operations[0].input, { f: 'write', block: 'vol0/3', tag: 't1' });
});

test('unknown model names are refused', () => {
  assert.throws(() => parseHistory('', 'queue'), bad(/unknown model "queue"/));
});
