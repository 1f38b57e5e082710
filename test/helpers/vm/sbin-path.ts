/**
 * Block-device tools (losetup, mkfs.ext4, e2fsck, modinfo) live in the sbin directories, which a
 * non-login environment may leave off PATH. Importing this module appends them, so the tool
 * checks (`command -v`) and every spawned client agree on what exists.
 */
export function ensureSbinOnPath(): void {
  for (const d of ['/usr/sbin', '/sbin']) {
    const path = process.env.PATH ?? '';
    if (!path.split(':').includes(d)) process.env.PATH = path ? `${path}:${d}` : d;
  }
}

ensureSbinOnPath();
