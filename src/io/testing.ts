/**
 * Test support: the list of backends a suite must run on. Under CI=true the io_uring addon
 * must be present (a missing addon fails instead of skipping).
 */
import { FsBlockIo } from './fs.js';
import { loadNative } from './native.js';
import type { BlockIo, IoBackendKind } from './types.js';
import { UringBlockIo } from './uring.js';

export interface TestBackend {
  name: IoBackendKind;
  make: (ringEntries?: number) => BlockIo;
  /** A reason to skip (addon not built, outside CI), or false. */
  skip: string | false;
}

export function testBackends(): TestBackend[] {
  const native = loadNative();
  const missing = 'error' in native ? native.error : false;
  if (missing && process.env.CI === 'true') throw new Error(`CI requires the io_uring addon: ${missing}`);
  return [
    {
      name: 'uring',
      make: (ringEntries = 64) => {
        if (!('addon' in native)) throw new Error(native.error);
        return new UringBlockIo(native.addon, ringEntries);
      },
      skip: missing,
    },
    { name: 'fs', make: () => new FsBlockIo(), skip: false },
  ];
}
