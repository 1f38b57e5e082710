/**
 * Group 0's state machine: the cluster map (see map.ts for the commands). Applying a command is
 * pure and deterministic; the map is written to `map.bin` (with its applied index) at each
 * checkpoint, durably, so the WAL can drop group 0's entries up to there.
 *
 * map.bin counts only as far as the WAL vouches for it (`openMetaGroup`): a checkpoint writes
 * it before the WAL drops the entries it covers, and an installed snapshot's image is written
 * before the WAL records the snapshot; an image past the WAL's log is a snapshot install cut
 * short by a crash, whose Raft configuration nothing recorded.
 *
 * A command proposed with an id (MetaCommandId, see map.ts) is applied once: the store
 * remembers the answers of the last `metaDedupeWindowCommands` ids it applied (RecentMetaAnswers)
 * and answers an id it remembers with its first answer, applying nothing. The window is
 * replicated state like the map: filled in log order, kept in map.bin and in every image.
 * An id made from a client's Idempotency-Key carries the request's fingerprint, remembered
 * with the answer: a repeat with another fingerprint is refused (IDEMPOTENCY_KEY_REUSED).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { assert } from '../common/assert.js';
import { Corruption, IdempotencyKeyReused, NodeHoldsReplicas, RaftblockError } from '../common/errors.js';
import type { GroupStateMachine } from './host.js';
import type { ConfChange, ConfState } from '../raft/index.js';
import type { Wal } from '../wal/index.js';
import { applyCommand, decodeMap, decodeMetaEntry, emptyMap, encodeMap, metaCommandKey, metadataGroupId, type ApplyResult, type ClusterMap, type MetaCommandId, type Pool, type Volume } from './map.js';
import { writeFileDurably } from '../common/durable-file.js';

const packr = new Packr({ useRecords: false });

interface MetaImage {
  index: number;
  term: number;
  map: Uint8Array;
  /** Group 0's voters as of `index`. */
  voters?: number[];
  /** The remembered answers, oldest first (absent in images from before command ids: none). */
  answers?: [number, MetaAnswer][];
}

/** Command ids whose answers group 0 remembers: far more than a node retries within metaCommandDeadlineMs. */
export const metaDedupeWindowCommands = 1024;

/**
 * What group 0 answered a command: what its callers read of a success (the epoch of the map it
 * left, whether it changed anything, the volume or pool it was about), or its refusal as the
 * transport carries one (code and message, and a NodeHoldsReplicas' groups).
 *
 * A repeated id is answered with the first apply's answer, as it was then, even when the map
 * has moved on since (the volume deleted meanwhile, resized, created again): it is the answer
 * the first attempt would have had, had it arrived, and its epoch is the one that command made
 * (or found), which a caller waiting for nodes to hold "at least that epoch" may use as well
 * as a newer one. Answering from the current map instead would tell a retried create about a
 * volume someone else changed since, and a retried delete that nothing was there.
 */
export type MetaAnswer = (
  | { epoch: number; changed: boolean; volume?: Volume; pool?: Pool }
  | { refused: { code: string; message: string; groups?: number[] } }
) & {
  /** The fingerprint of the request that was answered (MetaCommandId.fingerprint), if it had one. */
  fingerprint?: number;
};

/**
 * The answers of the last `capacity` command ids applied, first in first out. Deterministic:
 * every replica fills it in log order, and images carry it in that order.
 */
export class RecentMetaAnswers {
  /** Insertion order is apply order: the first key is the oldest. */
  private readonly answers = new Map<number, MetaAnswer>();

  constructor(readonly capacity = metaDedupeWindowCommands) {
    assert(Number.isSafeInteger(capacity) && capacity >= 1, `window of ${capacity} map commands`);
  }

  get size(): number {
    return this.answers.size;
  }

  /** The answer remembered for `key`; never one for key 0 (no id). */
  get(key: number): MetaAnswer | undefined {
    return key === 0 ? undefined : this.answers.get(key);
  }

  /** Remembers the first answer of `key` (the oldest leaves a full window); key 0 is not remembered. */
  remember(key: number, answer: MetaAnswer): void {
    if (key === 0 || this.answers.has(key)) return;
    if (this.answers.size === this.capacity) this.answers.delete(this.answers.keys().next().value as number);
    this.answers.set(key, answer);
  }

  /** The window oldest first: the image's form. */
  toImage(): [number, MetaAnswer][] {
    return [...this.answers];
  }

