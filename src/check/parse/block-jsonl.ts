/**
 * The `block` history format: JSON lines, one event each (see src/check/README.md).
 *
 *   {"process":1,"type":"invoke","f":"write","block":7,"value":"c1-42","time":1200}
 *   {"process":1,"type":"ok","f":"write","block":7,"value":"c1-42","time":1350}
 *   {"process":2,"type":"invoke","f":"read","block":7,"time":1300}
 *   {"process":2,"type":"ok","f":"read","block":7,"value":"c1-42","time":1400}
 *
 * `time` is optional; when every event has one, events are ordered by it (equal times are
 * concurrent), otherwise the line order is the real-time order.
 */
import { InvalidArgument } from '../../common/errors.js';
import { HistoryRecorder } from '../history.js';
import type { Model } from '../model.js';
import { blockOk, type BlockId, type BlockInput, type BlockOutput, type BlockTag } from '../models/block.js';
import type { ParsedHistory } from './jepsen.js';

interface BlockEvent {
  lineNo: number;
  process: number;
  type: 'invoke' | 'ok' | 'fail' | 'info';
  f: 'read' | 'write';
  block: BlockId;
  value: BlockTag | undefined;
  time: number | undefined;
}

function parseEvent(line: string, lineNo: number): BlockEvent {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (err) {
    throw new InvalidArgument(`line ${lineNo}: not JSON (${(err as Error).message})`);
  }
  const bad = (what: string): never => {
    throw new InvalidArgument(`line ${lineNo}: ${what}`);
  };
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return bad('expected a JSON object');
  const o = obj as Record<string, unknown>;
  const { process, type, f, block, time } = o;
  if (typeof process !== 'number' || !Number.isSafeInteger(process)) bad('"process" must be an integer');
  if (type !== 'invoke' && type !== 'ok' && type !== 'fail' && type !== 'info') bad('"type" must be invoke, ok, fail or info');
  if (f !== 'read' && f !== 'write') bad('"f" must be read or write');
  const blockOk = (typeof block === 'number' && Number.isSafeInteger(block) && block >= 0) || (typeof block === 'string' && block !== '');
  if (!blockOk) bad('"block" must be a non-negative integer or a non-empty string');
  if (time !== undefined && (typeof time !== 'number' || !Number.isFinite(time))) bad('"time" must be a finite number');
  const raw = 'value' in o ? o.value : o.tag;
  if (raw !== undefined && raw !== null && typeof raw !== 'string' && typeof raw !== 'number') bad('"value" must be a string, a number or null');
  return {
    lineNo,
    process: process as number,
    type: type as BlockEvent['type'],
    f: f as BlockEvent['f'],
    block: block as BlockId,
    value: raw as BlockTag | undefined,
    time: time as number | undefined,
  };
}

export function parseBlockJsonl(text: string, model: Model<BlockTag, BlockInput, BlockOutput>): ParsedHistory<BlockInput, BlockOutput> {
  const events: BlockEvent[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    events.push(parseEvent(line, i + 1));
  }
  const timed = events.filter((e) => e.time !== undefined).length;
  if (timed !== 0 && timed !== events.length) {
    throw new InvalidArgument(`"time" is on ${timed} of ${events.length} events: give it on every event or on none`);
  }
  // Stable: equal times keep their line order.
  if (timed > 0) events.sort((a, b) => (a.time as number) - (b.time as number) || a.lineNo - b.lineNo);

  const h = new HistoryRecorder(model);
  for (const e of events) {
    try {
      if (e.type === 'invoke') {
        if (e.f === 'write') {
          if (e.value === undefined) throw new InvalidArgument('a write needs "value" (its tag, or null for zeroing)');
          h.invoke(e.process, { f: 'write', block: e.block, tag: e.value }, e.time);
        } else h.invoke(e.process, { f: 'read', block: e.block }, e.time);
        continue;
      }
      const pending = h.pendingInput(e.process);
      if (pending === undefined) throw new InvalidArgument(`process ${e.process} completes with no operation in flight`);
      if (pending.f !== e.f || String(pending.block) !== String(e.block)) {
        throw new InvalidArgument(`process ${e.process} completes ${e.f} of block ${e.block} but invoked ${pending.f} of block ${pending.block}`);
      }
      if (e.type === 'ok') {
        if (e.f === 'read') {
          if (e.value === undefined) throw new InvalidArgument('an ok read needs "value" (the tag read, or null)');
          h.ok(e.process, { status: 'ok', tag: e.value }, e.time);
        } else h.ok(e.process, blockOk, e.time);
      } else if (e.type === 'fail') h.fail(e.process, e.time);
      else h.info(e.process, e.time);
    } catch (err) {
      if (err instanceof InvalidArgument && !err.message.startsWith('line ')) throw new InvalidArgument(`line ${e.lineNo}: ${err.message}`);
      throw err;
    }
  }
  return { operations: h.operations(), events: events.length, dropped: h.dropped };
}
