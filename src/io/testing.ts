/**
 * Test support: the list of backends a suite must run on. Under CI=true the io_uring addon
 * must be present (a missing addon fails instead of skipping).
 */
import { FsBlockIo } from './fs.js';
import { loadNative } from './native.js';
import { type BlockIo, type IoBackendKind, ioAlignmentBytes } from './types.js';
import { UringBlockIo } from './uring.js';

export interface TestBackend {
  name: IoBackendKind;
  make: (ringEntries?: number) => BlockIo;
  /** A reason to skip (addon not built, outside CI), or false. */
  skip: string | false;
}

/** The addon, and why it is missing (false when loaded); under CI a missing addon throws. */
function addonForTests(): { native: ReturnType<typeof loadNative>; missing: string | false } {
  const native = loadNative();
  const missing = 'error' in native ? native.error : false;
  if (missing && process.env.CI === 'true') throw new Error(`CI requires the io_uring addon: ${missing}`);
  return { native, missing };
}

export function testBackends(): TestBackend[] {
  const { native, missing } = addonForTests();
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

/**
 * The fs backend with the addon's allocator and extent calls, as openBlockIo makes it where the
 * addon loads but io_uring is refused (a seccomp profile); skipped as uring is without the addon.
 */
export function fsWithAddonBackend(): TestBackend {
  const { native, missing } = addonForTests();
  return {
    name: 'fs',
    make: () => {
      if (!('addon' in native)) throw new Error(native.error);
      const addon = native.addon;
      return new FsBlockIo({ allocAligned: (n) => addon.allocAligned(n, ioAlignmentBytes), extents: addon });
    },
    skip: missing,
  };
}