  /** A window from an image's form (absent: empty); beyond the capacity, the newest stay. */
  static fromImage(entries: unknown, capacity = metaDedupeWindowCommands): RecentMetaAnswers {
    const out = new RecentMetaAnswers(capacity);
    if (entries === undefined) return out;
    if (!Array.isArray(entries)) throw new Corruption('group 0 image: remembered answers are not a list');
    for (const e of entries as unknown[]) {
      if (!Array.isArray(e) || e.length !== 2 || !Number.isSafeInteger(e[0]) || (e[0] as number) <= 0 || e[1] === null || typeof e[1] !== 'object') {
        throw new Corruption(`group 0 image: bad remembered answer ${JSON.stringify(e)}`);
      }
      const fp = (e[1] as MetaAnswer).fingerprint;
      if (fp !== undefined && !Number.isSafeInteger(fp)) throw new Corruption(`group 0 image: bad fingerprint in remembered answer ${JSON.stringify(e)}`);
      out.remember(e[0] as number, e[1] as MetaAnswer);
    }
    return out;
  }
}

/** The answer of one apply, as remembered. */
function answerOf(result: ApplyResult): MetaAnswer {
  if (result.ok) {
    const { volume, pool } = result;
    return { epoch: result.map.epoch, changed: result.changed, ...(volume ? { volume } : {}), ...(pool ? { pool } : {}) };
  }
  const { code, message } = result.error;
  const groups = result.error instanceof NodeHoldsReplicas ? { groups: [...result.error.groups] } : {};
  return { refused: { code, message, ...groups } };
}

/**
 * What the repeat of a remembered id gets: the first answer, unless both attempts carry a
 * fingerprint and they differ: then the client sent one Idempotency-Key with two different
 * requests, and answering the second with the first's result would tell it that what it asked
 * for now was done. Refused instead, and not remembered (the first answer stays the key's).
 */
function settleRepeat(remembered: MetaAnswer, fingerprint: number | undefined): ReturnType<typeof settle> {
  if (fingerprint !== undefined && remembered.fingerprint !== undefined && fingerprint !== remembered.fingerprint) {
    throw new IdempotencyKeyReused('this Idempotency-Key was first sent with another request (another body); a key names one request: use a new key for a new request');
  }
  return settle(remembered);
}

