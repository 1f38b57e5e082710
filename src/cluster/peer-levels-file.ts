/**
 * The store command level each peer node last told this one (Frame.s), kept in the data dir
 * (`peer-store-ops-levels.json`) so that it outlives this node's restart.
 *
 * Why: a PG leader proposes a command past 256 TiB (or a shrink's discard) only once every
 * replica's node told a level that applies it (StoreOpsLevels.requireForRequest). Without this
 * file a leader restarted while another replica's node is down knows nothing of that node's
 * build, and refuses every such write until it returns: one node down, then a restart, would
 * cost large volumes their far writes. A level remembered this way may be stale (that node may
 * since have been rolled back); that is safe, as it is for a level heard before a reconnect:
 * what leaves on a connection is judged by the level that connection told (store-ops-gate.ts).
 *
 * The file is a hint, not state: one that cannot be read or parsed is reported and ignored (the
 * levels are learned again from the peers' frames), and nothing else depends on it.
 */
import { join } from 'node:path';
import { readFileIfExists, writeFileDurably } from '../common/durable-file.js';
import { maxNodeId } from './map.js';
import { maxStoreOpsLevel } from '../store/ops.js';

export const peerLevelsFileName = 'peer-store-ops-levels.json';

export type PeerLevels = Map<string, number>;

/**
 * The levels a file's text holds, or why it holds none: `{"levels": {"<node id>": level}}`,
 * ids in 1..maxNodeId and levels positive integers.
 */
export function parsePeerLevels(text: string): { levels: PeerLevels } | { problem: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { problem: `not JSON (${(err as Error).message})` };
  }
  const levels = (doc as { levels?: unknown } | null)?.levels;
  if (typeof levels !== 'object' || levels === null || Array.isArray(levels)) return { problem: 'no "levels" object' };
  const out: PeerLevels = new Map();
  for (const [id, level] of Object.entries(levels)) {
    const n = Number(id);
    if (!/^[1-9][0-9]*$/.test(id) || n > maxNodeId) return { problem: `${JSON.stringify(id)} is no node id` };
    if (typeof level !== 'number' || !Number.isSafeInteger(level) || level < 1 || level > maxStoreOpsLevel) return { problem: `node ${id}: ${JSON.stringify(level)} is no store command level` };
    out.set(id, level);
  }
  return { levels: out };
}

/**
 * The file of one data dir: read once at start, then written (whole, durably) after each
 * change a peer tells, one write at a time; changes told during a write are written after it.
 */
export class PeerLevelsFile {
  private readonly path: string;
  private readonly levels: PeerLevels = new Map();
  private writing: Promise<void> | undefined;
  private dirty = false;

  constructor(
    dataDir: string,
    private readonly onWriteError: (err: unknown) => void,
  ) {
    this.path = join(dataDir, peerLevelsFileName);
  }

  /** The levels the file holds (none if it is missing), or why it holds none it can be trusted for. */
  async load(): Promise<{ levels: PeerLevels; problem?: string }> {
    let text: Buffer | undefined;
    try {
      text = await readFileIfExists(this.path);
    } catch (err) {
      return { levels: new Map(), problem: `${this.path}: ${(err as Error).message}` };
    }
    if (text === undefined) return { levels: new Map() };
    const parsed = parsePeerLevels(text.toString('utf8'));
    if ('problem' in parsed) return { levels: new Map(), problem: `${this.path}: ${parsed.problem}` };
    for (const [id, level] of parsed.levels) this.levels.set(id, level);
    return { levels: new Map(parsed.levels) };
  }

  /** Peer `id` told `level`: written soon if that is news. */
  note(id: string, level: number): void {
    if (this.levels.get(id) === level) return;
    this.levels.set(id, level);
    this.dirty = true;
    if (this.writing === undefined) this.writing = this.writeWhileDirty();
  }

  /** The ids of the nodes whose levels the file holds (or will, once written). */
  ids(): string[] {
    return [...this.levels.keys()];
  }

  /** Forgets node `id` (removed from the cluster): written soon if the file held it. */
  forget(id: string): void {
    if (!this.levels.delete(id)) return;
    this.dirty = true;
    if (this.writing === undefined) this.writing = this.writeWhileDirty();
  }

  /** Resolves once every change noted so far is written (or its write failed and was reported). */
  async settled(): Promise<void> {
    while (this.writing !== undefined) await this.writing;
  }

  private async writeWhileDirty(): Promise<void> {
    try {
      while (this.dirty) {
        this.dirty = false;
        const doc = { levels: Object.fromEntries([...this.levels].sort((a, b) => Number(a[0]) - Number(b[0]))) };
        try {
          await writeFileDurably(this.path, JSON.stringify(doc) + '\n');
        } catch (err) {
          this.onWriteError(err);
        }
      }
    } finally {
      this.writing = undefined;
    }
  }
}
