import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { repoRoot } from './paths.js';
import './vm/sbin-path.js';

/**
 * A QEMU VM (TCG, no KVM) booting Debian's cloud kernel with a busybox initramfs, which uses the
 * Linux kernel NBD client against a server on the host's loopback. QEMU user networking maps the
 * guest's 10.0.2.2 to the host's 127.0.0.1; the guest reaches nothing else.
 *
 * The kernel package is fetched with `apt-get download` into a cache directory on first use
 * (RAFTBLOCK_VM_CACHE, default /var/cache/raftblock-vm). The initramfs is built fresh for every
 * run from the host's binaries (nbd-client, mke2fs, e2fsck and their shared libraries).
 */

/** Tools the VM harness needs on the host. */
export const vmHostTools = ['qemu-system-x86_64', 'apt-get', 'apt-cache', 'dpkg-deb', 'modinfo', 'cpio', 'busybox', 'nbd-client', 'mkfs.ext4', 'e2fsck', 'ldd'];

export interface KernelVmOptions {
  /** Port of the NBD server on the host's 127.0.0.1. */
  port: number;
  exportName: string;
  /** Kill the VM after this long (default 180 s). */
  timeoutMs?: number;
  /** How many files the guest writes before the big one (default 8). */
  files?: number;
  /** Connections `nbd-client -C` opens (default 1; more needs the export's multi-conn). */
  connections?: number;
  memoryMiB?: number;
  /**
   * A command prefix QEMU runs under, e.g. ['ip', 'netns', 'exec', NS]: the guest's 10.0.2.2 is
   * then the loopback of that network namespace (for servers that listen inside one).
   */
  commandPrefix?: string[];
}

export interface KernelVmResult {
  verdict: 'pass' | 'fail' | 'timeout' | 'no-marker';
  /** The marker line's text after the prefix, e.g. "PASS files=8" or "FAIL mkfs.ext4". */
  marker: string | undefined;
  consoleLog: string;
  elapsedMs: number;
}

const markerPrefix = 'RAFTBLOCK-VM-RESULT: ';
const cacheDir = process.env.RAFTBLOCK_VM_CACHE ?? '/var/cache/raftblock-vm';
/** Modules the guest needs; their dependencies are found with modinfo. */
const rootModules = ['virtio_pci', 'virtio_net', 'nbd'];

