export type { BlockFile, BlockIo, IoBackendChoice, IoBackendKind, OpenFileOptions } from './types.js';
export { ioAlignmentBytes } from './types.js';
export { FsBlockIo } from './fs.js';
export { UringBlockIo, defaultDurableWriteMode, type DurableWriteMode } from './uring.js';
export { openBlockIo, parseIoBackendChoice, type OpenBlockIoOptions } from './select.js';
export { loadNative } from './native.js';
