/** The consensus core's public surface. */
export * from './types.js';
export { RaftNode, type ProposalRef } from './node.js';
export { MemoryStorage, emptyConfState, cloneConfState } from './storage.js';
export { SeededRng } from './rng.js';
export { encodeConfChange, decodeConfChange } from './confchange.js';
export { leavesBeforePersist } from './early-send.js';