function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.error ?? ''}`);
  return r.stdout;
}

/** The newest linux-image-*-cloud-amd64 package the apt lists know. */
function cloudKernelPackage(): string {
  const tryDepends = (): string | undefined => {
    const r = spawnSync('apt-cache', ['depends', 'linux-image-cloud-amd64'], { encoding: 'utf8' });
    return /Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)\b/.exec(r.stdout ?? '')?.[1];
  };
  let pkg = tryDepends();
  if (pkg === undefined) {
    // Fresh machines may have no package lists yet.
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
    pkg = tryDepends();
  }
  if (pkg === undefined) throw new Error('cannot find the linux-image-*-cloud-amd64 package (apt-cache depends linux-image-cloud-amd64)');
  return pkg;
}

interface KernelTree {
  vmlinuz: string;
  /** lib/modules/VERSION inside the extracted package */
  modulesDir: string;
}

let kernelTree: KernelTree | undefined;

/** Downloads (once) and extracts (once per version) the cloud kernel; returns its paths. */
export function ensureCloudKernel(): KernelTree {
  if (kernelTree) return kernelTree;
  mkdirSync(cacheDir, { recursive: true });
  let debs = readdirSync(cacheDir).filter((f) => /^linux-image-.*-cloud-amd64_.*\.deb$/.test(f));
  if (debs.length === 0) {
    const pkg = cloudKernelPackage();
    // apt-get download writes into the working directory; _apt may not be able to, which is
    // only a warning when running as root.
    sh('apt-get', ['download', '-q', pkg], { cwd: cacheDir });
    debs = readdirSync(cacheDir).filter((f) => /^linux-image-.*-cloud-amd64_.*\.deb$/.test(f));
    if (debs.length === 0) throw new Error(`apt-get download ${pkg} produced no .deb in ${cacheDir}`);
  }
  const deb = debs.sort().at(-1)!;
  const tree = join(cacheDir, deb.replace(/\.deb$/, ''));
  if (!existsSync(join(tree, '.complete'))) {
    const tmp = mkdtempSync(join(cacheDir, 'extract-'));
    sh('dpkg-deb', ['-x', join(cacheDir, deb), tmp]);
    writeFileSync(join(tmp, '.complete'), deb);
    rmSync(tree, { recursive: true, force: true });
    try {
      renameSync(tmp, tree);
    } catch (e) {
      // Another process extracted it at the same time: use theirs.
      rmSync(tmp, { recursive: true, force: true });
      if (!existsSync(join(tree, '.complete'))) throw e;
    }
  }
  const boot = join(tree, 'boot');
  const vmlinuzName = readdirSync(boot).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuzName) throw new Error(`no vmlinuz in ${boot}`);
  const version = vmlinuzName.slice('vmlinuz-'.length);
  kernelTree = { vmlinuz: join(boot, vmlinuzName), modulesDir: join(tree, 'lib', 'modules', version) };
  return kernelTree;
}

function walkFiles(dir: string, out: string[] = []): string[] {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walkFiles(p, out);
    else out.push(p);
  }
  return out;
}

/** Module files for `rootModules` and everything they depend on, dependencies first. */
function moduleClosure(modulesDir: string): string[] {
  const byName = new Map<string, string>();
  for (const p of walkFiles(join(modulesDir, 'kernel'))) {
    const m = /^(.*)\.ko(\.xz|\.zst|\.gz)?$/.exec(basename(p));
    if (m) byName.set(m[1].replace(/-/g, '_'), p);
  }
  const builtin = new Set(
    readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n').map((l) => basename(l).replace(/\.ko.*$/, '').replace(/-/g, '_')),
  );
  const ordered: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    const key = name.replace(/-/g, '_');
    if (seen.has(key)) return;
    seen.add(key);
    if (builtin.has(key)) return;
    const path = byName.get(key);
    if (!path) throw new Error(`kernel module ${name} not found under ${modulesDir}`);
    const deps = sh('modinfo', ['-F', 'depends', path]).trim();
    for (const d of deps.split(',').filter(Boolean)) visit(d);
    ordered.push(path);
  };
  for (const m of rootModules) visit(m);
  return ordered;
}

/** The shared libraries `ldd` lists for `binary`, plus the dynamic loader. */
function sharedLibraries(binary: string): string[] {
  const out = sh('ldd', [binary]);
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

function which(name: string): string {
  return sh('sh', ['-c', `command -v ${name}`]).trim();
}

function copyInto(root: string, src: string, dest = src): void {
  const target = join(root, dest);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(src, target);
  chmodSync(target, statSync(src).mode & 0o777);
}

/** Builds the initramfs (newc cpio) in `workDir`; returns its path. */
export function buildInitramfs(workDir: string): string {
  const { modulesDir } = ensureCloudKernel();
  const root = join(workDir, 'root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'modules'), { recursive: true });
  copyInto(root, which('busybox'), '/bin/busybox');
  copyInto(root, join(repoRoot, 'test', 'helpers', 'vm', 'init.sh'), '/init');
  chmodSync(join(root, 'init'), 0o755);

  const binaries: [string, string][] = [
    [which('nbd-client'), '/sbin/nbd-client'],
    [which('mkfs.ext4'), '/sbin/mkfs.ext4'],
    [which('e2fsck'), '/sbin/e2fsck'],
  ];
  const libs = new Set<string>();
  for (const [src, dest] of binaries) {
    copyInto(root, src, dest);
    for (const l of sharedLibraries(src)) libs.add(l);
  }
  for (const l of libs) copyInto(root, l);
  if (existsSync('/etc/mke2fs.conf')) copyInto(root, '/etc/mke2fs.conf');

  const names: string[] = [];
  for (const path of moduleClosure(modulesDir)) {
    const name = basename(path).replace(/\.(xz|zst|gz)$/, '');
    const dest = join(root, 'modules', name);
    if (path.endsWith('.xz')) {
      const r = spawnSync('xz', ['-dc', path], { maxBuffer: 256 * 1024 * 1024 });
      if (r.status !== 0) throw new Error(`xz -dc ${path} failed: ${r.stderr}`);
      writeFileSync(dest, r.stdout);
    } else if (path.endsWith('.ko')) copyFileSync(path, dest);
    else throw new Error(`unsupported module compression: ${path}`);
    names.push(name);
  }
  writeFileSync(join(root, 'modules.list'), names.join('\n') + '\n');

  const cpioPath = join(workDir, 'initramfs.cpio');
  const r = spawnSync('sh', ['-c', `find . -print | cpio -o -H newc --quiet > '${cpioPath}'`], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cpio failed: ${r.stderr}`);
  return cpioPath;
}

