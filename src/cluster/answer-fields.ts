/**
 * Field checks for an answer read from a node's admin API (admin-answers.ts).
 *
 * Why: an answer comes from a socket. A node of another build, a process squatting on a reused
 * port, or a broken proxy may answer with JSON of another shape. Checked field by field, such an
 * answer is a ProtocolError naming the first wrong field, not a TypeError from deep inside the
 * command that reads it. Strings a command prints are made printable and bounded (printable),
 * so an answer cannot drive the operator's terminal.
 */
import { ProtocolError } from '../common/errors.js';
import { maxNodeId } from './map.js';

/**
 * `text` without control characters (a terminal's escapes), line or paragraph separators and
 * bidirectional overrides (text that would display other than it reads), cut to `maxChars`
 * code points (never inside a surrogate pair).
 */
export function printable(text: string, maxChars: number): string {
  const clean = [...text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, ' ')];
  return clean.length > maxChars ? `${clean.slice(0, maxChars - 1).join('')}…` : clean.join('');
}

/** JSON's null is taken as absent, as JSON.stringify writes no undefined. */
export function optional<T>(x: unknown, check: (v: unknown) => T): T | undefined {
  return x === undefined || x === null ? undefined : check(x);
}

/** The checks of one kind of answer; each error reads `malformed ANSWER: FIELD PROBLEM (got VALUE)`. */
export class AnswerFields {
  /** `answer` names the kind in errors, e.g. "status answer". */
  constructor(private readonly answer: string) {}

  bad(field: string, problem: string, value: unknown): ProtocolError {
    const shown =
      value === undefined
        ? 'absent'
        : typeof value === 'string'
          ? JSON.stringify(printable(value, 40))
          : Array.isArray(value)
            ? 'an array'
            : value === null
              ? 'null'
              : typeof value === 'object'
                ? 'an object'
                : printable(String(value), 40);
    return new ProtocolError(`malformed ${this.answer}: ${field} ${problem} (got ${shown})`);
  }

  object(x: unknown, field: string): Record<string, unknown> {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) throw this.bad(field, 'is not an object', x);
    return x as Record<string, unknown>;
  }

  array(x: unknown, field: string): unknown[] {
    if (!Array.isArray(x)) throw this.bad(field, 'is not an array', x);
    return x;
  }

  integer(x: unknown, field: string, min: number, max: number): number {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min || x > max) throw this.bad(field, `is not an integer in ${min}..${max}`, x);
    return x;
  }

  /** A non-negative integer (an epoch, an index, a duration). */
  count(x: unknown, field: string): number {
    return this.integer(x, field, 0, Number.MAX_SAFE_INTEGER);
  }

  nodeId(x: unknown, field: string): number {
    return this.integer(x, field, 1, maxNodeId);
  }

  string(x: unknown, field: string): string {
    if (typeof x !== 'string') throw this.bad(field, 'is not a string', x);
    return x;
  }

  /** A string matching `pattern` (a name, a digest: already printable by its pattern). */
  matching(x: unknown, field: string, pattern: RegExp, what: string): string {
    if (typeof x !== 'string' || !pattern.test(x)) throw this.bad(field, `is no ${what}`, x);
    return x;
  }

  boolean(x: unknown, field: string): boolean {
    if (typeof x !== 'boolean') throw this.bad(field, 'is not true or false', x);
    return x;
  }

  nodeIds(x: unknown, field: string): number[] {
    return this.array(x, field).map((id, i) => this.nodeId(id, `${field}[${i}]`));
  }
}
