/**
 * Jepsen-style EDN event maps for the `kv` model, one a line:
 *
 *   {:process 0, :type :invoke, :f :append, :key "4", :value "x 0 1 y"}
 *   {:process 0, :type :ok, :f :get, :key "5", :value ""}
 *
 * Only flat maps of keywords, strings, integers, nil and booleans are understood.
 */
import { InvalidArgument } from '../../common/errors.js';
import { HistoryRecorder } from '../history.js';
import type { Model } from '../model.js';
import { kvOk, type KvInput, type KvOutput, type KvState } from '../models/kv.js';
import type { ParsedHistory } from './jepsen.js';

type EdnScalar = string | number | boolean | null | { readonly keyword: string };

/** Parses one flat EDN map such as `{:a 1, :b "x", :c :kw, :d nil}`. */
export function parseEdnMap(line: string): Map<string, EdnScalar> {
  let i = 0;
  const n = line.length;
  const skip = (): void => {
    while (i < n && (line[i] === ' ' || line[i] === ',' || line[i] === '\t' || line[i] === '\r')) i++;
  };
  const fail = (what: string): never => {
    throw new InvalidArgument(`${what} at column ${i + 1}`);
  };
  const symbolChar = /[A-Za-z0-9_\-?!*+./<>=]/;
  const readSymbol = (): string => {
    const start = i;
    while (i < n && symbolChar.test(line[i])) i++;
    if (i === start) fail('expected a name');
    return line.slice(start, i);
  };
  const readScalar = (): EdnScalar => {
    const c = line[i];
    if (c === ':') {
      i++;
      return { keyword: readSymbol() };
    }
    if (c === '"') {
      i++;
      let s = '';
      for (;;) {
        if (i >= n) fail('unterminated string');
        const ch = line[i++];
        if (ch === '"') return s;
        if (ch === '\\') {
          const esc = line[i++];
          if (esc === 'n') s += '\n';
          else if (esc === 't') s += '\t';
          else if (esc === 'r') s += '\r';
          else if (esc === '"' || esc === '\\') s += esc;
          else fail(`unknown escape \\${esc ?? ''}`);
        } else s += ch;
      }
    }
    const word = readSymbol();
    if (word === 'nil') return null;
    if (word === 'true') return true;
    if (word === 'false') return false;
    if (/^-?\d+$/.test(word)) return Number(word);
    return fail(`unexpected ${JSON.stringify(word)}`);
  };
  const out = new Map<string, EdnScalar>();
  skip();
  if (line[i] !== '{') fail('expected {');
  i++;
  for (;;) {
    skip();
    if (i >= n) fail('unterminated map');
    if (line[i] === '}') {
      i++;
      break;
    }
    const k = readScalar();
    if (k === null || typeof k !== 'object') fail('map keys must be keywords');
    skip();
    if (i >= n || line[i] === '}') fail(`missing value for :${(k as { keyword: string }).keyword}`);
    out.set((k as { keyword: string }).keyword, readScalar());
  }
  skip();
  if (i < n) fail('text after the map');
  return out;
}

function keywordOf(v: EdnScalar | undefined): string | undefined {
  return v !== null && typeof v === 'object' ? v.keyword : undefined;
}

export function parseKvEdn(text: string, model: Model<KvState, KvInput, KvOutput>): ParsedHistory<KvInput, KvOutput> {
  const h = new HistoryRecorder(model);
  let events = 0;
  const lines = text.split('\n');
  for (let idx = 0; idx < lines.length; idx++) {
    const line = lines[idx].trim();
    if (line === '' || line.startsWith(';')) continue;
    const lineNo = idx + 1;
    try {
      const m = parseEdnMap(line);
      const process = m.get('process');
      if (typeof process !== 'number' || !Number.isSafeInteger(process)) throw new InvalidArgument('expected an integer :process');
      const type = keywordOf(m.get('type'));
      const f = keywordOf(m.get('f'));
      const rawKey = m.get('key');
      if (typeof rawKey !== 'string' && typeof rawKey !== 'number') throw new InvalidArgument('expected a string :key');
      const key = String(rawKey);
      const value = m.get('value');
      if (f !== 'get' && f !== 'put' && f !== 'append') throw new InvalidArgument(`unknown :f ${String(f)}`);
      events++;
      if (type === 'invoke') {
        if (f === 'get') h.invoke(process, { f, key });
        else {
          if (typeof value !== 'string') throw new InvalidArgument(`:${f} needs a string :value`);
          h.invoke(process, { f, key, value });
        }
        continue;
      }
      const pending = h.pendingInput(process);
      if (pending === undefined) throw new InvalidArgument(`process ${process} completes with no operation in flight`);
      if (pending.f !== f || pending.key !== key) {
        throw new InvalidArgument(`process ${process} completes :${f} ${JSON.stringify(key)} but invoked :${pending.f} ${JSON.stringify(pending.key)}`);
      }
      if (type === 'ok') {
        if (f === 'get') {
          if (typeof value !== 'string') throw new InvalidArgument('an :ok :get needs a string :value');
          h.ok(process, { status: 'ok', value });
        } else h.ok(process, kvOk);
      } else if (type === 'fail') h.fail(process);
      else if (type === 'info') h.info(process);
      else throw new InvalidArgument(`unknown :type ${String(type)}`);
    } catch (err) {
      if (err instanceof InvalidArgument) throw new InvalidArgument(`line ${lineNo}: ${err.message}`);
      throw err;
    }
  }
  return { operations: h.operations(), events, dropped: h.dropped };
}