/**
 * Boots the VM against an NBD export served on the host's 127.0.0.1:`port`. The guest attaches
 * it with `nbd-client`, makes ext4, writes files, remounts, verifies checksums and runs
 * `e2fsck -fn`, then prints a marker line and powers off.
 */
export async function runKernelNbdClientVm(opts: KernelVmOptions): Promise<KernelVmResult> {
  if (!/^[A-Za-z0-9._-]+$/.test(opts.exportName)) throw new Error(`export name ${opts.exportName} cannot go on a kernel command line`);
  const started = Date.now();
  const workDir = mkdtempSync(join(process.env.RAFTBLOCK_TEST_DIR ?? '/var/tmp', 'raftblock-vm-'));
  try {
    const { vmlinuz } = ensureCloudKernel();
    const initrd = buildInitramfs(workDir);
    const append = [
      'console=ttyS0', 'panic=-1', 'loglevel=4', 'rdinit=/init',
      'rbvm.host=10.0.2.2', `rbvm.port=${opts.port}`, `rbvm.name=${opts.exportName}`, `rbvm.files=${opts.files ?? 8}`, `rbvm.connections=${opts.connections ?? 1}`,
    ].join(' ');
    const args = [
      '-accel', 'tcg', '-machine', 'pc', '-cpu', 'max', '-smp', '1', '-m', String(opts.memoryMiB ?? 512),
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', vmlinuz, '-initrd', initrd, '-append', append,
      // User networking: the guest's 10.0.2.2 is the host's loopback. No IPv6, no boot ROM.
      '-netdev', 'user,id=n0,ipv6=off', '-device', 'virtio-net-pci,netdev=n0,romfile=',
    ];
    const timeoutMs = opts.timeoutMs ?? 180_000;
    const argv = [...(opts.commandPrefix ?? []), 'qemu-system-x86_64', ...args];
    const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    // Never leave a VM running behind a test process that exits early.
    const killOnExit = (): void => {
      proc.kill('SIGKILL');
    };
    process.once('exit', killOnExit);
    let consoleLog = '';
    let marker: string | undefined;
    const done = new Promise<'exit' | 'timeout'>((resolve) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        resolve('timeout');
      }, timeoutMs);
      proc.once('close', () => {
        clearTimeout(timer);
        resolve('exit');
      });
      proc.once('error', (e) => {
        consoleLog += `\n[spawn error: ${e.message}]`;
      });
    });
    const onData = (d: Buffer): void => {
      consoleLog += d.toString('utf8');
      if (marker === undefined) {
        const i = consoleLog.indexOf(markerPrefix);
        const nl = i >= 0 ? consoleLog.indexOf('\n', i) : -1;
        if (nl >= 0) marker = consoleLog.slice(i + markerPrefix.length, nl).replace(/\r$/, '').trim();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    const how = await done;
    process.off('exit', killOnExit);
    const verdict = how === 'timeout' && marker === undefined
      ? 'timeout'
      : marker === undefined ? 'no-marker' : marker.startsWith('PASS') ? 'pass' : 'fail';
    return { verdict, marker, consoleLog, elapsedMs: Date.now() - started };
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}
