/**
 * Builds a history of operations from invoke/complete events, as a test harness or a
 * simulator records them. Each process has at most one operation in flight. A completion is
 * `ok` (with its output), `fail` (definitely not applied) or `info` (unknown outcome); an
 * operation still in flight when the history ends has an unknown outcome too. What `fail`
 * and unknown outcomes mean is the model's call (`failedOutput`, `unknownOutput`): some
 * constrain the state, some are dropped because they constrain nothing.
 *
 * Times: by default each event gets the next number of a counter, so the order in which
 * events are recorded is the real-time order. A caller may pass its own times instead
 * (simulated ticks, monotonic clock readings); equal times count as concurrent.
 */
import { InvalidArgument } from '../common/errors.js';
import type { Model, Operation } from './model.js';

interface InFlight<I> {
  readonly input: I;
  readonly callAt: number;
}

export class HistoryRecorder<I, O> {
  private readonly inFlight = new Map<number, InFlight<I>>();
  private readonly done: Operation<I, O>[] = [];
  private clock = 0;
  private lastTime = -Infinity;
  private droppedCount = 0;

  constructor(private readonly model: Model<unknown, I, O>) {}

  private time(given: number | undefined): number {
    const t = given ?? ++this.clock;
    if (!Number.isFinite(t)) throw new InvalidArgument(`event time must be a finite number, got ${t}`);
    if (t < this.lastTime) throw new InvalidArgument(`event times go backwards (${t} after ${this.lastTime})`);
    this.lastTime = t;
    if (given !== undefined && given > this.clock) this.clock = given;
    return t;
  }

  private take(process: number, what: string): InFlight<I> {
    const pending = this.inFlight.get(process);
    if (pending === undefined) throw new InvalidArgument(`process ${process} completes (${what}) with no operation in flight`);
    this.inFlight.delete(process);
    return pending;
  }

  /** Process `process` invokes an operation. */
  invoke(process: number, input: I, time?: number): void {
    if (this.inFlight.has(process)) throw new InvalidArgument(`process ${process} invokes while its previous operation is in flight`);
    this.inFlight.set(process, { input, callAt: this.time(time) });
  }

  /** The in-flight operation of `process` completed with `output`. */
  ok(process: number, output: O, time?: number): void {
    const p = this.take(process, 'ok');
    this.done.push({ process, input: p.input, output, callAt: p.callAt, returnAt: this.time(time) });
  }

  /** The in-flight operation of `process` definitely did not take effect. */
  fail(process: number, time?: number): void {
    const p = this.take(process, 'fail');
    const returnAt = this.time(time);
    const output = this.model.failedOutput(p.input);
    if (output === null) this.droppedCount++;
    else this.done.push({ process, input: p.input, output, callAt: p.callAt, returnAt });
  }

  /** The outcome of the in-flight operation of `process` is unknown (e.g. it timed out). */
  info(process: number, time?: number): void {
    const p = this.take(process, 'info');
    this.time(time);
    const output = this.model.unknownOutput(p.input);
    if (output === null) this.droppedCount++;
    else this.done.push({ process, input: p.input, output, callAt: p.callAt, returnAt: Infinity });
  }

  /** The input of the in-flight operation of `process`, if any (parsers check completions against it). */
  pendingInput(process: number): I | undefined {
    return this.inFlight.get(process)?.input;
  }

  /** Operations dropped because they constrain nothing (failed or unanswered reads, failed writes). */
  get dropped(): number {
    return this.droppedCount;
  }

  /** The history: every completed operation, plus those still in flight as unknown outcomes. */
  operations(): Operation<I, O>[] {
    const ops = this.done.slice();
    for (const [process, p] of this.inFlight) {
      const output = this.model.unknownOutput(p.input);
      if (output !== null) ops.push({ process, input: p.input, output, callAt: p.callAt, returnAt: Infinity });
    }
    return ops;
  }
}
