/**
 * Group 0's state machine: the cluster map (see map.ts for the commands). Applying a command is
 * pure and deterministic; the map is written to `map.bin` (with its applied index) at each
 * checkpoint, durably, so the WAL can drop group 0's entries up to there.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { assert } from '../common/assert.js';
import { Corruption } from '../common/errors.js';
import type { GroupStateMachine } from './host.js';
import type { ConfChange } from '../raft/index.js';
import { applyCommand, decodeCommand, decodeMap, emptyMap, encodeMap, type ClusterMap } from './map.js';
import { writeFileDurably } from '../store/pg-store.js';

const packr = new Packr({ useRecords: false });

interface MetaImage {
  index: number;
  term: number;
  map: Uint8Array;
  /** Group 0's voters as of `index`. */
  voters?: number[];
}

export class MetaStore implements GroupStateMachine {
  private readonly path: string;
  private readonly onChange: (map: ClusterMap) => void;
  map: ClusterMap;
  appliedIndex: number;
  appliedTerm: number;
  durableIndex: number;
  /** Group 0's voters (membership changes are entries of group 0's own log). */
  voters: number[];
  readonly inlineSnapshots = true;
  private lastImage: { index: number; bytes: Uint8Array } | undefined;
  /** The map.bin write in flight (see writeImage). */
  private writing: Promise<void> = Promise.resolve();

  private constructor(path: string, image: MetaImage | undefined, onChange: (map: ClusterMap) => void) {
    this.path = path;
    this.onChange = onChange;
    this.map = image ? decodeMap(image.map) : emptyMap();
    this.appliedIndex = image?.index ?? 0;
    this.appliedTerm = image?.term ?? 0;
    this.durableIndex = this.appliedIndex;
    this.voters = image?.voters ? [...image.voters] : [];
  }

  applyConfChange(cc: ConfChange): void {
    for (const c of cc.changes) {
      if (c.type === 'addVoter' && !this.voters.includes(c.nodeId)) this.voters = [...this.voters, c.nodeId].sort((a, b) => a - b);
      if (c.type === 'removeNode') this.voters = this.voters.filter((v) => v !== c.nodeId);
    }
  }

  exactImage(index: number): Uint8Array | undefined {
    return this.lastImage?.index === index ? this.lastImage.bytes : undefined;
  }

  static async open(dir: string, onChange: (map: ClusterMap) => void): Promise<MetaStore> {
    await mkdir(dir, { recursive: true });
    const path = join(dir, 'map.bin');
    let image: MetaImage | undefined;
    let bytes: Buffer | undefined;
    try {
      bytes = Buffer.from((await readFile(path)).toString('utf8'), 'base64');
      image = decodeImage(bytes);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const store = new MetaStore(path, image, onChange);
    if (image && bytes) store.lastImage = { index: image.index, bytes };
    return store;
  }

  skip(index: number, term: number): void {
    if (index <= this.appliedIndex) return;
    this.appliedIndex = index;
    this.appliedTerm = term;
  }

  async apply(index: number, term: number, data: Uint8Array): Promise<unknown> {
    if (index <= this.appliedIndex) return undefined;
    this.appliedIndex = index;
    this.appliedTerm = term;
    if (data.byteLength === 0) return undefined;
    const result = applyCommand(this.map, decodeCommand(data));
    if (!result.ok) throw result.error;
    if (result.changed) {
      this.map = result.map;
      this.onChange(this.map);
    }
    return { epoch: this.map.epoch, changed: result.changed, volume: result.volume, pool: result.pool };
  }

  async checkpoint(): Promise<number> {
    if (this.durableIndex === this.appliedIndex) return this.durableIndex;
    // The image is taken now, in one synchronous run with its index: entries the apply chain
    // applies while it is written belong to the next checkpoint.
    const index = this.appliedIndex;
    await this.writeImage(index, this.imageBytes());
    return index;
  }

  /**
   * Writes map.bin, one write at a time and never going back: a checkpoint's write still in
   * flight when a snapshot is restored (the host skips groups installing a snapshot only when
   * a checkpoint starts) would otherwise share map.bin's temporary file with the restore's, or
   * land after it and leave the older map on disk while the WAL has dropped the entries
   * between the two (a restart would then miss them).
   */
  private writeImage(index: number, bytes: Buffer): Promise<void> {
    const write = this.writing.then(async () => {
      if (index <= this.durableIndex) return; // an image at least as new is on disk already
      await writeFileDurably(this.path, bytes.toString('base64'));
      this.durableIndex = index;
      this.lastImage = { index, bytes };
    });
    this.writing = write.catch(() => undefined);
    return write;
  }

  private imageBytes(): Buffer {
    return packr.pack({ index: this.appliedIndex, term: this.appliedTerm, map: encodeMap(this.map), voters: this.voters }) as Buffer;
  }

  async snapshotImage(): Promise<Uint8Array> {
    return this.imageBytes();
  }

  async restoreImage(image: Uint8Array, index: number, term: number): Promise<void> {
    // An empty image is group 0's bootstrap state, the empty map, and only that: the bootstrap
    // snapshot (index 1) is the one snapshot of group 0 without data. Any later snapshot
    // carries its map (see MultiRaftHost.addGroup and checkpointAll); taking an empty one as
    // the empty map there would silently diverge from the other replicas, so it stops the node.
    assert(image.byteLength > 0 || index <= 1, `group 0 snapshot at index ${index} carries no map`);
    const img = image.byteLength === 0 ? ({ index, term, map: encodeMap(emptyMap()), voters: [] } as MetaImage) : (packr.unpack(image) as MetaImage);
    this.map = decodeMap(img.map);
    if (img.voters && img.voters.length > 0) this.voters = [...img.voters];
    this.appliedIndex = index;
    this.appliedTerm = term;
    // A restored image is durable before the WAL drops the entries it covers (the host records
    // the snapshot in the WAL only after this returns).
    await this.writeImage(index, this.imageBytes());
    this.onChange(this.map);
  }

  async close(): Promise<void> {}
}

function decodeImage(bytes: Buffer): MetaImage {
  try {
    const img = packr.unpack(bytes) as MetaImage;
    if (!Number.isSafeInteger(img.index) || !Number.isSafeInteger(img.term)) throw new Error('bad header');
    return img;
  } catch (err) {
    throw new Corruption(`group 0 map image unreadable: ${(err as Error).message}`);
  }
}
