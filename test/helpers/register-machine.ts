/**
 * The smallest Raft state machine for host tests: it keeps the applied values in order and
 * snapshots them as JSON. Tests extend it to watch one thing (checkpoints, ack-on-commit).
 */
import assert from 'node:assert/strict';
import type { GroupStateMachine } from '../../src/cluster/host.js';

export class Register implements GroupStateMachine {
  appliedIndex = 0;
  durableIndex = 0;
  appliedTerm = 0;
  values: string[] = [];
  skip(index: number, term: number): void {
    this.appliedIndex = index;
    this.appliedTerm = term;
  }
  async apply(index: number, term: number, data: Uint8Array): Promise<unknown> {
    assert.equal(index, this.appliedIndex + 1, 'entries apply without gaps');
    this.appliedIndex = index;
    this.appliedTerm = term;
    if (data.byteLength) this.values.push(Buffer.from(data).toString());
    return this.values.length;
  }
  async checkpoint(): Promise<number> {
    this.durableIndex = this.appliedIndex;
    return this.durableIndex;
  }
  async snapshotImage(): Promise<Uint8Array> {
    return Buffer.from(JSON.stringify(this.values));
  }
  async restoreImage(image: Uint8Array, index: number, term: number): Promise<void> {
    this.values = JSON.parse(Buffer.from(image).toString());
    this.appliedIndex = this.durableIndex = index;
    this.appliedTerm = term;
  }
  async close(): Promise<void> {}
}
