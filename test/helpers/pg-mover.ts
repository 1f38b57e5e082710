/** A PgMover's dependencies for the tests that drive one alone, without a node around it. */
import { Registry } from 'prom-client';
import type { PgMoverDeps } from '../../src/cluster/pg-mover.js';
import { storeOpsLevel } from '../../src/store/ops.js';
import type { MemoryStorage, Message, RaftNode } from '../../src/raft/index.js';

const quiet = { info() {}, warn() {}, error() {}, debug() {} };

/**
 * Node `nodeId`'s, on `dataDir` and `map`: a host that runs no group and adds or removes one
 * doing nothing, a WAL without entries, no store open, no peer connected nor answering, the
 * map current, a quiet log, every node at this build's store command level. `overrides`
 * replace any of them.
 */
export function moverDeps(overrides: Partial<PgMoverDeps> & Pick<PgMoverDeps, 'nodeId' | 'dataDir' | 'map'>): PgMoverDeps {
  return {
    host: { groups: new Map(), addGroup: async () => {}, removeGroup: async () => {} } as never,
    wal: { groupIds: () => [], firstIndex: () => 1, lastIndex: () => 0 } as never,
    stores: new Map(),
    connectedNodes: () => new Set(),
    mapCurrent: () => true,
    openStore: async () => ({ close: async () => {} }) as never,
    request: async () => {
      throw new Error('no peers here');
    },
    registry: new Registry(),
    log: quiet as never,
    stopping: () => false,
    storeOpsLevelOf: () => storeOpsLevel,
    storeOpsRefusal: () => undefined,
    ...overrides,
  };
}

/** A host's group as the mover reads it (its id, Raft node and whether it leads), for `host.groups`. */
export function moverGroup(id: number, raft: RaftNode): { id: number; raft: RaftNode; readonly isLeader: boolean } {
  return {
    id,
    raft,
    get isLeader() {
      return raft.currentRole === 'leader';
    },
  };
}

/**
 * Persists every Ready `raft` has to `storage` (the host's part, without a disk), hands each
 * Ready's messages to `send`, and advances: until the Raft node has nothing more to do.
 */
export function persistReadies(raft: RaftNode, storage: MemoryStorage, send: (m: Message) => void = () => {}): void {
  while (raft.hasReady()) {
    const rd = raft.ready();
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    raft.advance(rd);
    for (const m of rd.messages) send(m);
  }
}
