/**
 * Structured logs: one JSON object a line on stderr, with a level.
 * Level comes from the caller (the CLI reads RAFTBLOCK_LOG); default `info`.
 */
import { InvalidArgument } from './errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let minRank = levelRank.info;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

/**
 * The level `text` names (RAFTBLOCK_LOG: debug, info, warn or error, in any case), undefined
 * when it is empty or absent; any other text is an InvalidArgument, as for every other setting:
 * a typo would otherwise leave a node logging at another level than asked, without a word.
 */
export function parseLogLevel(text: string | undefined, what = 'RAFTBLOCK_LOG'): LogLevel | undefined {
  if (text === undefined || text === '') return undefined;
  const level = text.toLowerCase();
  if (!Object.hasOwn(levelRank, level)) throw new InvalidArgument(`${what} must be debug, info, warn or error, got ${JSON.stringify(text)}`);
  return level as LogLevel;
}

export function setLogLevel(level: LogLevel): void {
  minRank = levelRank[level];
}

/** Redirects log lines (tests capture them). */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function createLogger(component: string, base: Record<string, unknown> = {}): Logger {
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (levelRank[level] < minRank) return;
    const rec: Record<string, unknown> = { ts: new Date().toISOString(), level, component, msg, ...base, ...fields };
    sink(JSON.stringify(rec, errorReplacer));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (f) => createLogger(component, { ...base, ...f }),
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const e = value as Error & { code?: unknown };
    return { name: e.name, message: e.message, code: e.code };
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}