/** What the proposer gets for `answer`: its result, or its refusal thrown. */
function settle(answer: MetaAnswer): { epoch: number; changed: boolean; volume?: Volume; pool?: Pool } {
  if ('refused' in answer) {
    const { code, message, groups } = answer.refused;
    throw code === 'NODE_HOLDS_REPLICAS' && groups ? new NodeHoldsReplicas(message, groups) : new RaftblockError(code, message);
  }
  return { epoch: answer.epoch, changed: answer.changed, volume: answer.volume, pool: answer.pool };
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
  /** The voters of the snapshot being installed (see prepareSnapshot). */
  private snapshotVoters: { index: number; voters: number[] } | undefined;
  /** The answers of the last command ids applied (replicated: see RecentMetaAnswers). */
  answers: RecentMetaAnswers;

  private constructor(path: string, image: MetaImage | undefined, onChange: (map: ClusterMap) => void) {
    this.path = path;
    this.onChange = onChange;
    this.map = image ? decodeMap(image.map) : emptyMap();
    this.appliedIndex = image?.index ?? 0;
    this.appliedTerm = image?.term ?? 0;
    this.durableIndex = this.appliedIndex;
    this.voters = image?.voters ? [...image.voters] : [];
    this.answers = RecentMetaAnswers.fromImage(image?.answers);
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

  /** The empty state (index 0, the empty map, no voters), whatever map.bin holds; the next image overwrites it. */
  static async empty(dir: string, onChange: (map: ClusterMap) => void): Promise<MetaStore> {
    await mkdir(dir, { recursive: true });
    return new MetaStore(join(dir, 'map.bin'), undefined, onChange);
  }

  /**
   * A snapshot at `index` is about to be restored (the host calls this first): its image is
   * saved with the snapshot's own voters, the Raft configuration at `index`, rather than the
   * list inside the image, which may lag it or, in the bootstrap snapshot's empty image, be
   * missing. A restart then resumes the group with them.
   */
  async prepareSnapshot(index: number, cs: ConfState): Promise<void> {
    this.snapshotVoters = { index, voters: [...cs.voters].sort((a, b) => a - b) };
  }

  skip(index: number, term: number): void {
    if (index <= this.appliedIndex) return;
    this.appliedIndex = index;
    this.appliedTerm = term;
  }

  /**
   * The answer this replica applied for command `id`, its refusal thrown; undefined when the
   * id is not in the window (never applied here, or too long ago).
   */
  answerOf(id: MetaCommandId): { epoch: number; changed: boolean; volume?: Volume; pool?: Pool } | undefined {
    const remembered = this.answers.get(metaCommandKey(id));
    return remembered ? settleRepeat(remembered, id.fingerprint) : undefined;
  }

  async apply(index: number, term: number, data: Uint8Array): Promise<unknown> {
    if (index <= this.appliedIndex) return undefined;
    this.appliedIndex = index;
    this.appliedTerm = term;
    if (data.byteLength === 0) return undefined;
    const { command, key, fingerprint } = decodeMetaEntry(data);
    // A retry of a command applied already (its answer was lost): the first answer, nothing applied.
    const remembered = this.answers.get(key);
    if (remembered) return settleRepeat(remembered, fingerprint);
    const result = applyCommand(this.map, command);
    // A refusal is remembered too: the retry of a refused command is refused alike, even if
    // the map would take it now (it was not applied, and its caller may already know that).
    const answer = answerOf(result);
    this.answers.remember(key, fingerprint === undefined ? answer : { ...answer, fingerprint });
    if (result.ok && result.changed) {
      this.map = result.map;
      this.onChange(this.map);
    }
    return settle(answer);
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
    return packr.pack({ index: this.appliedIndex, term: this.appliedTerm, map: encodeMap(this.map), voters: this.voters, answers: this.answers.toImage() }) as Buffer;
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
    const answers = RecentMetaAnswers.fromImage(img.answers);
    this.map = decodeMap(img.map);
    this.answers = answers;
    const prepared = this.snapshotVoters?.index === index ? this.snapshotVoters.voters : undefined;
    this.snapshotVoters = undefined;
    if (prepared && prepared.length > 0) this.voters = [...prepared];
    else if (img.voters && img.voters.length > 0) this.voters = [...img.voters];
    this.appliedIndex = index;
    this.appliedTerm = term;
    // A restored image is durable before the WAL drops the entries it covers (the host records
    // the snapshot in the WAL only after this returns).
    await this.writeImage(index, this.imageBytes());
    this.onChange(this.map);
  }

  async close(): Promise<void> {}
}

/** What openMetaGroup reads of the node's WAL. */
export type MetaWal = Pick<Wal, 'lastIndex' | 'snapshotMeta'>;

export type MetaOpening =
  | {
      meta: MetaStore;
      /** The voters group 0 starts with (none: a member waiting for its leader's snapshot). */
      voters: number[];
      /** The index of an image that was set aside (a snapshot install cut short). */
      discardedIndex?: number;
    }
  | { meta: undefined; reason: string };

/**
 * Opens group 0's state machine on node `nodeId` as far as its WAL vouches for it, and says
 * with which voters the group starts. The Raft configuration is the truth: the group never
 * starts with voters that neither its WAL nor an image the WAL vouches for gives.
 *
 * An image past the WAL's log of group 0 is a snapshot install cut short by a crash (the host
 * writes the image, then records the snapshot in the WAL): the node's core took the snapshot,
 * but nothing it keeps says so. With no log of group 0 in the WAL (a new member: it
 * acknowledged nothing, at most it saved a term and a vote), the image is set aside and the
 * group starts over, empty and with no voters, as before the snapshot came: its leader sends
 * it again. A member that holds entries of group 0 below the image cannot go back to its state
 * before the snapshot (map.bin was replaced), nor forget the entries it acknowledged without
 * care for the WAL's compaction point: it stays out of group 0 (`meta` undefined, with why).
 *
 * Without an image, only the founder starts with itself as voter (`bootstrap`, or the
 * bootstrap snapshot at index 1 in its WAL); any other member waits for its leader's snapshot
 * with none: guessing itself would make it a quorum on its own.
 */
export async function openMetaGroup(dir: string, nodeId: number, wal: MetaWal, bootstrap: boolean, onChange: (map: ClusterMap) => void): Promise<MetaOpening> {
  let meta = await MetaStore.open(dir, onChange);
  let discardedIndex: number | undefined;
  const walLast = wal.lastIndex(metadataGroupId);
  if (meta.durableIndex > walLast) {
    if (walLast > 0) {
      return {
        meta: undefined,
        reason: `${join(dir, 'map.bin')} is at index ${meta.durableIndex}, past group 0's log in the WAL (last index ${walLast}): a snapshot install was cut short, and this member's state before it is gone`,
      };
    }
    discardedIndex = meta.durableIndex;
    meta = await MetaStore.empty(dir, onChange);
  }
  if (meta.voters.length === 0 && (bootstrap || wal.snapshotMeta(metadataGroupId).index === 1)) meta.voters = [nodeId];
  return { meta, voters: [...meta.voters], discardedIndex };
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
