// Builds the io_uring addon with node-gyp. Without liburing-dev the build fails; raftblock then
// runs on the portable fs backend (src/io says which one it chose). Under CI=true a failed
// build is an error, so the addon is always tested there.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'native', 'binding.gyp'))) process.exit(0);

// node-gyp: the one npm runs us with, else the copy bundled with npm, else npx.
const bundled = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp ?? (existsSync(bundled) ? bundled : undefined);
const args = ['rebuild'];
// Headers installed beside node (distribution packages) spare node-gyp a download.
const prefix = join(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const [cmd, argv] = gyp ? [process.execPath, [gyp, ...args]] : ['npx', ['--yes', 'node-gyp', ...args]];
const r = spawnSync(cmd, argv, { cwd: join(root, 'native'), stdio: 'inherit' });
if (r.status !== 0) {
  const msg = 'raftblock: native addon build failed (is liburing-dev installed?); the fs backend will be used';
  if (process.env.CI === 'true') { console.error(msg); process.exit(1); }
  console.warn(msg);
}
