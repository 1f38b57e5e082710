/**
 * Whether a file system's SEEK_DATA can be trusted with files written through the page cache.
 * A SEEK_DATA that missed dirty pages would call data a write just put there a hole, and an
 * image, a BLOCK_STATUS or a READ answered from holes would then lose it (some releases of
 * other file systems shipped exactly that bug). Judged by statfs f_type, not by a probe, which
 * could pass where the bug shows only under some write patterns.
 */
import { statfs } from 'node:fs/promises';

/** ext4 (delayed allocation included), XFS, btrfs, tmpfs: SEEK_DATA counts dirty pages as data. */
const fileSystemsTellingDirtyData = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994]);

/** True if `path` (a file or a directory) is on such a file system; false too if statfs fails. */
export async function holesTrusted(path: string): Promise<boolean> {
  try {
    return fileSystemsTellingDirtyData.has((await statfs(path)).type);
  } catch {
    return false;
  }
}
