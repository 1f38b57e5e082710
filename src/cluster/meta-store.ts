/**
 * Group 0's state machine: the cluster map (see map.ts for the commands). Applying a command is
 * pure and deterministic; the map is written to `map.bin` (with its applied index) at each
 * checkpoint, durably, so the WAL can drop group 0's entries up to there.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { Corruption } from '../common/errors.js';
import type { GroupStateMachine } from './host.js';
import { applyCommand, decodeCommand, decodeMap, emptyMap, encodeMap, type ClusterMap } from './map.js';
import { writeFileDurably } from '../store/pg-store.js';

const packr = new Packr({ useRecords: false });

interface MetaImage {
  index: number;
  term: number;
  map: Uint8Array;
}

export class MetaStore implements GroupStateMachine {
  private readonly path: string;
  private readonly onChange: (map: ClusterMap) => void;
  map: ClusterMap;
  appliedIndex: number;
  appliedTerm: number;
  durableIndex: number;

  private constructor(path: string, image: MetaImage | undefined, onChange: (map: ClusterMap) => void) {
    this.path = path;
    this.onChange = onChange;
    this.map = image ? decodeMap(image.map) : emptyMap();
    this.appliedIndex = image?.index ?? 0;
    this.appliedTerm = image?.term ?? 0;
    this.durableIndex = this.appliedIndex;
  }

  static async open(dir: string, onChange: (map: ClusterMap) => void): Promise<MetaStore> {
    await mkdir(dir, { recursive: true });
    const path = join(dir, 'map.bin');
    let image: MetaImage | undefined;
    try {
      image = decodeImage(await readFile(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    return new MetaStore(path, image, onChange);
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
    const index = this.appliedIndex;
    await writeFileDurably(this.path, this.imageBytes().toString('base64'));
    this.durableIndex = index;
    return index;
  }

  private imageBytes(): Buffer {
    return packr.pack({ index: this.appliedIndex, term: this.appliedTerm, map: encodeMap(this.map) }) as Buffer;
  }

  async snapshotImage(): Promise<Uint8Array> {
    return this.imageBytes();
  }

  async restoreImage(image: Uint8Array, index: number, term: number): Promise<void> {
    const img = packr.unpack(image) as MetaImage;
    this.map = decodeMap(img.map);
    this.appliedIndex = index;
    this.appliedTerm = term;
    await writeFileDurably(this.path, Buffer.from(image).toString('base64'));
    this.durableIndex = index;
    this.onChange(this.map);
  }

  async close(): Promise<void> {}
}

function decodeImage(fileBytes: Buffer): MetaImage {
  try {
    const img = packr.unpack(Buffer.from(fileBytes.toString('utf8'), 'base64')) as MetaImage;
    if (!Number.isSafeInteger(img.index) || !Number.isSafeInteger(img.term)) throw new Error('bad header');
    return img;
  } catch (err) {
    throw new Corruption(`group 0 map image unreadable: ${(err as Error).message}`);
  }
}
