/**
 * A checksum of one PG replica's data (`GET /v1/groups/{id}/digest`, for `raftblock pool
 * verify`: pg-verify.ts compares the replicas' answers): every extent of the PG's volumes in
 * key order (volume id, extent index), the unallocated ranges read as zeros, so replicas with
 * the same bytes agree however they were written, trimmed or restored.
 */
import { createHash } from 'node:crypto';
import { NotFound } from '../common/errors.js';
import type { PgStore } from '../store/pg-store.js';
import type { GroupDigest } from './admin-client.js';
import { pgOfExtent, pgOfGroup, type ClusterMap, type NodeId } from './map.js';

/** The digest reads this much of a volume at a time. */
const digestChunkBytes = 1024 * 1024;

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
  const { poolId, pgIndex } = pgOfGroup(groupId);
  const pool = map.pools.find((p) => p.id === poolId);
  if (!pool) throw new NotFound(`pool ${poolId} is not in the map`);
  const restoresBefore = store.restoresBegun;
  const appliedIndex = store.appliedIndex;
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(digestChunkBytes);
  const key = Buffer.alloc(16);
  try {
    for (const v of map.volumes.filter((x) => x.pool === pool.name).sort((x, y) => x.id - y.id)) {
      const extents = Math.ceil(v.sizeBytes / v.extentBytes);
      for (let e = 0; e < extents; e++) {
        if (pgOfExtent(v.id, e, pool.pgCount) !== pgIndex) continue;
        key.writeUInt32BE(v.id, 0);
        key.writeUIntBE(e, 4, 6);
        hash.update(key);
        const start = e * v.extentBytes;
        const end = Math.min(v.sizeBytes, start + v.extentBytes);
        for (let at = start; at < end; at += chunk.length) {
          const len = Math.min(chunk.length, end - at);
          await store.read(v.id, at, len, chunk);
          hash.update(chunk.subarray(0, len));
        }
      }
    }
  } catch (err) {
    if (store.restoresBegun !== restoresBefore) return restoring;
    throw err;
  }
  if (store.restoresBegun !== restoresBefore) return restoring;
  // Applies that ran during the read changed what was read: the caller compares replicas
  // only when this equals appliedIndex (pg-verify.ts).
  return { groupId, nodeId, appliedIndex, appliedIndexAfter: store.appliedIndex, digest: hash.digest('hex') };
}
