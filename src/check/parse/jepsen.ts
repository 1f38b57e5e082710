/**
 * Jepsen's log lines for a single compare-and-set register (the etcd tests):
 *
 *   INFO  jepsen.util - 3	:invoke	:cas	[3 0]
 *   INFO  jepsen.util - 3	:fail	:cas	[3 0]
 *
 * Lines without `jepsen.util -`, and those of non-numeric processes (the nemesis), are
 * ignored; a malformed operation line is an error naming its line.
 */
import { InvalidArgument } from '../../common/errors.js';
import { HistoryRecorder } from '../history.js';
import type { Operation } from '../model.js';
import { okOutput, type RegisterInput, type RegisterOutput, type RegisterValue } from '../models/cas-register.js';
import type { Model } from '../model.js';

export interface ParsedHistory<I, O> {
  operations: Operation<I, O>[];
  /** Operation events read. */
  events: number;
  /** Operations dropped because they constrain nothing. */
  dropped: number;
}

const linePattern = /jepsen\.util\s+-\s+(\S+)\s+(:\S+)\s+(:\S+)\s*(.*?)\s*$/;

function parseValue(text: string, lineNo: number): RegisterValue {
  if (text === 'nil') return null;
  if (/^-?\d+$/.test(text)) return Number(text);
  throw new InvalidArgument(`line ${lineNo}: expected an integer or nil, got ${JSON.stringify(text)}`);
}

function parsePair(text: string, lineNo: number): [RegisterValue, RegisterValue] {
  const m = /^\[\s*(\S+)\s+(\S+)\s*\]$/.exec(text);
  if (m === null) throw new InvalidArgument(`line ${lineNo}: expected [A B] for a cas, got ${JSON.stringify(text)}`);
  return [parseValue(m[1], lineNo), parseValue(m[2], lineNo)];
}

export function parseJepsenLog(
  text: string,
  model: Model<RegisterValue, RegisterInput, RegisterOutput>,
): ParsedHistory<RegisterInput, RegisterOutput> {
  const h = new HistoryRecorder(model);
  let events = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const m = linePattern.exec(lines[i]);
    if (m === null) continue;
    const [, processText, type, f, valueText] = m;
    if (!/^\d+$/.test(processText)) continue; // :nemesis and other non-client lines
    const process = Number(processText);
    events++;
    try {
      if (type === ':invoke') {
        let input: RegisterInput;
        if (f === ':read') input = { f: 'read' };
        else if (f === ':write') input = { f: 'write', value: parseValue(valueText, lineNo) };
        else if (f === ':cas' && model.name !== 'register') {
          const [from, to] = parsePair(valueText, lineNo);
          input = { f: 'cas', from, to };
        } else throw new InvalidArgument(`line ${lineNo}: unknown operation ${f}`);
        h.invoke(process, input);
        continue;
      }
      const pending = h.pendingInput(process);
      if (pending === undefined) throw new InvalidArgument(`line ${lineNo}: process ${process} completes ${f} with no operation in flight`);
      if (`:${pending.f}` !== f) throw new InvalidArgument(`line ${lineNo}: process ${process} completes ${f} but invoked :${pending.f}`);
      if (type === ':ok') {
        h.ok(process, pending.f === 'read' ? { status: 'ok', value: parseValue(valueText, lineNo) } : okOutput);
      } else if (type === ':fail') {
        h.fail(process);
      } else if (type === ':info') {
        h.info(process);
      } else {
        throw new InvalidArgument(`line ${lineNo}: unknown event type ${type}`);
      }
    } catch (err) {
      if (err instanceof InvalidArgument && !err.message.startsWith('line ')) {
        throw new InvalidArgument(`line ${lineNo}: ${err.message}`);
      }
      throw err;
    }
  }
  return { operations: h.operations(), events, dropped: h.dropped };
}
