/**
 * Per-group state as the WAL knows it: hard state, snapshot metadata, the compaction base, and
 * an index of every live entry (term, type, where its record sits on disk, its payload if
 * cached). Both the live append path and recovery's replay drive it, so they cannot disagree.
 */
import { assert } from '../common/assert.js';
import type { WalHardState } from './types.js';

export class GroupLog {
  hard: WalHardState = { term: 0, vote: 0, commit: 0 };
  /** Entries at or below baseIndex are compacted away (checkpoint or snapshot). */
  baseIndex = 0;
  baseTerm = 0;
  snapIndex = 0;
  snapTerm = 0;
  needsRepair = false;
  /**
   * Recovery only: replay met entries starting above lastIndex + 1. Legitimate when the
   * entries in between sat in recycled segments, which a later checkpoint (or segment
   * metadata) then covers; a hole otherwise. Non-zero while unexplained.
   */
  gapBase = 0;
  // Entry i (baseIndex < i <= lastIndex) lives at position i - baseIndex - 1 of each array.
  terms: number[] = [];
  types: number[] = [];
  segs: number[] = [];
  offs: number[] = [];
  lens: number[] = [];
  seeds: number[] = [];
  datas: (Uint8Array | null)[] = [];

  constructor(readonly id: number) {}

  get firstIndex(): number {
    return this.baseIndex + 1;
  }

  get lastIndex(): number {
    return this.baseIndex + this.terms.length;
  }

  term(index: number): number | undefined {
    if (index === this.baseIndex) return this.baseTerm;
    if (index < this.baseIndex || index > this.lastIndex) return undefined;
    return this.terms[index - this.baseIndex - 1];
  }

  /**
   * Records an entry. One at or below the base is ignored (already compacted); one at an index
   * held replaces that suffix. Returns false when it would leave a gap.
   */
  put(index: number, term: number, type: number, seg: number, off: number, len: number, seed: number, data: Uint8Array | null): boolean {
    if (index <= this.baseIndex) return true;
    if (index <= this.lastIndex) this.truncateFrom(index);
    if (index !== this.lastIndex + 1) return false;
    this.terms.push(term);
    this.types.push(type);
    this.segs.push(seg);
    this.offs.push(off);
    this.lens.push(len);
    this.seeds.push(seed);
    this.datas.push(data);
    return true;
  }

  /** Drops entries at `index` and above (never below the base). */
  truncateFrom(index: number): void {
    const keep = Math.max(0, index - this.baseIndex - 1);
    if (keep >= this.terms.length) return;
    this.terms.length = keep;
    this.types.length = keep;
    this.segs.length = keep;
    this.offs.length = keep;
    this.lens.length = keep;
    this.seeds.length = keep;
    this.datas.length = keep;
  }

  /** Recovery: starts the log over right below `index` (see gapBase). */
  restartAt(index: number): void {
    this.truncateFrom(this.baseIndex + 1);
    this.baseIndex = index - 1;
    this.baseTerm = 0;
    this.gapBase = index - 1;
  }

  /** Drops entries at or below `index` (clamped to lastIndex). Returns the new base. */
  compactTo(index: number): number {
    if (this.gapBase !== 0 && index >= this.gapBase) this.gapBase = 0;
    const to = Math.min(index, this.lastIndex);
    if (to <= this.baseIndex) return this.baseIndex;
    const k = to - this.baseIndex;
    this.baseTerm = this.terms[k - 1];
    this.terms.splice(0, k);
    this.types.splice(0, k);
    this.segs.splice(0, k);
    this.offs.splice(0, k);
    this.lens.splice(0, k);
    this.seeds.splice(0, k);
    this.datas.splice(0, k);
    this.baseIndex = to;
    return to;
  }

  /** Resets the log to start after (index, term); keeps a matching suffix, as Raft does. */
  installSnapshot(index: number, term: number): void {
    if (this.gapBase !== 0 && index >= this.gapBase) this.gapBase = 0;
    if (index > this.baseIndex) {
      if (this.term(index) === term) this.compactTo(index);
      else {
        this.truncateFrom(this.baseIndex + 1);
        this.baseIndex = index;
        this.baseTerm = term;
      }
    }
    this.snapIndex = Math.max(this.snapIndex, index);
    if (this.snapIndex === index) this.snapTerm = term;
    this.needsRepair = false;
  }

  /** Replays a Meta record: the group's whole state as of the start of a segment. */
  applyMeta(hard: WalHardState, baseIndex: number, baseTerm: number, snapIndex: number, snapTerm: number, needsRepair: boolean): void {
    this.hard = hard;
    if (this.gapBase !== 0 && baseIndex >= this.gapBase) this.gapBase = 0;
    if (baseIndex > this.baseIndex) {
      if (this.term(baseIndex) === baseTerm) this.compactTo(baseIndex);
      else {
        this.truncateFrom(this.baseIndex + 1);
        this.baseIndex = baseIndex;
        this.baseTerm = baseTerm;
      }
    }
    this.snapIndex = snapIndex;
    this.snapTerm = snapTerm;
    this.needsRepair = this.needsRepair || needsRepair;
  }
}

export class GroupTable {
  private readonly groups = new Map<number, GroupLog>();

  get(id: number): GroupLog | undefined {
    return this.groups.get(id);
  }

  getOrCreate(id: number): GroupLog {
    let g = this.groups.get(id);
    if (!g) {
      assert(Number.isInteger(id) && id >= 0 && id <= 0xffffffff, `group id ${id} out of range`);
      g = new GroupLog(id);
      this.groups.set(id, g);
    }
    return g;
  }

  all(): IterableIterator<GroupLog> {
    return this.groups.values();
  }

  get size(): number {
    return this.groups.size;
  }
}

/**
 * A bound on memory held by cached entry payloads: first in, first out. Entries evicted here
 * are read back from their segment when asked for.
 */
export class PayloadCache {
  private queueGroups: GroupLog[] = [];
  private queueIndexes: number[] = [];
  private queueDatas: Uint8Array[] = [];
  private head = 0;
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get cachedBytes(): number {
    return this.bytes;
  }

  /** Notes that `g` caches `data` for `index`; evicts the oldest until under the bound. */
  added(g: GroupLog, index: number, data: Uint8Array): void {
    this.queueGroups.push(g);
    this.queueIndexes.push(index);
    this.queueDatas.push(data);
    this.bytes += data.length;
    while (this.bytes > this.maxBytes && this.head < this.queueDatas.length) this.evictOne();
    if (this.head > 4096 && this.head * 2 > this.queueDatas.length) {
      this.queueGroups = this.queueGroups.slice(this.head);
      this.queueIndexes = this.queueIndexes.slice(this.head);
      this.queueDatas = this.queueDatas.slice(this.head);
      this.head = 0;
    }
  }

  private evictOne(): void {
    const g = this.queueGroups[this.head];
    const index = this.queueIndexes[this.head];
    const data = this.queueDatas[this.head];
    this.bytes -= data.length;
    (this.queueGroups as (GroupLog | undefined)[])[this.head] = undefined;
    (this.queueDatas as (Uint8Array | undefined)[])[this.head] = undefined;
    this.head++;
    const at = index - g.baseIndex - 1;
    if (at >= 0 && at < g.datas.length && g.datas[at] === data) g.datas[at] = null;
  }
}
