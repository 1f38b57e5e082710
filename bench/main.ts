/**
 * `npm run bench -- NAME [options]`: benchmarks against real peers. Not tests: they measure.
 * Each benchmark lives in its own module exporting `run(argv)`; add it to the table below.
 */
const benches: Record<string, () => Promise<{ run(argv: string[]): Promise<void> }>> = {
  nbd: () => import('./nbd.js'),
  wal: () => import('./wal.js'),
  cluster: () => import('./cluster.js'),
  'nbd-tls': () => import('./nbd-tls.js'),
  'block-status': () => import('./block-status.js'),
  'hot-path': () => import('./hot-path.js'),
};

const [name, ...rest] = process.argv.slice(2);
const load = name ? benches[name] : undefined;
if (!load) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--out FILE]\n`);
  process.exit(2);
}
const mod = await load();
await mod.run(rest);
