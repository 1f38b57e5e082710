/**
 * A PG replica's checkpoint record, `checkpoint.bin`: the applied index and term its data files
 * are durable at, and the deduplication window as of that index, in one file replaced
 * atomically (written to a temp file, fsynced, renamed, the directory fsynced). One file keeps
 * the index and the window one state after any crash, and costs two device flushes where the
 * two files it replaces (meta.json, dedupe.bin) cost four.
 *
 *   0  u32  magic 'RBCK'
 *   4  u32  format version (1)
 *   8  f64  applied index
 *  16  f64  applied term
 *  24  u32  bytes of the dedupe window that follow the header
 *  28  u32  crc32c of bytes [0, 28) and of the window
 *  32  ...  the dedupe window (RecentRequests.toBytes)
 *
 * Stores written before this file keep meta.json and dedupe.bin until their first checkpoint
 * here; `readCheckpoint` reads either.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readFileIfExists, writeFileDurably } from '../common/durable-file.js';
import { Corruption } from '../common/errors.js';
import { crc32c } from '../wal/crc32c.js';

export const checkpointFileName = 'checkpoint.bin';
const legacyMetaFile = 'meta.json';
const legacyDedupeFile = 'dedupe.bin';
const magic = 0x5242434b; // 'RBCK'
const formatVersion = 1;
const headerBytes = 32;

export interface StoreCheckpoint {
  appliedIndex: number;
  appliedTerm: number;
  /** The dedupe window's replicated form; empty when none was recorded. */
  recent: Uint8Array;
}

export interface ReadCheckpoint extends StoreCheckpoint {
  /** Read from the older versions' files (the next writeCheckpoint removes them). */
  legacy: boolean;
}

export function encodeCheckpoint(c: StoreCheckpoint): Buffer {
  const out = Buffer.allocUnsafe(headerBytes + c.recent.byteLength);
  out.writeUInt32BE(magic, 0);
  out.writeUInt32BE(formatVersion, 4);
  out.writeDoubleBE(c.appliedIndex, 8);
  out.writeDoubleBE(c.appliedTerm, 16);
  out.writeUInt32BE(c.recent.byteLength, 24);
  out.set(c.recent, headerBytes);
  out.writeUInt32BE(checksum(out), 28);
  return out;
}

/** Decodes checkpoint.bin's bytes; anything but a whole, intact record is Corruption. */
export function decodeCheckpoint(b: Buffer, where: string): StoreCheckpoint {
  if (b.length < headerBytes) throw new Corruption(`${where}: checkpoint of ${b.length} bytes is shorter than its header`);
  if (b.readUInt32BE(0) !== magic) throw new Corruption(`${where}: not a checkpoint file`);
  const version = b.readUInt32BE(4);
  if (version !== formatVersion) throw new Corruption(`${where}: checkpoint format ${version}, this version reads ${formatVersion}`);
  const recentBytes = b.readUInt32BE(24);
  if (b.length !== headerBytes + recentBytes) throw new Corruption(`${where}: checkpoint holds ${b.length - headerBytes} window bytes, its header says ${recentBytes}`);
  if (b.readUInt32BE(28) !== checksum(b)) throw new Corruption(`${where}: checkpoint checksum mismatch`);
  const appliedIndex = b.readDoubleBE(8);
  const appliedTerm = b.readDoubleBE(16);
  if (!Number.isSafeInteger(appliedIndex) || appliedIndex < 0 || !Number.isSafeInteger(appliedTerm) || appliedTerm < 0) {
    throw new Corruption(`${where}: checkpoint index ${appliedIndex} / term ${appliedTerm} out of range`);
  }
  return { appliedIndex, appliedTerm, recent: b.subarray(headerBytes) };
}

function checksum(b: Buffer): number {
  return crc32c(b, headerBytes, b.length, crc32c(b, 0, 28));
}

/**
 * The checkpoint of the store in `dir`: checkpoint.bin, else the two files of older versions,
 * else none (a new store: index 0).
 */
export async function readCheckpoint(dir: string): Promise<ReadCheckpoint> {
  const path = join(dir, checkpointFileName);
  const current = await readIfThere(path);
  if (current) return { ...decodeCheckpoint(current, path), legacy: false };
  let appliedIndex = 0;
  let appliedTerm = 0;
  const meta = await readIfThere(join(dir, legacyMetaFile));
  if (meta) {
    let parsed: { appliedIndex?: unknown; appliedTerm?: unknown };
    try {
      parsed = JSON.parse(meta.toString('utf8')) as typeof parsed;
    } catch (err) {
      throw new Corruption(`unreadable ${legacyMetaFile} in ${dir}: ${(err as Error).message}`);
    }
    if (!Number.isSafeInteger(parsed.appliedIndex) || !Number.isSafeInteger(parsed.appliedTerm)) throw new Corruption(`bad ${legacyMetaFile} in ${dir}`);
    appliedIndex = parsed.appliedIndex as number;
    appliedTerm = parsed.appliedTerm as number;
  }
  const dedupe = await readIfThere(join(dir, legacyDedupeFile));
  return { appliedIndex, appliedTerm, recent: dedupe ?? Buffer.alloc(0), legacy: meta !== undefined || dedupe !== undefined };
}

/**
 * Replaces the checkpoint of the store in `dir`, durably; with `removeLegacy`, the older
 * versions' files then go.
 */
export async function writeCheckpoint(dir: string, c: StoreCheckpoint, removeLegacy = false): Promise<void> {
  await writeFileDurably(join(dir, checkpointFileName), encodeCheckpoint(c));
  if (!removeLegacy) return;
  // checkpoint.bin wins over them from now on: removing them is tidiness, not correctness.
  for (const name of [legacyMetaFile, legacyDedupeFile]) await rm(join(dir, name), { force: true });
}

/** A file of the store, or undefined; one that exists but cannot be read is Corruption. */
function readIfThere(path: string): Promise<Buffer | undefined> {
  return readFileIfExists(path).catch((err: Error) => {
    throw new Corruption(`unreadable ${path}: ${err.message}`);
  });
}
