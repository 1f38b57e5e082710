/**
 * V8 flags every storage node process runs with.
 *
 * A node keeps each write's payload in memory until its group is checkpointed, and reads
 * peers' frames into fresh buffers: with V8's default sizing (an old generation that starts
 * small and grows with the live heap, ~20 MB here) that allocation started a full
 * mark-compact about every 0.4 s at 4 KiB QD32, each a 5-20 ms pause plus concurrent marking
 * on the node's two cores. Starting the old generation at 512 MB makes them about five times
 * rarer (every ~2 s, trace-gc over 90 s), and the live heap stays ~35 MB (the space is a
 * limit, not memory taken). A/B on 2 cores, 3 rounds (bench/README.md): 4 KiB QD32 IOPS
 * ×1.35, CPU per write ×0.7, QD1 p99 4.3 → 3.2 ms. 2048 MB measured no better.
 *
 * `raftblock start` adds them to each node it spawns; the installed `raftblock` command
 * carries them in its shebang (main.ts), so a node run by hand or by systemd has them too.
 */
export const nodeV8Flags: readonly string[] = ['--initial-old-space-size=512'];

/** `flags` minus those `execArgv` already sets (by name): the caller's own choice wins. */
export function missingFlags(flags: readonly string[], execArgv: readonly string[]): string[] {
  const name = (f: string): string => f.split('=')[0];
  return flags.filter((f) => !execArgv.some((a) => name(a) === name(f)));
}

/**
 * glibc malloc settings every storage node process runs with, in GLIBC_TUNABLES (the C library
 * reads them once, at process start: `raftblock start` sets them in each node's environment,
 * and the installed command's shebang sets them for a node run by hand or by systemd).
 *
 * Why: a node copies each 512 KiB payload into fresh buffers at its hops (a frame's attachment
 * reassembled from socket reads, the store command, the WAL record). With glibc's defaults each
 * is a fresh mmap (or heap memory the last free trimmed back to the kernel), faulted in 4 KiB
 * page by page on first touch: a 512 KiB copy into fresh memory took 160-580 µs against 7-14
 * µs into reused memory. `hugetlb=1` has malloc ask for transparent huge pages (madvise; the
 * kernel's default THP mode), so one fault maps 2 MiB, and the thresholds keep up to 256 MiB
 * of freed heap for reuse and send only allocations over 8 MiB to mmap. A/B on 2 cores
 * (bench/README.md, medians of three alternated pairs): 512 KiB sequential writes ×1.23-1.31
 * MiB/s at ×0.81-0.87 node CPU each, 4 KiB QD32 writes ×1.05-1.21 IOPS at ×0.83-0.91, QD1
 * unchanged within the noise; the nodes' peak memory ×1.13.
 */
export const nodeMallocTunables: readonly string[] = ['glibc.malloc.hugetlb=1', 'glibc.malloc.mmap_threshold=8388608', 'glibc.malloc.trim_threshold=268435456'];

/**
 * `env` with nodeMallocTunables in front of its own GLIBC_TUNABLES: glibc takes the last
 * setting of a tunable, so one the caller set wins.
 */
export function withNodeMallocTunables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const own = env.GLIBC_TUNABLES;
  return { ...env, GLIBC_TUNABLES: [...nodeMallocTunables, ...(own ? [own] : [])].join(':') };
}
