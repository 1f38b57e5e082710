/**
 * The replicated state machine the simulator drives: string keys holding registers, with
 * unique-value writes and compare-and-set. Commands travel through the log as small JSON
 * documents (the simulator is not a hot path); reads never enter the log.
 */
import { assert } from '../common/assert.js';

export type KvCommand =
  | { f: 'write'; key: string; value: number; client: number; req: number }
  | { f: 'cas'; key: string; from: number | null; to: number; client: number; req: number };

export interface KvResult {
  ok: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCommand(c: KvCommand): Uint8Array {
  return enc.encode(JSON.stringify(c));
}

export function decodeCommand(data: Uint8Array): KvCommand {
  return JSON.parse(dec.decode(data)) as KvCommand;
}

export class KvStateMachine {
  applied = 0;
  private readonly values = new Map<string, number | null>();

  get(key: string): number | null {
    return this.values.get(key) ?? null;
  }

  /** Applies one committed command; returns whether it took effect. */
  apply(index: number, c: KvCommand): KvResult {
    assert(index === this.applied + 1, `kv apply ${index} after ${this.applied}`);
    this.applied = index;
    if (c.f === 'write') {
      this.values.set(c.key, c.value);
      return { ok: true };
    }
    if (this.get(c.key) === c.from) {
      this.values.set(c.key, c.to);
      return { ok: true };
    }
    return { ok: false };
  }

  /** Marks an entry that carries no command (no-op, membership) as applied. */
  skip(index: number): void {
    assert(index === this.applied + 1, `kv skip ${index} after ${this.applied}`);
    this.applied = index;
  }

  snapshot(): Uint8Array {
    const obj: Record<string, number | null> = {};
    for (const k of [...this.values.keys()].sort()) obj[k] = this.values.get(k) ?? null;
    return enc.encode(JSON.stringify({ applied: this.applied, values: obj }));
  }

  static restore(data: Uint8Array, index: number): KvStateMachine {
    const sm = new KvStateMachine();
    sm.applied = index;
    if (data.byteLength === 0) return sm;
    const v = JSON.parse(dec.decode(data)) as { applied: number; values: Record<string, number | null> };
    assert(v.applied === index, `snapshot data at ${v.applied} labelled ${index}`);
    for (const [k, x] of Object.entries(v.values)) sm.values.set(k, x);
    return sm;
  }
}
