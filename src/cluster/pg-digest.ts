/**
 * A checksum of one PG replica's data (`GET /v1/groups/{id}/digest`, for `raftblock pool
 * verify`: pg-verify.ts compares the replicas' answers): every 4 KiB block of the PG's volumes
 * that is not all zeros, with its volume and offset, in that order. Zero blocks count for
 * nothing whether allocated or holes, so replicas with the same bytes agree however they were
 * written, trimmed or restored; and only what the replica holds is read (the store's data runs,
 * as a snapshot image reads them), not every extent the volume could hold: a 1 PiB volume's
 * digest read 1 PiB of holes. The digest names its version (`v2:`); pg-verify compares only
 * digests of one version.
 */
import { createHash } from 'node:crypto';
import { NotFound } from '../common/errors.js';
import type { ImageCursor, PgStore } from '../store/pg-store.js';
import type { GroupDigest } from './admin-client.js';
import { pgOfGroup, type ClusterMap, type NodeId } from './map.js';

/** The digest reads about this much of the replica's data at a time. */
const digestChunkBytes = 8 * 1024 * 1024;
const digestBlockBytes = 4096;
const zeroBlock = Buffer.alloc(digestBlockBytes);
/** Prefix of the digests made here (pg-verify compares digests of one version only). */
export const digestVersionPrefix = 'v2:';

/**
 * The digest of `store`, node `nodeId`'s replica of PG group `groupId`, over the volumes `map`
 * places in it; or `restoring` when no state of the replica could be read. A snapshot restore
 * (InstallSnapshot, a WAL repair, `pool repair`) removes every data file and refills them from
 * the image, while the applied index keeps its old value until the restore ends: a digest read
 * across one hashes wiped or half-written files under an applied index that did not move, which
 * the caller would compare with its peers' at that index as a settled state, and find a
 * mismatch that does not exist. So a replica restoring when asked, or that began a restore while
 * it was read (even one that ended by then, at the index it had), answers `restoring`, and
 * verify asks again (pg-verify.ts). So does one whose read the store refused because a restore
 * began (PgStore refuses reads from a restore's start to its end).
 */
export async function digestReplica(store: PgStore, map: ClusterMap, groupId: number, nodeId: NodeId): Promise<GroupDigest> {
  const restoring: GroupDigest = { groupId, nodeId, restoring: true };
  if (store.holdsPartialImage) return restoring;
  const { poolId } = pgOfGroup(groupId);
  const pool = map.pools.find((p) => p.id === poolId);
  if (!pool) throw new NotFound(`pool ${poolId} is not in the map`);
  const restoresBefore = store.restoresBegun;
  const appliedIndex = store.appliedIndex;
  const hash = createHash('sha256');
  const key = Buffer.alloc(14);
  // Only the pool's volumes, up to their size: a deleted volume's files go at each replica's
  // own pace, and bytes past a shrunk volume's end are no longer its.
  const sizes = new Map(map.volumes.filter((v) => v.pool === pool.name).map((v) => [v.id, v.sizeBytes]));
  try {
    let cursor: ImageCursor | null = null;
    do {
      const chunk = await store.imageChunk(cursor, digestChunkBytes);
      for (const [volumeId, at, data] of chunk.runs) {
        const size = sizes.get(volumeId);
        if (size === undefined) continue;
        for (let off = 0; off < data.byteLength && at + off < size; off += digestBlockBytes) {
          const block = Buffer.from(data.buffer, data.byteOffset + off, Math.min(digestBlockBytes, data.byteLength - off, size - at - off));
          if (block.equals(zeroBlock.subarray(0, block.length))) continue;
          key.writeUInt32BE(volumeId, 0);
          const pos = at + off;
          key.writeUInt32BE(Math.floor(pos / 2 ** 32), 4);
          key.writeUInt32BE(pos % 2 ** 32, 8);
          key.writeUInt16BE(block.length, 12);
          hash.update(key);
          hash.update(block);
        }
      }
      cursor = chunk.next;
    } while (cursor !== null);
  } catch (err) {
    if (store.restoresBegun !== restoresBefore) return restoring;
    throw err;
  }
  if (store.restoresBegun !== restoresBefore) return restoring;
  // Applies that ran during the read changed what was read: the caller compares replicas
  // only when this equals appliedIndex (pg-verify.ts).
  return { groupId, nodeId, appliedIndex, appliedIndexAfter: store.appliedIndex, digest: digestVersionPrefix + hash.digest('hex') };
}
